-- A trace's MLflow `trace_info` as a search last answered it (`info`), so that the next
-- search answers with the text as it is instead of reading the trace's tags, metadata and
-- assessments again and building it anew (4x less work per page of 100: benches/traces.sh).
-- Any change to what `trace_info` shows empties it and moves `version` on — triggers, so no
-- write path can forget — and a search fills it again only where `version` is still the one
-- it read (a change made meanwhile wins).

ALTER TABLE traces ADD COLUMN info TEXT COLLATE "C";
ALTER TABLE traces ADD COLUMN version BIGINT NOT NULL DEFAULT 0;

CREATE FUNCTION trace_row_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.info := NULL;
    NEW.version := OLD.version + 1;
    RETURN NEW;
END
$$;

CREATE TRIGGER traces_changed BEFORE UPDATE OF experiment_id, request_time, execution_duration,
    state, client_request_id, request_preview, response_preview ON traces
    FOR EACH ROW EXECUTE FUNCTION trace_row_changed();

CREATE FUNCTION trace_details_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r RECORD;
BEGIN
    IF TG_OP = 'DELETE' THEN
        r := OLD;
    ELSE
        r := NEW;
    END IF;
    UPDATE traces SET info = NULL, version = version + 1
    WHERE workspace_id = r.workspace_id AND trace_id = r.trace_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER trace_tags_changed AFTER INSERT OR UPDATE OR DELETE ON trace_tags
    FOR EACH ROW EXECUTE FUNCTION trace_details_changed();
CREATE TRIGGER trace_metadata_changed AFTER INSERT OR UPDATE OR DELETE ON trace_metadata
    FOR EACH ROW EXECUTE FUNCTION trace_details_changed();
CREATE TRIGGER trace_assessments_changed AFTER INSERT OR UPDATE OR DELETE ON trace_assessments
    FOR EACH ROW EXECUTE FUNCTION trace_details_changed();
