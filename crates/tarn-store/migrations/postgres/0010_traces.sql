-- MLflow 3 traces: a trace's info (one row), its tags and request metadata (key-value rows, as
-- runs' tags), its spans (each as the OpenTelemetry span JSON MLflow's clients read back, with
-- the fields searches look at beside it) and its assessments (feedback and expectations, as
-- MLflow's JSON), and the runs traces are linked to besides the one they were made in (MLflow's
-- LinkTracesToRun, as `mlflow.genai.evaluate` does). `finalized` is set once the client's StartTraceV3 wrote the trace-level
-- values, which spans arriving later no longer change.

CREATE TABLE traces (
    workspace_id       TEXT COLLATE "C" NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    trace_id           TEXT COLLATE "C" NOT NULL,
    experiment_id      BIGINT NOT NULL,
    request_time       BIGINT NOT NULL,
    execution_duration BIGINT,
    state              TEXT COLLATE "C" NOT NULL,
    client_request_id  TEXT COLLATE "C",
    request_preview    TEXT COLLATE "C",
    response_preview   TEXT COLLATE "C",
    finalized          BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, trace_id)
);
-- A search's page walks this index newest first, and stops at the page's end.
CREATE INDEX traces_by_time ON traces (workspace_id, experiment_id, request_time, trace_id);

CREATE TABLE trace_tags (
    workspace_id TEXT COLLATE "C" NOT NULL,
    trace_id     TEXT COLLATE "C" NOT NULL,
    key          TEXT COLLATE "C" NOT NULL,
    value        TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (workspace_id, trace_id, key),
    FOREIGN KEY (workspace_id, trace_id) REFERENCES traces(workspace_id, trace_id) ON DELETE CASCADE
);

CREATE TABLE trace_metadata (
    workspace_id TEXT COLLATE "C" NOT NULL,
    trace_id     TEXT COLLATE "C" NOT NULL,
    key          TEXT COLLATE "C" NOT NULL,
    value        TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (workspace_id, trace_id, key),
    FOREIGN KEY (workspace_id, trace_id) REFERENCES traces(workspace_id, trace_id) ON DELETE CASCADE
);

CREATE TABLE trace_spans (
    workspace_id TEXT COLLATE "C" NOT NULL,
    trace_id     TEXT COLLATE "C" NOT NULL,
    span_id      TEXT COLLATE "C" NOT NULL,
    parent_id    TEXT COLLATE "C",
    name         TEXT COLLATE "C" NOT NULL,
    span_type    TEXT COLLATE "C",
    status       TEXT COLLATE "C" NOT NULL,
    start_ns     BIGINT NOT NULL,
    end_ns       BIGINT,
    content      TEXT COLLATE "C" NOT NULL,
    -- What `text`/`span.content` filters match: the span as MLflow's span dict (name,
    -- attributes by key, events, status), as MLflow's SQL store matches it.
    search_text  TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (workspace_id, trace_id, span_id),
    FOREIGN KEY (workspace_id, trace_id) REFERENCES traces(workspace_id, trace_id) ON DELETE CASCADE
);
-- `span.name = …`: one seek per trace the walk passes.
CREATE INDEX trace_spans_by_name ON trace_spans (workspace_id, name, trace_id);

CREATE TABLE trace_assessments (
    workspace_id  TEXT COLLATE "C" NOT NULL,
    trace_id      TEXT COLLATE "C" NOT NULL,
    assessment_id TEXT COLLATE "C" NOT NULL,
    name          TEXT COLLATE "C" NOT NULL,
    created       BIGINT NOT NULL,
    content       TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (workspace_id, trace_id, assessment_id),
    FOREIGN KEY (workspace_id, trace_id) REFERENCES traces(workspace_id, trace_id) ON DELETE CASCADE
);

-- A link may come before its trace (clients export traces in the background), so it does not
-- refer to the trace row; a search joins from traces, so links of deleted traces never show.
CREATE TABLE trace_runs (
    workspace_id TEXT COLLATE "C" NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    trace_id     TEXT COLLATE "C" NOT NULL,
    run_id       TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (workspace_id, trace_id, run_id)
);
