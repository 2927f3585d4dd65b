-- What `feedback.<name>` and `expectation.<name>` filters compare.
-- An assessment's kind (feedback or expectation), whether it still counts (an overridden one
-- does not), its value as text (a string as it is, anything else as JSON) and as a number
-- when it is one.
ALTER TABLE trace_assessments ADD COLUMN kind TEXT NOT NULL DEFAULT '';
ALTER TABLE trace_assessments ADD COLUMN valid INTEGER NOT NULL DEFAULT 1;
ALTER TABLE trace_assessments ADD COLUMN value_text TEXT;
ALTER TABLE trace_assessments ADD COLUMN value_number REAL;

UPDATE trace_assessments SET
    kind = CASE WHEN json_type(content, '$.feedback') IS NOT NULL THEN 'feedback' ELSE 'expectation' END,
    valid = CASE WHEN json_type(content, '$.valid') = 'false' THEN 0 ELSE 1 END;
UPDATE trace_assessments SET
    value_text = CASE
        WHEN json_type(content, '$.' || kind || '.value') IS NULL
            THEN json_extract(content, '$.expectation.serialized_value.value')
        WHEN json_type(content, '$.' || kind || '.value') = 'text'
            THEN json_extract(content, '$.' || kind || '.value')
        ELSE content -> ('$.' || kind || '.value') END,
    value_number = CASE WHEN json_type(content, '$.' || kind || '.value') IN ('integer', 'real')
        THEN json_extract(content, '$.' || kind || '.value') END;
