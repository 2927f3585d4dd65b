-- See migrations/sqlite/0014_latest_metrics_by_experiment.sql.
ALTER TABLE latest_metrics ADD COLUMN experiment_id BIGINT;
UPDATE latest_metrics SET experiment_id = r.experiment_id FROM runs r
    WHERE r.workspace_id = latest_metrics.workspace_id AND r.run_id = latest_metrics.run_id;
ALTER TABLE latest_metrics ALTER COLUMN experiment_id SET NOT NULL;
DROP INDEX latest_metrics_by_key;
CREATE INDEX latest_metrics_by_experiment ON latest_metrics (workspace_id, experiment_id, key, value);
