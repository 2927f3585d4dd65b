-- A job's children (sweep trials, pipeline steps) and the top-level jobs list, newest first,
-- without scanning every job of the workspace.
CREATE INDEX jobs_by_parent ON jobs (workspace_id, parent, seq);
