-- MLflow 3's GenAI issues: a problem found in an experiment's traces (by a person or a judge),
-- with its status and severity. The columns searches filter and order by; the rest (name,
-- description, root causes, categories, who made it, last change) as MLflow's JSON.

CREATE TABLE genai_issues (
    workspace_id  TEXT COLLATE "C" NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    issue_id      TEXT COLLATE "C" NOT NULL,
    experiment_id BIGINT NOT NULL,
    status        TEXT COLLATE "C" NOT NULL,
    severity      TEXT COLLATE "C",
    source_run_id TEXT COLLATE "C",
    created       BIGINT NOT NULL,
    content       TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (workspace_id, issue_id)
);
CREATE INDEX genai_issues_by_experiment ON genai_issues (workspace_id, experiment_id, created);
