-- A trace's MLflow `trace_info` as a search last answered it (`info`), so that the next
-- search answers with the text as it is instead of reading the trace's tags, metadata and
-- assessments again and building it anew (4x less work per page of 100: benches/traces.sh).
-- Any change to what `trace_info` shows empties it and moves `version` on — triggers, so no
-- write path can forget — and a search fills it again only where `version` is still the one
-- it read (a change made meanwhile wins).

ALTER TABLE traces ADD COLUMN info TEXT;
ALTER TABLE traces ADD COLUMN version INTEGER NOT NULL DEFAULT 0;

CREATE TRIGGER traces_changed AFTER UPDATE OF experiment_id, request_time, execution_duration,
    state, client_request_id, request_preview, response_preview ON traces
BEGIN
    UPDATE traces SET info = NULL, version = version + 1 WHERE rowid = NEW.rowid;
END;

CREATE TRIGGER trace_tags_added AFTER INSERT ON trace_tags BEGIN
    UPDATE traces SET info = NULL, version = version + 1
    WHERE workspace_id = NEW.workspace_id AND trace_id = NEW.trace_id;
END;
CREATE TRIGGER trace_tags_changed AFTER UPDATE ON trace_tags BEGIN
    UPDATE traces SET info = NULL, version = version + 1
    WHERE workspace_id = NEW.workspace_id AND trace_id = NEW.trace_id;
END;
CREATE TRIGGER trace_tags_removed AFTER DELETE ON trace_tags BEGIN
    UPDATE traces SET info = NULL, version = version + 1
    WHERE workspace_id = OLD.workspace_id AND trace_id = OLD.trace_id;
END;

CREATE TRIGGER trace_metadata_added AFTER INSERT ON trace_metadata BEGIN
    UPDATE traces SET info = NULL, version = version + 1
    WHERE workspace_id = NEW.workspace_id AND trace_id = NEW.trace_id;
END;
CREATE TRIGGER trace_metadata_changed AFTER UPDATE ON trace_metadata BEGIN
    UPDATE traces SET info = NULL, version = version + 1
    WHERE workspace_id = NEW.workspace_id AND trace_id = NEW.trace_id;
END;
CREATE TRIGGER trace_metadata_removed AFTER DELETE ON trace_metadata BEGIN
    UPDATE traces SET info = NULL, version = version + 1
    WHERE workspace_id = OLD.workspace_id AND trace_id = OLD.trace_id;
END;

CREATE TRIGGER trace_assessments_added AFTER INSERT ON trace_assessments BEGIN
    UPDATE traces SET info = NULL, version = version + 1
    WHERE workspace_id = NEW.workspace_id AND trace_id = NEW.trace_id;
END;
CREATE TRIGGER trace_assessments_changed AFTER UPDATE ON trace_assessments BEGIN
    UPDATE traces SET info = NULL, version = version + 1
    WHERE workspace_id = NEW.workspace_id AND trace_id = NEW.trace_id;
END;
CREATE TRIGGER trace_assessments_removed AFTER DELETE ON trace_assessments BEGIN
    UPDATE traces SET info = NULL, version = version + 1
    WHERE workspace_id = OLD.workspace_id AND trace_id = OLD.trace_id;
END;
