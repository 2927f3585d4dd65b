-- What `feedback.<name>` and `expectation.<name>` filters compare.
-- An assessment's kind (feedback or expectation), whether it still counts (an overridden one
-- does not), its value as text (a string as it is, anything else as JSON) and as a number
-- when it is one.
ALTER TABLE trace_assessments ADD COLUMN kind TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE trace_assessments ADD COLUMN valid BIGINT NOT NULL DEFAULT 1;
ALTER TABLE trace_assessments ADD COLUMN value_text TEXT COLLATE "C";
ALTER TABLE trace_assessments ADD COLUMN value_number DOUBLE PRECISION;

UPDATE trace_assessments SET
    kind = CASE WHEN content::jsonb ? 'feedback' THEN 'feedback' ELSE 'expectation' END,
    valid = CASE WHEN content::jsonb -> 'valid' = 'false'::jsonb THEN 0 ELSE 1 END;
UPDATE trace_assessments SET
    value_text = CASE
        WHEN jsonb_typeof(content::jsonb -> kind -> 'value') IS NULL
            THEN content::jsonb -> 'expectation' -> 'serialized_value' ->> 'value'
        WHEN jsonb_typeof(content::jsonb -> kind -> 'value') = 'string'
            THEN content::jsonb -> kind ->> 'value'
        ELSE (content::jsonb -> kind -> 'value')::text END,
    value_number = CASE WHEN jsonb_typeof(content::jsonb -> kind -> 'value') = 'number'
        THEN (content::jsonb -> kind ->> 'value')::double precision END;
