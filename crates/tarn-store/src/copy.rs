//! Copies a whole store into another, empty one (`tarn store migrate`): every table, row for
//! row, in one transaction on the target, then compares every table's row count on both sides.
//! Secrets move as the ciphertext they are; the vault key stays a file beside the servers.
//! Values are read as the target's column types say, so one copy serves both directions
//! (SQLite to PostgreSQL, and back).

use crate::sql::db;
use crate::statement::Statement;
use crate::{Dialect, Result, SqlStore, StoreError};
use futures::TryStreamExt;
use sqlx::Row;
use sqlx::any::AnyRow;

/// Every table that holds a home's data, parents before children, so each row's foreign keys
/// hold when it is inserted. The store suite checks this list and [`RUNTIME_TABLES`] against
/// both schemas: a table added to the migrations and to neither fails it.
pub const TABLES: &[&str] = &[
    "meta",
    "workspaces",
    "resources",
    "secrets",
    "users",
    "role_definitions",
    "tokens",
    "role_assignments",
    "group_role_assignments",
    "jobs",
    "job_logs",
    "experiments",
    "experiment_tags",
    "runs",
    "run_params",
    "run_tags",
    "latest_metrics",
    "metric_chunks",
    "registered_models",
    "logged_models",
    "run_inputs",
    "compute_states",
    "schedule_states",
    "run_models",
    "logged_model_metrics",
    "audit_events",
    "traces",
    "trace_tags",
    "trace_metadata",
    "trace_spans",
    "trace_assessments",
    "trace_runs",
    "eval_datasets",
    "eval_dataset_experiments",
    "eval_dataset_records",
    "scorer_versions",
    "genai_issues",
];

/// Columns a copy does not keep as they were: the MLflow `trace_info` a search kept of a trace
/// and its version. The target's triggers empty the one and move the other on as the trace's
/// tags arrive; the next search builds the info again.
pub const DERIVED_COLUMNS: &[(&str, &str)] = &[("traces", "info"), ("traces", "version")];

/// Tables of the running servers (leases, their reports of themselves, browser sessions), not
/// of the home: never copied (after a move, people sign in to the studio again).
pub const RUNTIME_TABLES: &[&str] = &["leases", "servers", "sessions"];

/// Rows per INSERT statement: few round trips, far below either database's bound-value limit.
const BATCH_VALUES: usize = 4000;

/// How a column's values are read and written.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Int,
    Float,
    Text,
    Bytes,
}

impl Kind {
    fn of(declared: &str) -> Kind {
        let t = declared.to_ascii_lowercase();
        if t.contains("int") {
            Kind::Int
        } else if t.contains("double") || t.contains("real") || t.contains("float") {
            Kind::Float
        } else if t.contains("bytea") || t.contains("blob") {
            Kind::Bytes
        } else {
            Kind::Text
        }
    }
}

/// One table's rows as copied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableCount {
    pub table: &'static str,
    pub rows: u64,
}

fn refused(why: String) -> StoreError {
    StoreError::Refused(why)
}

impl SqlStore {
    /// The tables of this store's schema (not sqlx's migration bookkeeping).
    pub async fn tables(&self) -> Result<Vec<String>> {
        let sql = match self.dialect {
            Dialect::Sqlite => {
                "SELECT name FROM sqlite_master WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations' ORDER BY name"
            }
            Dialect::Postgres => {
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name <> '_sqlx_migrations' \
                 ORDER BY table_name"
            }
        };
        let rows = sqlx::query(sql).fetch_all(&self.reader).await.map_err(db)?;
        Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
    }

    /// The columns of `table` with how to carry their values.
    async fn columns(&self, table: &str) -> Result<Vec<(String, Kind)>> {
        let sql = match self.dialect {
            Dialect::Sqlite => "SELECT name, type FROM pragma_table_info($1) ORDER BY cid",
            Dialect::Postgres => {
                "SELECT column_name::text, data_type::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position"
            }
        };
        let rows = sqlx::query(sql)
            .bind(table)
            .fetch_all(&self.reader)
            .await
            .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<String, _>(0), Kind::of(&r.get::<String, _>(1))))
            .collect())
    }

    /// How many rows `table` holds (`table` is one of [`TABLES`]).
    pub async fn count_rows(&self, table: &str) -> Result<u64> {
        count(&mut *self.reader.acquire().await.map_err(db)?, table).await
    }

    /// Copies every table of this store into `target`, which must hold no rows yet. All or
    /// nothing: a failure part-way leaves `target` empty. Returns each table's row count, the
    /// same on both sides (checked after the copy).
    pub async fn copy_into(&self, target: &SqlStore) -> Result<Vec<TableCount>> {
        for table in TABLES {
            let n = target.count_rows(table).await?;
            if n > 0 {
                return Err(refused(format!(
                    "the target store is not empty (its {table} table holds {n} rows): migrate into a new database"
                )));
            }
        }
        // The source is read in one transaction: a snapshot, even if something writes to it.
        let mut source = self.reader.begin().await.map_err(db)?;
        if self.dialect == Dialect::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .execute(&mut *source)
                .await
                .map_err(db)?;
        }
        let mut tx = target.writer.begin().await.map_err(db)?;
        for table in TABLES {
            let columns = target.columns(table).await?;
            let names = columns
                .iter()
                .map(|(c, _)| format!("\"{c}\""))
                .collect::<Vec<_>>()
                .join(", ");
            let insert = format!(
                "INSERT INTO {table} ({names}) {}VALUES ",
                match target.dialect {
                    // Identity columns keep the ids they had (a chunk's id is its order).
                    Dialect::Postgres => "OVERRIDING SYSTEM VALUE ",
                    Dialect::Sqlite => "",
                }
            );
            let per_batch = (BATCH_VALUES / columns.len().max(1)).max(1);
            let select = format!("SELECT {names} FROM {table}");
            let mut rows = sqlx::query(sqlx::AssertSqlSafe(select)).fetch(&mut *source);
            let mut batch = Statement::new(&insert);
            let mut in_batch = 0;
            while let Some(row) = rows.try_next().await.map_err(db)? {
                if in_batch > 0 {
                    batch.push(", ");
                }
                push_row(&mut batch, &row, &columns)?;
                in_batch += 1;
                if in_batch == per_batch {
                    let full = std::mem::replace(&mut batch, Statement::new(&insert));
                    full.build_once().execute(&mut *tx).await.map_err(db)?;
                    in_batch = 0;
                }
            }
            drop(rows);
            if in_batch > 0 {
                batch.build_once().execute(&mut *tx).await.map_err(db)?;
            }
        }
        if target.dialect == Dialect::Postgres {
            // Identity sequences continue after the copied ids.
            let identities = sqlx::query(
                "SELECT table_name::text, column_name::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND is_identity = 'YES'",
            )
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
            for r in identities {
                let (table, column): (String, String) = (r.get(0), r.get(1));
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), \
                     COALESCE((SELECT MAX(\"{column}\") FROM {table}), 0) + 1, false)"
                )))
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
        }
        tx.commit().await.map_err(db)?;
        target.analyze().await?;
        let mut counts = Vec::new();
        for table in TABLES {
            let from = count(&mut source, table).await?;
            let to = count(&mut *target.reader.acquire().await.map_err(db)?, table).await?;
            if from != to {
                return Err(refused(format!(
                    "the {table} table has {from} rows in the source but {to} in the copy"
                )));
            }
            counts.push(TableCount { table, rows: to });
        }
        Ok(counts)
    }
}

async fn count(conn: &mut sqlx::AnyConnection, table: &str) -> Result<u64> {
    debug_assert!(TABLES.contains(&table));
    let sql = format!("SELECT COUNT(*) FROM {table}");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_one(conn)
        .await
        .map_err(db)?;
    Ok(row.get::<i64, _>(0) as u64)
}

/// Appends `(v1, v2, ...)` for one source row, each value read as its target column's kind.
fn push_row(s: &mut Statement, row: &AnyRow, columns: &[(String, Kind)]) -> Result<()> {
    s.push("(");
    for (i, (_, kind)) in columns.iter().enumerate() {
        if i > 0 {
            s.push(", ");
        }
        match kind {
            Kind::Int => s.bind(row.try_get::<Option<i64>, _>(i).map_err(db)?),
            Kind::Float => s.bind(row.try_get::<Option<f64>, _>(i).map_err(db)?),
            Kind::Text => s.bind(row.try_get::<Option<String>, _>(i).map_err(db)?),
            Kind::Bytes => s.bind(row.try_get::<Option<Vec<u8>>, _>(i).map_err(db)?),
        };
    }
    s.push(")");
    Ok(())
}
