-- The traces an issue's references name (assessments of kind `issue`, named by the issue's
-- id): counted for each issue a search lists, without reading every assessment.
CREATE INDEX trace_assessments_by_name ON trace_assessments (workspace_id, kind, name, trace_id);
