//! [`Tracking`] for [`SqlStore`], SQLite or PostgreSQL. Searches are built as one SQL statement: each
//! filter clause becomes an `EXISTS` on the latest-metric, param or tag table (or a condition on
//! a run column), so a search never reads metric history and never joins everything.

use crate::dialect::Dialect;
use crate::packed::{self, decode_value, push_point, sample};
use crate::sql::{db, json};
use crate::statement::Statement;
use crate::tracking::*;
use crate::{Result, SqlStore, StoreError};
use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};
use std::collections::HashMap;
use tarn_spec::mlflow_search::{Entity, Op, OrderBy, Value};

/// An experiment row as [`SqlStore::experiments_select`] reads it: its tags come packed in the
/// same row.
fn experiment_row(r: &AnyRow) -> Result<ExperimentRow> {
    let tags: Vec<(String, String)> =
        serde_json::from_str(r.get::<&str, _>("tags_packed")).map_err(StoreError::Corrupt)?;
    Ok(ExperimentRow {
        workspace_id: r.get("workspace_id"),
        experiment_id: r.get("experiment_id"),
        name: r.get("name"),
        artifact_location: r.get("artifact_location"),
        lifecycle_stage: r.get("lifecycle_stage"),
        creation_time: r.get("creation_time"),
        last_update_time: r.get("last_update_time"),
        tags,
    })
}

fn run_row(r: &AnyRow) -> RunRow {
    RunRow {
        workspace_id: r.get("workspace_id"),
        run_id: r.get("run_id"),
        experiment_id: r.get("experiment_id"),
        run_name: r.get("run_name"),
        user_id: r.get("user_id"),
        status: r.get("status"),
        start_time: r.get("start_time"),
        end_time: r.get("end_time"),
        lifecycle_stage: r.get("lifecycle_stage"),
        artifact_uri: r.get("artifact_uri"),
    }
}

/// Pushes `<column> <op> <value>` with the value bound. An `RLIKE` clause comes with the
/// values its pattern matched (tarn-core resolves patterns, see `Op::RLike`): the column is
/// one of them, bound as one JSON list however many there are.
pub(crate) fn push_condition(q: &mut Statement, d: Dialect, column: &str, op: Op, value: &Value) {
    if op == Op::RLike {
        let matched: &[String] = match value {
            Value::List(items) => items,
            _ => {
                debug_assert!(false, "an RLIKE pattern reached the store unresolved");
                &[]
            }
        };
        let list = serde_json::to_string(matched).expect("strings serialize");
        let list = d.text_list(&q.placeholder(list));
        q.push(format!(" {column} IN ({list})"));
        return;
    }
    q.push(format!(" {column} {} ", d.comparison(op)));
    match value {
        Value::Num(n) => {
            q.bind(*n);
        }
        Value::Str(s) if matches!(op, Op::Like | Op::ILike) => {
            q.bind(d.pattern(op, s));
        }
        Value::Str(s) => {
            q.bind(s.clone());
        }
        Value::List(items) => {
            q.push("(").bind_all(items.iter().cloned()).push(")");
        }
    }
}

/// The table and value column of a key-value entity.
fn entity_table(entity: Entity) -> Option<&'static str> {
    match entity {
        Entity::Metric => Some("latest_metrics"),
        Entity::Param => Some("run_params"),
        Entity::Tag => Some("run_tags"),
        // Runs have no metadata or spans (the search grammar refuses them for runs).
        Entity::Attribute
        | Entity::Metadata
        | Entity::Span
        | Entity::Feedback
        | Entity::Expectation
        | Entity::Issue => None,
    }
}

/// The runs a search selects: its experiments, stage and clauses, less those with a value for
/// any `absent` metric; `driver` is the metric whose latest value the walk follows.
struct Matching<'a> {
    workspace_id: &'a str,
    query: &'a RunQuery,
    absent: &'a [&'a str],
    driver: Option<&'a OrderBy>,
}

fn direction(order: &OrderBy) -> &'static str {
    if order.ascending { "ASC" } else { "DESC" }
}

/// What a run is ordered by for `order`: a run column, or the run's value of a key (NULL when
/// it has none).
fn sort_key(q: &mut Statement, order: &OrderBy) {
    match entity_table(order.entity) {
        Some(table) => {
            q.push(format!(
                "(SELECT e.value FROM {table} e WHERE e.workspace_id = r.workspace_id AND e.run_id = r.run_id AND e.key = "
            ));
            q.bind(order.key.clone());
            q.push(")");
        }
        // Attribute keys are canonical column names (see mlflow_search::attribute).
        None => {
            q.push(format!("r.{}", order.key));
        }
    }
}

impl SqlStore {
    /// The runs of a search's page, in order.
    ///
    /// Ordering by a metric walks `latest_metrics_by_experiment` in the metric's order and
    /// stops at the page's end, so a first page costs about the same over a million runs as
    /// over a hundred; a correlated subquery per run reads and sorts every matching run (2.7 s
    /// for an unfiltered search of 1,000,000 runs on SQLite, measured). Runs without a value
    /// for that metric (none logged, or NaN) come after every run that has one, in the order
    /// of the rest of `order_by`: that is the same search, one key shorter, over the runs that
    /// lack the metric. Params and tags keep the correlated order: their values may be long
    /// texts (MLflow allows 6,000 and 8,000 characters), past what a PostgreSQL B-tree index
    /// entry holds.
    async fn page_of_runs(&self, workspace_id: &str, query: &RunQuery) -> Result<Vec<RunRow>> {
        let mut runs = vec![];
        let mut order = query.order_by.as_slice();
        let mut absent: Vec<&str> = vec![];
        let (mut offset, mut want) = (query.offset.max(0), query.limit.max(0));
        loop {
            let driver = order.first().filter(|o| o.entity == Entity::Metric);
            let rest = if driver.is_some() { &order[1..] } else { order };
            let matching = Matching {
                workspace_id,
                query,
                absent: &absent,
                driver,
            };
            let got = self.runs_in_order(&matching, rest, want, offset).await?;
            let got_n = got.len() as i64;
            runs.extend(got);
            let Some(driver) = driver.filter(|_| got_n < want) else {
                return Ok(runs);
            };
            // A filter on that metric leaves no run without it: no need to look for them
            // (a scan of every run of the experiments).
            let filtered_on_it = query
                .clauses
                .iter()
                .any(|c| c.entity == Entity::Metric && c.key == driver.key);
            if filtered_on_it {
                return Ok(runs);
            }
            // Where the runs without the metric start: right after this page's last run, or,
            // when the page lies past every run with it, after all of those.
            let with_metric = if got_n > 0 || offset == 0 {
                offset + got_n
            } else {
                self.count_runs(&matching).await?
            };
            offset = (offset - with_metric).max(0);
            want -= got_n;
            absent.push(&driver.key);
            order = rest;
        }
    }

    /// `want` runs from `offset` of those `matching` selects, ordered by its driving metric
    /// (if any), then `order`, then newest first.
    async fn runs_in_order(
        &self,
        matching: &Matching<'_>,
        order: &[OrderBy],
        want: i64,
        offset: i64,
    ) -> Result<Vec<RunRow>> {
        let experiments = &matching.query.experiment_ids;
        if experiments.is_empty() {
            return Ok(vec![]);
        }
        // The page comes back as one row (a JSON array, in the page's order: a LIMIT subquery
        // is never flattened into an aggregate, so its rows feed the aggregate in order), not
        // a row per run: see `run_data`.
        let mut q = Statement::new(format!(
            "SELECT {} AS runs FROM (",
            self.dialect.json_rows(
                "run_id, experiment_id, run_name, user_id, status, start_time, end_time, \
                 lifecycle_stage, artifact_uri"
            )
        ));
        match matching.driver {
            None => {
                q.push("SELECT r.*");
                self.push_matching(&mut q, matching, experiments);
                q.push(" ORDER BY ");
                for o in order {
                    // Runs without the key sort last, either way.
                    sort_key(&mut q, o);
                    q.push(" IS NULL, ");
                    sort_key(&mut q, o);
                    q.push(format!(" {}, ", direction(o)));
                }
                q.push("r.start_time DESC, r.run_id");
            }
            Some(driver) => {
                // One walk per experiment, each down its own part of the index and no further
                // than the page's end, then the walks merged: one walk over several
                // experiments could not follow the index and would sort them all.
                let keys = |prefix: &str| {
                    let mut sql = format!("{prefix}lead {}, ", direction(driver));
                    for (j, o) in order.iter().enumerate() {
                        sql += &format!("{prefix}n{j}, {prefix}k{j} {}, ", direction(o));
                    }
                    sql
                };
                q.push("SELECT u.* FROM (");
                for (i, experiment) in experiments.iter().enumerate() {
                    if i > 0 {
                        q.push(" UNION ALL ");
                    }
                    q.push("SELECT * FROM (SELECT r.*, o.value AS lead");
                    for (j, o) in order.iter().enumerate() {
                        q.push(", ");
                        sort_key(&mut q, o);
                        q.push(format!(" IS NULL AS n{j}, "));
                        sort_key(&mut q, o);
                        q.push(format!(" AS k{j}"));
                    }
                    self.push_matching(&mut q, matching, std::slice::from_ref(experiment));
                    q.push(format!(" ORDER BY {}r.start_time DESC, r.run_id", keys("")));
                    q.limit(offset + want);
                    q.push(format!(") AS b{i}"));
                }
                q.push(format!(
                    ") AS u ORDER BY {}u.start_time DESC, u.run_id",
                    keys("u.")
                ));
            }
        }
        q.limit(want);
        q.push(" OFFSET ");
        q.bind(offset);
        q.push(") AS page");
        let row = q.build().fetch_one(&self.reader).await.map_err(db)?;
        packed::runs(matching.workspace_id, row.get::<&str, _>("runs"))
    }

    /// How many runs `matching` selects.
    async fn count_runs(&self, matching: &Matching<'_>) -> Result<i64> {
        let mut q = Statement::new("SELECT COUNT(*) AS n");
        self.push_matching(&mut q, matching, &matching.query.experiment_ids);
        let row = q.build().fetch_one(&self.reader).await.map_err(db)?;
        Ok(row.get("n"))
    }

    /// ` FROM … WHERE …` for the runs `matching` selects in `experiments`; `r` is the run, and
    /// `o` the driving metric's latest value when there is one.
    fn push_matching(&self, q: &mut Statement, m: &Matching<'_>, experiments: &[i64]) {
        let query = m.query;
        match m.driver {
            Some(driver) => {
                q.push(
                    " FROM latest_metrics o JOIN runs r ON r.workspace_id = o.workspace_id AND r.run_id = o.run_id WHERE o.workspace_id = ",
                );
                q.bind(m.workspace_id.to_string());
                q.push(" AND o.experiment_id IN (");
                q.bind_all(experiments.iter().copied());
                q.push(") AND o.key = ");
                q.bind(driver.key.clone());
                q.push(" AND o.value IS NOT NULL");
                // The search's own bounds on that metric bound the walk (NaN is NULL, so it
                // never passes a comparison, as in the clause itself).
                for clause in &query.clauses {
                    if clause.entity == Entity::Metric && clause.key == driver.key {
                        q.push(" AND");
                        push_condition(q, self.dialect, "o.value", clause.op, &clause.value);
                    }
                }
                q.push(" AND r.workspace_id = ");
                q.bind(m.workspace_id.to_string());
            }
            None => {
                q.push(" FROM runs r WHERE r.workspace_id = ");
                q.bind(m.workspace_id.to_string());
                q.push(" AND r.experiment_id IN (");
                if experiments.is_empty() {
                    q.push("NULL");
                }
                q.bind_all(experiments.iter().copied()).push(")");
            }
        }
        if let Some(stage) = &query.lifecycle_stage {
            q.push(" AND r.lifecycle_stage = ");
            q.bind(stage.clone());
        }
        for clause in &query.clauses {
            // A bound on the driving metric is on `o` already; an EXISTS would look the same
            // value up again for every run the walk passes.
            let on_driver = m
                .driver
                .is_some_and(|d| clause.entity == Entity::Metric && clause.key == d.key);
            if on_driver {
                continue;
            }
            q.push(" AND ");
            match entity_table(clause.entity) {
                Some(table) => {
                    q.push(format!(
                        "EXISTS (SELECT 1 FROM {table} e WHERE e.workspace_id = r.workspace_id AND e.run_id = r.run_id AND e.key = "
                    ));
                    q.bind(clause.key.clone());
                    if clause.entity == Entity::Metric {
                        q.push(" AND e.is_nan = 0");
                    }
                    q.push(" AND");
                    push_condition(q, self.dialect, "e.value", clause.op, &clause.value);
                    q.push(")");
                }
                None => {
                    // Attribute keys are canonical column names (see mlflow_search::attribute).
                    push_condition(
                        q,
                        self.dialect,
                        &format!("r.{}", clause.key),
                        clause.op,
                        &clause.value,
                    );
                }
            }
        }
        for key in m.absent {
            q.push(
                " AND NOT EXISTS (SELECT 1 FROM latest_metrics e WHERE e.workspace_id = r.workspace_id AND e.run_id = r.run_id AND e.key = ",
            );
            q.bind(key.to_string());
            q.push(" AND e.value IS NOT NULL)");
        }
    }

    /// A metric's whole history, ordered by step, then timestamp, then the order it was logged.
    async fn history(&self, workspace_id: &str, run_id: &str, key: &str) -> Result<Vec<MetricRow>> {
        let chunks = sqlx::query(
            "SELECT data FROM metric_chunks WHERE workspace_id = $1 AND run_id = $2 AND key = $3 ORDER BY id",
        )
        .bind(workspace_id)
        .bind(run_id)
        .bind(key)
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        let mut all = vec![];
        for c in &chunks {
            let data: String = c.get("data");
            let points: Vec<(i64, i64, serde_json::Value)> =
                serde_json::from_str(&data).map_err(StoreError::Corrupt)?;
            all.extend(points.into_iter().map(|(step, timestamp, v)| MetricRow {
                key: key.to_string(),
                value: decode_value(&v),
                timestamp,
                step,
            }));
        }
        // Stable: equal (step, timestamp) keep the order they were logged in.
        all.sort_by_key(|m| (m.step, m.timestamp));
        Ok(all)
    }

    /// The params, tags, latest metrics, dataset inputs and logged models of many runs, in one
    /// query answering one row: per table a flat JSON array built by SQLite, an item per
    /// `(run, key)`. Rows cross from SQLite's thread one by one, and that hand-off, not the
    /// lookups, was most of a search's cost: 200 runs of 2 metrics, 2 params and 5 tags took
    /// 2,000 rows, now one. Metric values travel as `%!.17g` text (SQLite's printf gives 17
    /// digits only with `!`), which parses back to the same `f64`. A run's few items are
    /// sorted here rather than by SQLite.
    async fn run_data(
        &self,
        workspace_id: &str,
        run_ids: &[String],
    ) -> Result<HashMap<String, RunData>> {
        let ids = serde_json::to_string(run_ids).map_err(StoreError::Corrupt)?;
        let d = self.dialect;
        let ids_in = d.text_list("$2");
        let part = |items: &str, table: &str, name: &str| {
            format!(
                "(SELECT {} FROM {table} WHERE workspace_id = $1 AND run_id IN ({ids_in})) AS {name}",
                d.json_rows(items)
            )
        };
        let metric = format!(
            "run_id, key, {}, is_nan, timestamp, step",
            d.real_text("value")
        );
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {}, {}, {}, {}, {}",
            part("run_id, key, value", "run_params", "params"),
            part("run_id, key, value", "run_tags", "tags"),
            part(&metric, "latest_metrics", "metrics"),
            part(
                "run_id, name, digest, dataset, tags",
                "run_inputs",
                "inputs"
            ),
            part("run_id, direction, model_id, step", "run_models", "models"),
        )))
        .bind(workspace_id)
        .bind(ids)
        .fetch_one(&self.reader)
        .await
        .map_err(db)?;
        let part = |name: &str| row.get::<&str, _>(name).to_string();
        packed::run_data(
            run_ids,
            &packed::RunDataParts {
                params: part("params"),
                tags: part("tags"),
                metrics: part("metrics"),
                inputs: part("inputs"),
                models: part("models"),
            },
        )
    }

    /// The start of a read of experiments, each with its tags in the same row (one statement,
    /// however many experiments); the caller appends the condition over `e`.
    fn experiments_select(&self) -> Statement {
        Statement::new(format!(
            "SELECT e.*, (SELECT {} FROM (SELECT key, value FROM experiment_tags g \
             WHERE g.workspace_id = e.workspace_id AND g.experiment_id = e.experiment_id ORDER BY key) AS g) AS tags_packed \
             FROM experiments e WHERE ",
            self.dialect.json_rows("key, value")
        ))
    }

    /// Runs a read begun with [`SqlStore::experiments_select`], in id order.
    async fn experiments_of(&self, mut q: Statement) -> Result<Vec<ExperimentRow>> {
        q.push(" ORDER BY e.experiment_id");
        let rows = q.build().fetch_all(&self.reader).await.map_err(db)?;
        rows.iter().map(experiment_row).collect()
    }
}

fn registered_model_row(r: &AnyRow) -> Result<RegisteredModelRow> {
    let json = |k: &str| serde_json::from_str(r.get::<&str, _>(k)).map_err(StoreError::Corrupt);
    Ok(RegisteredModelRow {
        workspace_id: r.get("workspace_id"),
        name: r.get("name"),
        description: r.get("description"),
        tags: json("tags")?,
        aliases: json("aliases")?,
        creation_time: r.get("creation_time"),
        last_updated_time: r.get("last_updated_time"),
    })
}

fn logged_model_row(r: &AnyRow) -> Result<LoggedModelRow> {
    let json = |k: &str| serde_json::from_str(r.get::<&str, _>(k)).map_err(StoreError::Corrupt);
    Ok(LoggedModelRow {
        workspace_id: r.get("workspace_id"),
        model_id: r.get("model_id"),
        experiment_id: r.get("experiment_id"),
        name: r.get("name"),
        artifact_uri: r.get("artifact_uri"),
        status: r.get("status"),
        model_type: r.get("model_type"),
        source_run_id: r.get("source_run_id"),
        creator_id: r.get("creator_id"),
        creation_time: r.get("creation_time"),
        last_updated_time: r.get("last_updated_time"),
        tags: json("tags")?,
        params: json("params")?,
        deleted: r.get::<i64, _>("deleted") != 0,
    })
}

#[async_trait]
impl Tracking for SqlStore {
    async fn put_logged_model(&self, m: &LoggedModelRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO logged_models (workspace_id, model_id, experiment_id, name, artifact_uri, status, model_type, source_run_id,
                                        creator_id, creation_time, last_updated_time, tags, params, deleted)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
             ON CONFLICT (workspace_id, model_id) DO UPDATE SET status = excluded.status, last_updated_time = excluded.last_updated_time,
               tags = excluded.tags, params = excluded.params, deleted = excluded.deleted",
        )
        .bind(&m.workspace_id)
        .bind(&m.model_id)
        .bind(m.experiment_id)
        .bind(&m.name)
        .bind(&m.artifact_uri)
        .bind(&m.status)
        .bind(&m.model_type)
        .bind(&m.source_run_id)
        .bind(&m.creator_id)
        .bind(m.creation_time)
        .bind(m.last_updated_time)
        .bind(m.tags.to_string())
        .bind(m.params.to_string())
        .bind(m.deleted as i64)
        .execute(&self.writer)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn get_logged_model(
        &self,
        workspace_id: &str,
        model_id: &str,
    ) -> Result<Option<LoggedModelRow>> {
        let row =
            sqlx::query("SELECT * FROM logged_models WHERE workspace_id = $1 AND model_id = $2")
                .bind(workspace_id)
                .bind(model_id)
                .fetch_optional(&self.reader)
                .await
                .map_err(db)?;
        row.as_ref().map(logged_model_row).transpose()
    }

    async fn list_logged_models(
        &self,
        workspace_id: &str,
        experiment_ids: &[i64],
    ) -> Result<Vec<LoggedModelRow>> {
        let ids = serde_json::to_string(experiment_ids).map_err(StoreError::Corrupt)?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT * FROM logged_models WHERE workspace_id = $1 AND deleted = 0
               AND experiment_id IN ({}) ORDER BY creation_time DESC, model_id",
            self.dialect.int_list("$2")
        )))
        .bind(workspace_id)
        .bind(ids)
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        rows.iter().map(logged_model_row).collect()
    }

    async fn put_registered_model(&self, m: &RegisteredModelRow, must_be_new: bool) -> Result<()> {
        let sql = if must_be_new {
            "INSERT INTO registered_models (workspace_id, name, description, tags, aliases, creation_time, last_updated_time) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        } else {
            "INSERT INTO registered_models (workspace_id, name, description, tags, aliases, creation_time, last_updated_time) VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (workspace_id, name) DO UPDATE SET description = excluded.description, tags = excluded.tags, aliases = excluded.aliases, last_updated_time = excluded.last_updated_time"
        };
        sqlx::query(sql)
            .bind(&m.workspace_id)
            .bind(&m.name)
            .bind(&m.description)
            .bind(m.tags.to_string())
            .bind(m.aliases.to_string())
            .bind(m.creation_time)
            .bind(m.last_updated_time)
            .execute(&self.writer)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn get_registered_model(
        &self,
        workspace_id: &str,
        name: &str,
    ) -> Result<Option<RegisteredModelRow>> {
        let row =
            sqlx::query("SELECT * FROM registered_models WHERE workspace_id = $1 AND name = $2")
                .bind(workspace_id)
                .bind(name)
                .fetch_optional(&self.reader)
                .await
                .map_err(db)?;
        row.as_ref().map(registered_model_row).transpose()
    }

    async fn list_registered_models(&self, workspace_id: &str) -> Result<Vec<RegisteredModelRow>> {
        let rows =
            sqlx::query("SELECT * FROM registered_models WHERE workspace_id = $1 ORDER BY name")
                .bind(workspace_id)
                .fetch_all(&self.reader)
                .await
                .map_err(db)?;
        rows.iter().map(registered_model_row).collect()
    }

    async fn rename_model(&self, workspace_id: &str, from: &str, to: &str, now: i64) -> Result<()> {
        let mut tx = self.begin_write(workspace_id).await?;
        let taken = sqlx::query(
            "SELECT 1 FROM resources WHERE workspace_id = $1 AND kind = 'models' AND parent = '' AND name = $2
             UNION ALL SELECT 1 FROM registered_models WHERE workspace_id = $1 AND name = $2 LIMIT 1",
        )
        .bind(workspace_id)
        .bind(to)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        if taken.is_some() {
            return Err(StoreError::Conflict);
        }
        let versions = sqlx::query(
            "SELECT version, spec FROM resources WHERE workspace_id = $1 AND kind = 'models' AND parent = '' AND name = $2",
        )
        .bind(workspace_id)
        .bind(from)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        for v in &versions {
            let version: String = v.get("version");
            let mut spec = json(v.get("spec"))?;
            spec["name"] = serde_json::Value::String(to.to_string());
            sqlx::query(
                "UPDATE resources SET name = $1, spec = $2, updated_at = $3
                 WHERE workspace_id = $4 AND kind = 'models' AND parent = '' AND name = $5 AND version = $6",
            )
            .bind(to)
            .bind(spec.to_string())
            .bind(now)
            .bind(workspace_id)
            .bind(from)
            .bind(&version)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        sqlx::query(
            "UPDATE registered_models SET name = $1, last_updated_time = $2 WHERE workspace_id = $3 AND name = $4",
        )
        .bind(to)
        .bind(now)
        .bind(workspace_id)
        .bind(from)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(())
    }

    async fn delete_registered_model(&self, workspace_id: &str, name: &str) -> Result<bool> {
        let done =
            sqlx::query("DELETE FROM registered_models WHERE workspace_id = $1 AND name = $2")
                .bind(workspace_id)
                .bind(name)
                .execute(&self.writer)
                .await
                .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn create_experiment(&self, e: &ExperimentRow) -> Result<i64> {
        let mut tx = self.begin_write(&e.workspace_id).await?;
        let id: i64 = sqlx::query("SELECT COALESCE(MAX(experiment_id), -1) + 1 AS id FROM experiments WHERE workspace_id = $1")
            .bind(&e.workspace_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?
            .get("id");
        let id = id.max(e.experiment_id);
        sqlx::query(
            "INSERT INTO experiments (workspace_id, experiment_id, name, artifact_location, lifecycle_stage, creation_time, last_update_time)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&e.workspace_id)
        .bind(id)
        .bind(&e.name)
        .bind(e.artifact_location.replace("{experiment_id}", &id.to_string()))
        .bind(&e.lifecycle_stage)
        .bind(e.creation_time)
        .bind(e.last_update_time)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        for (k, v) in &e.tags {
            sqlx::query("INSERT INTO experiment_tags (workspace_id, experiment_id, key, value) VALUES ($1, $2, $3, $4) ON CONFLICT (workspace_id, experiment_id, key) DO UPDATE SET value = excluded.value")
                .bind(&e.workspace_id)
                .bind(id)
                .bind(k)
                .bind(v)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(id)
    }

    async fn get_experiment(
        &self,
        workspace_id: &str,
        experiment_id: i64,
    ) -> Result<Option<ExperimentRow>> {
        let mut q = self.experiments_select();
        q.push("e.workspace_id = ").bind(workspace_id.to_string());
        q.push(" AND e.experiment_id = ").bind(experiment_id);
        Ok(self.experiments_of(q).await?.pop())
    }

    async fn experiment_by_name(
        &self,
        workspace_id: &str,
        name: &str,
    ) -> Result<Option<ExperimentRow>> {
        let mut q = self.experiments_select();
        q.push("e.workspace_id = ").bind(workspace_id.to_string());
        q.push(" AND e.name = ").bind(name.to_string());
        Ok(self.experiments_of(q).await?.pop())
    }

    async fn list_experiments(&self, workspace_id: &str) -> Result<Vec<ExperimentRow>> {
        let mut q = self.experiments_select();
        q.push("e.workspace_id = ").bind(workspace_id.to_string());
        self.experiments_of(q).await
    }

    async fn update_experiment(&self, e: &ExperimentRow) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE experiments SET name = $3, lifecycle_stage = $4, last_update_time = $5 WHERE workspace_id = $1 AND experiment_id = $2",
        )
        .bind(&e.workspace_id)
        .bind(e.experiment_id)
        .bind(&e.name)
        .bind(&e.lifecycle_stage)
        .bind(e.last_update_time)
        .execute(&self.writer)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_experiment_tag(
        &self,
        workspace_id: &str,
        experiment_id: i64,
        key: &str,
        value: Option<&str>,
    ) -> Result<()> {
        match value {
            Some(v) => sqlx::query("INSERT INTO experiment_tags (workspace_id, experiment_id, key, value) VALUES ($1, $2, $3, $4) ON CONFLICT (workspace_id, experiment_id, key) DO UPDATE SET value = excluded.value")
                .bind(workspace_id)
                .bind(experiment_id)
                .bind(key)
                .bind(v)
                .execute(&self.writer)
                .await
                .map_err(db)?,
            None => sqlx::query("DELETE FROM experiment_tags WHERE workspace_id = $1 AND experiment_id = $2 AND key = $3")
                .bind(workspace_id)
                .bind(experiment_id)
                .bind(key)
                .execute(&self.writer)
                .await
                .map_err(db)?,
        };
        Ok(())
    }

    async fn create_run(&self, r: &RunRow, tags: &[(String, String)]) -> Result<()> {
        // Nothing it reads decides what it writes beyond the run itself.
        let mut tx = self
            .begin_write(&format!("{}/run/{}", r.workspace_id, r.run_id))
            .await?;
        sqlx::query(
            "INSERT INTO runs (workspace_id, run_id, experiment_id, run_name, user_id, status, start_time, end_time, lifecycle_stage, artifact_uri)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&r.workspace_id)
        .bind(&r.run_id)
        .bind(r.experiment_id)
        .bind(&r.run_name)
        .bind(&r.user_id)
        .bind(&r.status)
        .bind(r.start_time)
        .bind(r.end_time)
        .bind(&r.lifecycle_stage)
        .bind(&r.artifact_uri)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        for (k, v) in tags {
            sqlx::query("INSERT INTO run_tags (workspace_id, run_id, key, value) VALUES ($1, $2, $3, $4) ON CONFLICT (workspace_id, run_id, key) DO UPDATE SET value = excluded.value")
                .bind(&r.workspace_id)
                .bind(&r.run_id)
                .bind(k)
                .bind(v)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn get_run(&self, workspace_id: &str, run_id: &str) -> Result<Option<(RunRow, RunData)>> {
        let row = sqlx::query("SELECT * FROM runs WHERE workspace_id = $1 AND run_id = $2")
            .bind(workspace_id)
            .bind(run_id)
            .fetch_optional(&self.reader)
            .await
            .map_err(db)?;
        let Some(row) = row.as_ref().map(run_row) else {
            return Ok(None);
        };
        let mut data = self
            .run_data(workspace_id, std::slice::from_ref(&row.run_id))
            .await?;
        let d = data.remove(&row.run_id).unwrap_or_default();
        Ok(Some((row, d)))
    }

    async fn run_row(&self, workspace_id: &str, run_id: &str) -> Result<Option<RunRow>> {
        let row = sqlx::query("SELECT * FROM runs WHERE workspace_id = $1 AND run_id = $2")
            .bind(workspace_id)
            .bind(run_id)
            .fetch_optional(&self.reader)
            .await
            .map_err(db)?;
        Ok(row.as_ref().map(run_row))
    }

    async fn update_run(&self, r: &RunRow) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE runs SET status = $3, start_time = $4, end_time = $5, run_name = $6, lifecycle_stage = $7 WHERE workspace_id = $1 AND run_id = $2",
        )
        .bind(&r.workspace_id)
        .bind(&r.run_id)
        .bind(&r.status)
        .bind(r.start_time)
        .bind(r.end_time)
        .bind(&r.run_name)
        .bind(&r.lifecycle_stage)
        .execute(&self.writer)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn log_batch_with_models(
        &self,
        workspace_id: &str,
        run_id: &str,
        metrics: &[MetricRow],
        params: &[(String, String)],
        tags: &[(String, String)],
        models: &[ModelMetricRow],
    ) -> Result<std::result::Result<(), BatchRefused>> {
        // What its reads decide (param conflicts, where a metric's history goes on, the latest
        // values) is the run's own: runs of one workspace log side by side.
        let mut tx = self
            .begin_write(&format!("{workspace_id}/run/{run_id}"))
            .await?;
        let stage: Option<String> =
            sqlx::query("SELECT lifecycle_stage FROM runs WHERE workspace_id = $1 AND run_id = $2")
                .bind(workspace_id)
                .bind(run_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?
                .map(|r| r.get(0));
        match stage {
            None => return Ok(Err(BatchRefused::NoRun)),
            Some(s) if s != "active" => return Ok(Err(BatchRefused::RunNotActive { stage: s })),
            Some(_) => {}
        }
        if !params.is_empty() {
            let keys = serde_json::to_string(&params.iter().map(|(k, _)| k).collect::<Vec<_>>())
                .map_err(StoreError::Corrupt)?;
            let existing: HashMap<String, String> = sqlx::query(AssertSqlSafe(format!(
                "SELECT key, value FROM run_params WHERE workspace_id = $1 AND run_id = $2 AND key IN ({})",
                self.dialect.text_list("$3")
            )))
            .bind(workspace_id)
            .bind(run_id)
            .bind(keys)
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?
            .iter()
            .map(|r| (r.get("key"), r.get("value")))
            .collect();
            let mut fresh: Vec<(&String, &String)> = vec![];
            for (k, v) in params {
                match existing.get(k) {
                    Some(old) if old != v => {
                        return Ok(Err(BatchRefused::ParamConflict {
                            key: k.clone(),
                            old: old.clone(),
                            new: v.clone(),
                        }));
                    }
                    Some(_) => {}
                    None if fresh.iter().any(|(fk, _)| *fk == k) => {}
                    None => fresh.push((k, v)),
                }
            }
            for chunk in fresh.chunks(500) {
                let mut q = Statement::new(
                    "INSERT INTO run_params (workspace_id, run_id, key, value) VALUES ",
                );
                for (i, (k, v)) in chunk.iter().enumerate() {
                    q.push(if i == 0 { "(" } else { ", (" });
                    q.bind_all([workspace_id, run_id, k.as_str(), v.as_str()])
                        .push(")");
                }
                q.build().execute(&mut *tx).await.map_err(db)?;
            }
        }
        for chunk in tags.chunks(500) {
            // A later value for the same key in one batch wins.
            let mut last: Vec<&(String, String)> = vec![];
            for t in chunk {
                last.retain(|(k, _)| k != &t.0);
                last.push(t);
            }
            let mut q =
                Statement::new("INSERT INTO run_tags (workspace_id, run_id, key, value) VALUES ");
            for (i, (k, v)) in last.iter().enumerate() {
                q.push(if i == 0 { "(" } else { ", (" });
                q.bind_all([workspace_id, run_id, k.as_str(), v.as_str()])
                    .push(")");
            }
            q.push(" ON CONFLICT (workspace_id, run_id, key) DO UPDATE SET value = excluded.value");
            q.build().execute(&mut *tx).await.map_err(db)?;
        }
        // History: one chunk per key, its points in the order given, written straight to the
        // chunk's JSON text.
        let mut by_key: Vec<(&str, usize, String)> = vec![];
        for m in metrics {
            let i = match by_key.iter().position(|(k, _, _)| *k == m.key) {
                Some(i) => i,
                None => {
                    by_key.push((&m.key, 0, String::from("[")));
                    by_key.len() - 1
                }
            };
            let (_, n, text) = &mut by_key[i];
            if *n > 0 {
                text.push(',');
            }
            *n += 1;
            push_point(text, m);
        }
        for chunk in by_key.chunks(500) {
            let mut q = Statement::new(
                "INSERT INTO metric_chunks (workspace_id, run_id, key, points, data) VALUES ",
            );
            for (i, (key, n, text)) in chunk.iter().enumerate() {
                q.push(if i == 0 { "(" } else { ", (" });
                q.bind_all([workspace_id, run_id, key]);
                q.push(", ")
                    .bind(*n as i64)
                    .push(", ")
                    .bind(format!("{text}]"))
                    .push(")");
            }
            q.build().execute(&mut *tx).await.map_err(db)?;
        }
        // Latest values: the batch's best per key (highest step, then latest timestamp), then one
        // upsert per key that keeps whichever is newer.
        let mut best: HashMap<&str, &MetricRow> = HashMap::new();
        for m in metrics {
            let e = best.entry(m.key.as_str()).or_insert(m);
            if (m.step, m.timestamp) >= (e.step, e.timestamp) {
                *e = m;
            }
        }
        for m in best.values() {
            // NaN is stored as NULL, made in SQL: sqlx's `Any` driver sends a NULL double to
            // PostgreSQL as a float4, and the statement, prepared once per connection, would
            // then refuse the next real double.
            let (value, nan) = if m.value.is_nan() {
                (0.0, 1i64)
            } else {
                (m.value, 0i64)
            };
            sqlx::query(
                "INSERT INTO latest_metrics (workspace_id, run_id, experiment_id, key, step, timestamp, value, is_nan)
                 SELECT $1, $2, r.experiment_id, $3, $4, $5, CASE WHEN $7 = 1 THEN NULL ELSE $6 END, $7 FROM runs r WHERE r.workspace_id = $1 AND r.run_id = $2
                 ON CONFLICT (workspace_id, run_id, key) DO UPDATE SET step = excluded.step, timestamp = excluded.timestamp, value = excluded.value, is_nan = excluded.is_nan
                 WHERE (excluded.step, excluded.timestamp) >= (latest_metrics.step, latest_metrics.timestamp)",
            )
            .bind(workspace_id)
            .bind(run_id)
            .bind(&m.key)
            .bind(m.step)
            .bind(m.timestamp)
            .bind(value)
            .bind(nan)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        insert_model_metrics(&mut tx, workspace_id, models).await?;
        tx.commit().await.map_err(db)?;
        Ok(Ok(()))
    }

    async fn log_inputs(
        &self,
        workspace_id: &str,
        run_id: &str,
        inputs: &[(String, String, serde_json::Value, serde_json::Value)],
    ) -> Result<()> {
        let mut tx = self.begin_write(workspace_id).await?;
        for (name, digest, dataset, tags) in inputs {
            sqlx::query(
                "INSERT INTO run_inputs (workspace_id, run_id, name, digest, dataset, tags) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (workspace_id, run_id, name, digest) DO UPDATE SET dataset = excluded.dataset, tags = excluded.tags",
            )
            .bind(workspace_id)
            .bind(run_id)
            .bind(name)
            .bind(digest)
            .bind(dataset.to_string())
            .bind(tags.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn link_models(
        &self,
        workspace_id: &str,
        run_id: &str,
        link: ModelLink,
        models: &[(String, i64)],
    ) -> Result<()> {
        let mut tx = self.begin_write(workspace_id).await?;
        for (model_id, step) in models {
            sqlx::query(
                "INSERT INTO run_models (workspace_id, run_id, direction, model_id, step) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (workspace_id, run_id, direction, model_id) DO UPDATE SET step = excluded.step",
            )
            .bind(workspace_id)
            .bind(run_id)
            .bind(link.as_str())
            .bind(model_id)
            .bind(step)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn dataset_summaries(
        &self,
        workspace_id: &str,
        experiment_ids: &[i64],
    ) -> Result<Vec<DatasetSummary>> {
        let ids = serde_json::to_string(experiment_ids).map_err(StoreError::Corrupt)?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT DISTINCT r.experiment_id, i.name, i.digest, {} AS context
             FROM run_inputs i JOIN runs r ON r.workspace_id = i.workspace_id AND r.run_id = i.run_id
             WHERE i.workspace_id = $1 AND r.experiment_id IN ({})
             ORDER BY r.experiment_id, i.name, i.digest LIMIT 1000",
            self.dialect.json_text("i.tags", "mlflow.data.context"),
            self.dialect.int_list("$2")
        )))
        .bind(workspace_id)
        .bind(ids)
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| DatasetSummary {
                experiment_id: r.get("experiment_id"),
                name: r.get("name"),
                digest: r.get("digest"),
                context: r.get("context"),
            })
            .collect())
    }

    async fn log_model_metrics(&self, workspace_id: &str, rows: &[ModelMetricRow]) -> Result<()> {
        let mut tx = self.writer.begin().await.map_err(db)?;
        insert_model_metrics(&mut tx, workspace_id, rows).await?;
        tx.commit().await.map_err(db)
    }

    async fn model_metrics(
        &self,
        workspace_id: &str,
        model_id: &str,
    ) -> Result<Vec<ModelMetricRow>> {
        let rows = sqlx::query(
            "SELECT * FROM logged_model_metrics WHERE workspace_id = $1 AND model_id = $2 ORDER BY rowid",
        )
        .bind(workspace_id)
        .bind(model_id)
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| ModelMetricRow {
                model_id: r.get("model_id"),
                run_id: r.get("run_id"),
                metric: MetricRow {
                    key: r.get("key"),
                    value: r
                        .get::<Option<String>, _>("value")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(f64::NAN),
                    timestamp: r.get("timestamp"),
                    step: r.get("step"),
                },
                dataset_name: r.get("dataset_name"),
                dataset_digest: r.get("dataset_digest"),
            })
            .collect())
    }

    async fn delete_run_tag(&self, workspace_id: &str, run_id: &str, key: &str) -> Result<bool> {
        let done = sqlx::query(
            "DELETE FROM run_tags WHERE workspace_id = $1 AND run_id = $2 AND key = $3",
        )
        .bind(workspace_id)
        .bind(run_id)
        .bind(key)
        .execute(&self.writer)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn metric_history(
        &self,
        workspace_id: &str,
        run_id: &str,
        key: &str,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<MetricRow>> {
        let all = self.history(workspace_id, run_id, key).await?;
        Ok(all
            .into_iter()
            .skip(offset.max(0) as usize)
            .take(limit.max(0) as usize)
            .collect())
    }

    async fn metric_history_sampled(
        &self,
        workspace_id: &str,
        run_id: &str,
        key: &str,
        points: i64,
    ) -> Result<Vec<MetricRow>> {
        let all = self.history(workspace_id, run_id, key).await?;
        Ok(sample(all, points.max(2) as usize))
    }

    async fn search_runs(
        &self,
        workspace_id: &str,
        query: &RunQuery,
    ) -> Result<Vec<(RunRow, RunData)>> {
        let runs = self.page_of_runs(workspace_id, query).await?;
        let ids: Vec<String> = runs.iter().map(|r| r.run_id.clone()).collect();
        let mut data = self.run_data(workspace_id, &ids).await?;
        Ok(runs
            .into_iter()
            .map(|r| {
                let d = data.remove(&r.run_id).unwrap_or_default();
                (r, d)
            })
            .collect())
    }
}

/// Writes logged models' metrics in `tx` (the batch's own, or one of their own).
async fn insert_model_metrics(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    workspace_id: &str,
    rows: &[ModelMetricRow],
) -> Result<()> {
    for m in rows {
        let value = (!m.metric.value.is_nan()).then(|| format!("{:e}", m.metric.value));
        sqlx::query(
            "INSERT INTO logged_model_metrics (workspace_id, model_id, run_id, key, value, timestamp, step, dataset_name, dataset_digest)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(workspace_id)
        .bind(&m.model_id)
        .bind(&m.run_id)
        .bind(&m.metric.key)
        .bind(value)
        .bind(m.metric.timestamp)
        .bind(m.metric.step)
        .bind(&m.dataset_name)
        .bind(&m.dataset_digest)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    }
    Ok(())
}
