-- A search ordered by a metric walks the metric's latest values of one experiment in order and
-- stops at the page's end (sql_tracking.rs, `page_of_runs`). The index that walk follows needs
-- the run's experiment, which a run never changes; `runs_by_experiment` cannot give the order.
-- (SQLite adds a NOT NULL column only with a default; every write names the experiment.)
ALTER TABLE latest_metrics ADD COLUMN experiment_id INTEGER NOT NULL DEFAULT -1;
UPDATE latest_metrics SET experiment_id = (
    SELECT r.experiment_id FROM runs r
    WHERE r.workspace_id = latest_metrics.workspace_id AND r.run_id = latest_metrics.run_id);
DROP INDEX latest_metrics_by_key;
CREATE INDEX latest_metrics_by_experiment ON latest_metrics (workspace_id, experiment_id, key, value);
