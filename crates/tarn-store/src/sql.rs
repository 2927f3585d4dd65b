//! The one implementation of [`Store`], over sqlx's `Any` driver: SQLite (the embedded default)
//! or PostgreSQL, chosen by the URL it opens. The statements are the same for both except the
//! few pieces [`Dialect`] spells per database.
//!
//! SQLite runs in WAL mode with one writer connection (SQLite allows one writer at a time;
//! queuing writes in-process avoids `SQLITE_BUSY` under load) and a pool of readers that
//! proceed in parallel with it. On PostgreSQL one pool serves both, and several Tarn servers
//! may share the database: a write transaction that reads before it writes takes a lock in
//! the database first (see [`SqlStore::begin_write`]).

use crate::dialect::Dialect;
use crate::statement::Statement;
use crate::{
    AuditFilter, AuditRow, ComputeStateRow, JobFilter, JobRow, ResourceFilter, ResourceKey,
    ResourceRow, Result, RoleRow, ScheduleStateRow, SecretRow, Store, StoreError, TableCount,
    TokenRow, UserRow, WorkspaceRow,
};
use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyConnection, AnyPool, AssertSqlSafe, Connection, Executor, Row, Transaction};
use std::path::Path;
use std::time::Duration;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

pub struct SqlStore {
    pub(crate) writer: AnyPool,
    pub(crate) reader: AnyPool,
    pub(crate) dialect: Dialect,
    /// SQLite: the connection that checkpoints the WAL, off the writer's path, and what tells
    /// it the store is gone.
    checkpointer: Option<(AnyPool, std::sync::Arc<()>)>,
}

/// How often the checkpointer copies the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Copies committed pages from SQLite's WAL into the database file, on a connection of its
/// own, until the store closes. SQLite would otherwise do it inside the commit that fills the
/// WAL past 1,000 pages, and that commit waits for the copy and its `fsync`: on a big store,
/// where each commit dirties pages far apart (a metric's entry moving in
/// `latest_metrics_by_experiment`), that wait was the gap between `log_batch` on an empty
/// store and on one of a million runs. A passive checkpoint never blocks the writer or the
/// readers; the writer's own automatic checkpoint stays as a backstop, at a size this one
/// keeps the WAL under.
async fn checkpoints(pool: AnyPool, store: std::sync::Weak<()>) {
    loop {
        tokio::time::sleep(CHECKPOINT_EVERY).await;
        if store.upgrade().is_none() {
            pool.close().await;
            return;
        }
        if pool.is_closed() {
            return;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            if pool.is_closed() {
                return;
            }
            tracing::warn!("checkpointing the database: {e}");
        }
    }
}

pub(crate) fn db(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict,
        sqlx::Error::Database(d) if damaged(d.code().as_deref()) => {
            StoreError::Damaged(d.message().to_string())
        }
        _ => StoreError::Database(e),
    }
}

/// Whether a SQLite result code (extended or primary) says the file is damaged:
/// `SQLITE_CORRUPT` (11) or `SQLITE_NOTADB` (26).
fn damaged(code: Option<&str>) -> bool {
    code.and_then(|c| c.parse::<i32>().ok())
        .is_some_and(|c| matches!(c & 0xff, 11 | 26))
}

pub(crate) fn json(text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(StoreError::Corrupt)
}

/// A SQLite URL for a file path: `%`, `?` and `#` escaped so that any file name survives.
fn sqlite_url(path: &Path, mode: &str) -> Result<String> {
    let path = std::path::absolute(path).map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
    let mut escaped = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => escaped.push_str("%25"),
            '?' => escaped.push_str("%3F"),
            '#' => escaped.push_str("%23"),
            c => escaped.push(c),
        }
    }
    Ok(format!("sqlite://{escaped}?mode={mode}"))
}

impl SqlStore {
    /// Opens (creating if needed) the SQLite database at `path` and brings its schema up to date.
    pub async fn open_sqlite(path: &Path) -> Result<SqlStore> {
        sqlx::any::install_default_drivers();
        // `synchronous = NORMAL` in WAL mode: a committed transaction survives a crash of the
        // process (the WAL is in the OS's hands); only a power loss may drop the last commits.
        let pool = |max: u32, writer: bool| {
            AnyPoolOptions::new()
                .max_connections(max)
                // A pool pings an idle connection before lending it by default: a trip to
                // SQLite's worker thread and back for every statement, which tells nothing
                // about a file in this process (it was a third of a trace ingest's thread
                // switches: `benches/traces.sh`).
                .test_before_acquire(false)
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        if writer {
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            // A write of many rows inside a transaction keeps a statement
                            // journal (to undo just that statement); past 64 KiB SQLite moves
                            // it to a temporary file, made and unlinked for each such write
                            // (a trace's spans: `benches/traces.sh`). In memory it costs
                            // only what the write touched.
                            conn.execute("PRAGMA temp_store = MEMORY").await?;
                        }
                        // A bigger page cache than SQLite's 2 MiB default, taken only as
                        // pages are read: on a big store the index pages a log_batch touches
                        // (each moves its metric's entry in `latest_metrics_by_experiment`)
                        // no longer fit the default, and are read from the file again and
                        // again (`tarn bench scale`, 100,000 runs: log_batch 19.5% slower
                        // than on an empty store before, 5.8% and 17.4% in two runs with
                        // this). A reader's cache is emptied whenever a write came in since
                        // its last read, which costs more the bigger it is; so log_batch
                        // does no read before its write (see `Tracking::log_batch`).
                        conn.execute(if writer {
                            "PRAGMA cache_size = -65536"
                        } else {
                            "PRAGMA cache_size = -16384"
                        })
                        .await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        // The checkpointer keeps the WAL well under this (see `checkpoints`).
                        conn.execute("PRAGMA wal_autocheckpoint = 10000").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        Ok(())
                    })
                })
        };
        let writer = pool(1, true)
            .connect(&sqlite_url(path, "rwc")?)
            .await
            .map_err(db)?;
        SQLITE_MIGRATIONS
            .run(&writer)
            .await
            .map_err(StoreError::Migrate)?;
        let reader = pool(8, false)
            .connect(&sqlite_url(path, "ro")?)
            .await
            .map_err(db)?;
        let checkpointer = pool(1, false)
            .connect(&sqlite_url(path, "rw")?)
            .await
            .map_err(db)?;
        let alive = std::sync::Arc::new(());
        tokio::spawn(checkpoints(
            checkpointer.clone(),
            std::sync::Arc::downgrade(&alive),
        ));
        Ok(SqlStore {
            writer,
            reader,
            dialect: Dialect::Sqlite,
            checkpointer: Some((checkpointer, alive)),
        })
    }

    /// Connects to PostgreSQL at `url` (`postgres://user@host:port/db?sslmode=...`; the password
    /// comes from `PGPASSWORD` or a password file, as libpq reads them) and brings the schema
    /// up to date. Migrations hold a database lock, so servers starting together migrate once.
    pub async fn connect_postgres(url: &str) -> Result<SqlStore> {
        sqlx::any::install_default_drivers();
        // One connection first: a server that is down, a refused login or a TLS failure is
        // reported as what it is, at once (a pool would retry until its timeout).
        let first = tokio::time::timeout(Duration::from_secs(15), AnyConnection::connect(url))
            .await
            .map_err(|_| {
                StoreError::Database(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no answer from the database server in 15 s",
                )))
            })?
            .map_err(db)?;
        first.close().await.map_err(db)?;
        // Writers wait their turn for a workspace's lock holding a connection: under a burst
        // (100 clients logging to one run) the last may wait a while.
        let pool = AnyPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(60))
            .connect(url)
            .await
            .map_err(db)?;
        POSTGRES_MIGRATIONS
            .run(&pool)
            .await
            .map_err(StoreError::Migrate)?;
        Ok(SqlStore {
            writer: pool.clone(),
            reader: pool,
            dialect: Dialect::Postgres,
            checkpointer: None,
        })
    }

    /// Which database this store is on.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// A write transaction whose reads decide what it writes (the next version number, the next
    /// experiment id, a job's place in the queue, a metric's history). On PostgreSQL it first
    /// takes a transaction-scoped advisory lock on `scope` (a workspace id, or a name for a
    /// store-wide sequence), so two servers never interleave such steps in one scope: the
    /// one-writer-at-a-time that SQLite's single writer connection gives, per scope.
    pub(crate) async fn begin_write(&self, scope: &str) -> Result<Transaction<'static, Any>> {
        let mut tx = self.writer.begin().await.map_err(db)?;
        if self.dialect == Dialect::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7616))")
                .bind(scope)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        Ok(tx)
    }

    /// Refreshes the planner's statistics after a bulk load (a migration, a benchmark's fill):
    /// until then PostgreSQL may take a big table for an empty one and plan a search with
    /// nested scans (300 ms instead of 3 ms for a 2,000-run filter, measured); its
    /// autovacuum would get there, but only later.
    pub async fn analyze(&self) -> Result<()> {
        sqlx::query("ANALYZE")
            .execute(&self.writer)
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Flushes SQLite's WAL into the main file and closes; used on a clean shutdown.
    pub async fn close(&self) {
        if let Some((c, _)) = &self.checkpointer {
            c.close().await;
        }
        if self.dialect == Dialect::Sqlite {
            let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.writer)
                .await;
        }
        self.reader.close().await;
        self.writer.close().await;
    }
}

/// The size of a job's log: where its last chunk ends.
async fn log_size(
    conn: &mut AnyConnection,
    workspace_id: &str,
    job: &str,
    node: u32,
) -> Result<u64> {
    let last = sqlx::query(
        "SELECT start_at + length(data) FROM job_logs
         WHERE workspace_id = $1 AND job = $2 AND node = $3 ORDER BY start_at DESC LIMIT 1",
    )
    .bind(workspace_id)
    .bind(job)
    .bind(i64::from(node))
    .fetch_optional(conn)
    .await
    .map_err(db)?;
    Ok(last.map(|r| r.get::<i64, _>(0) as u64).unwrap_or(0))
}

fn workspace_row(r: &AnyRow) -> Result<WorkspaceRow> {
    Ok(WorkspaceRow {
        id: r.get("id"),
        name: r.get("name"),
        spec: json(r.get::<&str, _>("spec"))?,
        storage_root: r.get("storage_root"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    })
}

fn resource_row(r: &AnyRow) -> Result<ResourceRow> {
    Ok(ResourceRow {
        key: ResourceKey {
            workspace_id: r.get("workspace_id"),
            kind: r.get("kind"),
            parent: r.get("parent"),
            name: r.get("name"),
            version: r.get("version"),
        },
        seq: r.get("seq"),
        spec: json(r.get::<&str, _>("spec"))?,
        archived: r.get::<i64, _>("archived") != 0,
        created_by: r.get("created_by"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    })
}

/// The columns of a job row, with its workspace's name (a macro so queries stay `'static`).
macro_rules! job_select {
    () => {
        "SELECT j.*, w.name AS workspace FROM jobs j JOIN workspaces w ON w.id = j.workspace_id "
    };
}

fn job_row(r: &AnyRow) -> Result<JobRow> {
    Ok(JobRow {
        workspace_id: r.get("workspace_id"),
        workspace: r.get("workspace"),
        name: r.get("name"),
        seq: r.get("seq"),
        parent: r.get("parent"),
        job_type: r.get("job_type"),
        experiment: r.get("experiment"),
        compute: r.get("compute"),
        priority: r.get("priority"),
        status: r.get("status"),
        spec: json(r.get::<&str, _>("spec"))?,
        state: json(r.get::<&str, _>("state"))?,
        archived: r.get::<i64, _>("archived") != 0,
        created_by: r.get("created_by"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    })
}

fn user_row(r: &AnyRow) -> UserRow {
    UserRow {
        id: r.get("id"),
        name: r.get("name"),
        is_admin: r.get::<i64, _>("is_admin") != 0,
        created_at: r.get("created_at"),
        disabled: r.get::<i64, _>("disabled") != 0,
        kind: r.get("kind"),
        subject: r.get("subject"),
        groups: serde_json::from_str(&r.get::<String, _>("groups")).unwrap_or_default(),
    }
}

fn token_row(r: &AnyRow) -> TokenRow {
    TokenRow {
        id: r.get("token_id"),
        user_id: r.get("user_id"),
        hash: r.get("hash"),
        description: r.get("description"),
        created_at: r.get("token_created_at"),
        scope: r.get("scope"),
        expires_at: r.get("expires_at"),
        last_used_at: r.get("last_used_at"),
    }
}

/// A token's columns (of `tokens t`), named apart from its user's, for `concat!`.
macro_rules! token_columns {
    () => {
        "t.id AS token_id, t.user_id, t.hash, t.description, \
         t.created_at AS token_created_at, t.scope, t.expires_at, t.last_used_at"
    };
}

fn role_row(r: &AnyRow) -> RoleRow {
    RoleRow {
        workspace_id: r.get("workspace_id"),
        user_id: r.get("user_id"),
        user_name: r.get("user_name"),
        role: r.get("role"),
        created_at: r.get("created_at"),
    }
}

async fn insert_resource_row(
    conn: &mut AnyConnection,
    row: &ResourceRow,
    version: &str,
) -> Result<()> {
    let k = &row.key;
    sqlx::query(
        "INSERT INTO resources
           (workspace_id, kind, parent, name, version, seq, spec, archived, created_by, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5,
           (SELECT COALESCE(MAX(seq), 0) + 1 FROM resources WHERE workspace_id = $1 AND kind = $2 AND parent = $3 AND name = $4),
           $6, $7, $8, $9, $10)",
    )
    .bind(&k.workspace_id)
    .bind(&k.kind)
    .bind(&k.parent)
    .bind(&k.name)
    .bind(version)
    .bind(row.spec.to_string())
    .bind(row.archived as i64)
    .bind(&row.created_by)
    .bind(row.created_at)
    .bind(row.updated_at)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(())
}

async fn put_secrets(
    conn: &mut AnyConnection,
    workspace_id: &str,
    secrets: &[SecretRow],
) -> Result<()> {
    for s in secrets {
        sqlx::query(
            "INSERT INTO secrets (workspace_id, name, nonce, ciphertext) VALUES ($1, $2, $3, $4)
             ON CONFLICT (workspace_id, name) DO UPDATE SET nonce = excluded.nonce, ciphertext = excluded.ciphertext",
        )
        .bind(workspace_id)
        .bind(&s.name)
        .bind(&s.nonce)
        .bind(&s.ciphertext)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    }
    Ok(())
}

async fn delete_secrets(conn: &mut AnyConnection, workspace_id: &str, prefix: &str) -> Result<()> {
    sqlx::query("DELETE FROM secrets WHERE workspace_id = $1 AND substr(name, 1, length($2)) = $2")
        .bind(workspace_id)
        .bind(prefix)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(())
}

#[async_trait]
impl Store for SqlStore {
    fn shared(&self) -> bool {
        self.dialect == Dialect::Postgres
    }

    async fn get_meta(&self, key: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.reader)
            .await
            .map_err(db)?;
        Ok(row.map(|r| r.get("value")))
    }

    async fn snapshot_to(&self, path: &Path) -> Result<Vec<TableCount>> {
        if path.exists() {
            return Err(StoreError::Refused(format!(
                "{} exists already",
                path.display()
            )));
        }
        let target = SqlStore::open_sqlite(path).await?;
        let copied = self.copy_into(&target).await;
        target.close().await;
        copied
    }

    async fn init_meta(&self, key: &str, value: &str) -> Result<String> {
        let mut tx = self.begin_write("meta").await?;
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let stored: String = sqlx::query("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?
            .get("value");
        tx.commit().await.map_err(db)?;
        Ok(stored)
    }

    async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = $2",
        )
        .bind(key)
        .bind(value)
        .execute(&self.writer)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn create_workspace(
        &self,
        ws: &WorkspaceRow,
        resources: &[ResourceRow],
        secrets: &[SecretRow],
        roles: &[RoleRow],
    ) -> Result<()> {
        let mut tx = self.begin_write(&ws.id).await?;
        sqlx::query(
            "INSERT INTO workspaces (id, name, spec, storage_root, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&ws.id)
        .bind(&ws.name)
        .bind(ws.spec.to_string())
        .bind(&ws.storage_root)
        .bind(ws.created_at)
        .bind(ws.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        for r in resources {
            insert_resource_row(&mut tx, r, &r.key.version).await?;
        }
        put_secrets(&mut tx, &ws.id, secrets).await?;
        for role in roles {
            sqlx::query("INSERT INTO role_assignments (workspace_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)")
                .bind(&ws.id)
                .bind(&role.user_id)
                .bind(&role.role)
                .bind(role.created_at)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn get_workspace(&self, name: &str) -> Result<Option<WorkspaceRow>> {
        let row = sqlx::query("SELECT * FROM workspaces WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.reader)
            .await
            .map_err(db)?;
        row.as_ref().map(workspace_row).transpose()
    }

    async fn list_workspaces(&self) -> Result<Vec<WorkspaceRow>> {
        let rows = sqlx::query("SELECT * FROM workspaces ORDER BY name")
            .fetch_all(&self.reader)
            .await
            .map_err(db)?;
        rows.iter().map(workspace_row).collect()
    }

    async fn update_workspace_with(
        &self,
        ws: &WorkspaceRow,
        resource: Option<(&ResourceRow, &str, &[SecretRow])>,
    ) -> Result<bool> {
        let mut tx = self.begin_write(&ws.id).await?;
        let done = sqlx::query("UPDATE workspaces SET spec = $2, updated_at = $3 WHERE id = $1")
            .bind(&ws.id)
            .bind(ws.spec.to_string())
            .bind(ws.updated_at)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        if let Some((row, prefix, secrets)) = resource
            && !update_resource_in(&mut tx, row, prefix, Some(secrets)).await?
        {
            return Ok(false);
        }
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    async fn delete_workspace(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM workspaces WHERE id = $1")
            .bind(id)
            .execute(&self.writer)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn insert_resource(&self, row: &ResourceRow, secrets: &[SecretRow]) -> Result<()> {
        let mut tx = self.begin_write(&row.key.workspace_id).await?;
        insert_resource_row(&mut tx, row, &row.key.version).await?;
        put_secrets(&mut tx, &row.key.workspace_id, secrets).await?;
        tx.commit().await.map_err(db)
    }

    async fn insert_next_version(
        &self,
        row: &ResourceRow,
        secrets: &[SecretRow],
    ) -> Result<String> {
        let k = &row.key;
        let mut tx = self.begin_write(&k.workspace_id).await?;
        // Versions that are not whole numbers (e.g. "1.0.2") do not count.
        let (is_number, number) = self.dialect.digits("version");
        let max: i64 = sqlx::query(AssertSqlSafe(format!(
            "SELECT COALESCE(MAX({number}), 0) AS v FROM resources
             WHERE workspace_id = $1 AND kind = $2 AND parent = $3 AND name = $4 AND {is_number}"
        )))
        .bind(&k.workspace_id)
        .bind(&k.kind)
        .bind(&k.parent)
        .bind(&k.name)
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?
        .get("v");
        let version = (max + 1).to_string();
        let mut spec = row.spec.clone();
        if let Some(obj) = spec.as_object_mut() {
            obj.insert("version".into(), serde_json::Value::String(version.clone()));
        }
        let row = ResourceRow {
            spec,
            ..row.clone()
        };
        insert_resource_row(&mut tx, &row, &version).await?;
        put_secrets(&mut tx, &k.workspace_id, secrets).await?;
        tx.commit().await.map_err(db)?;
        Ok(version)
    }

    async fn get_resource(&self, k: &ResourceKey) -> Result<Option<ResourceRow>> {
        let row = sqlx::query(
            "SELECT * FROM resources WHERE workspace_id = $1 AND kind = $2 AND parent = $3 AND name = $4 AND version = $5",
        )
        .bind(&k.workspace_id)
        .bind(&k.kind)
        .bind(&k.parent)
        .bind(&k.name)
        .bind(&k.version)
        .fetch_optional(&self.reader)
        .await
        .map_err(db)?;
        row.as_ref().map(resource_row).transpose()
    }

    async fn latest_resource(&self, k: &ResourceKey) -> Result<Option<ResourceRow>> {
        let row = sqlx::query(
            "SELECT * FROM resources WHERE workspace_id = $1 AND kind = $2 AND parent = $3 AND name = $4 AND archived = 0
             ORDER BY seq DESC LIMIT 1",
        )
        .bind(&k.workspace_id)
        .bind(&k.kind)
        .bind(&k.parent)
        .bind(&k.name)
        .fetch_optional(&self.reader)
        .await
        .map_err(db)?;
        row.as_ref().map(resource_row).transpose()
    }

    async fn list_resources(
        &self,
        workspace_id: &str,
        kind: &str,
        f: &ResourceFilter<'_>,
    ) -> Result<Vec<ResourceRow>> {
        let sql = if f.latest_only {
            "SELECT r.* FROM resources r WHERE r.workspace_id = $1 AND r.kind = $2 AND r.parent = $3
               AND ($4 IS NULL OR r.name = $4) AND r.archived = 0
               AND r.seq = (SELECT MAX(seq) FROM resources x WHERE x.workspace_id = r.workspace_id AND x.kind = r.kind
                            AND x.parent = r.parent AND x.name = r.name AND x.archived = 0)
             ORDER BY r.name"
        } else {
            "SELECT * FROM resources WHERE workspace_id = $1 AND kind = $2 AND parent = $3
               AND ($4 IS NULL OR name = $4) AND ($5 = 1 OR archived = 0)
             ORDER BY name, seq DESC"
        };
        let rows = sqlx::query(sql)
            .bind(workspace_id)
            .bind(kind)
            .bind(f.parent)
            .bind(f.name)
            .bind(f.include_archived as i64)
            .fetch_all(&self.reader)
            .await
            .map_err(db)?;
        rows.iter().map(resource_row).collect()
    }

    async fn update_resource(
        &self,
        row: &ResourceRow,
        secret_prefix: &str,
        secrets: Option<&[SecretRow]>,
    ) -> Result<bool> {
        let mut tx = self.begin_write(&row.key.workspace_id).await?;
        if !update_resource_in(&mut tx, row, secret_prefix, secrets).await? {
            return Ok(false);
        }
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    async fn delete_resource(&self, k: &ResourceKey, secret_prefix: &str) -> Result<u64> {
        let mut tx = self.begin_write(&k.workspace_id).await?;
        let done = sqlx::query(
            "DELETE FROM resources WHERE workspace_id = $1 AND kind = $2 AND parent = $3 AND name = $4
               AND ($5 = '' OR version = $5)",
        )
        .bind(&k.workspace_id)
        .bind(&k.kind)
        .bind(&k.parent)
        .bind(&k.name)
        .bind(&k.version)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        // Children (deployments of an endpoint) go with their parent.
        sqlx::query("DELETE FROM resources WHERE workspace_id = $1 AND parent = $2 AND kind <> $3 AND $4 = ''")
            .bind(&k.workspace_id)
            .bind(format!("{}/{}", k.kind, k.name))
            .bind(&k.kind)
            .bind(&k.parent)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        delete_secrets(&mut tx, &k.workspace_id, secret_prefix).await?;
        tx.commit().await.map_err(db)?;
        Ok(done.rows_affected())
    }

    async fn set_archived(&self, k: &ResourceKey, archived: bool, now: i64) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE resources SET archived = $6, updated_at = $7
             WHERE workspace_id = $1 AND kind = $2 AND parent = $3 AND name = $4 AND ($5 = '' OR version = $5)",
        )
        .bind(&k.workspace_id)
        .bind(&k.kind)
        .bind(&k.parent)
        .bind(&k.name)
        .bind(&k.version)
        .bind(archived as i64)
        .bind(now)
        .execute(&self.writer)
        .await
        .map_err(db)?;
        Ok(done.rows_affected())
    }

    async fn get_secrets(&self, workspace_id: &str, prefix: &str) -> Result<Vec<SecretRow>> {
        let rows = sqlx::query(
            "SELECT name, nonce, ciphertext FROM secrets WHERE workspace_id = $1 AND substr(name, 1, length($2)) = $2 ORDER BY name",
        )
        .bind(workspace_id)
        .bind(prefix)
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| SecretRow {
                name: r.get("name"),
                nonce: r.get("nonce"),
                ciphertext: r.get("ciphertext"),
            })
            .collect())
    }

    async fn create_user(&self, u: &UserRow) -> Result<()> {
        sqlx::query("INSERT INTO users (id, name, is_admin, created_at, disabled, kind, subject, groups) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(&u.id)
            .bind(&u.name)
            .bind(u.is_admin as i64)
            .bind(u.created_at)
            .bind(u.disabled as i64)
            .bind(&u.kind)
            .bind(&u.subject)
            .bind(serde_json::to_string(&u.groups).map_err(StoreError::Corrupt)?)
            .execute(&self.writer)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn get_user(&self, name: &str) -> Result<Option<UserRow>> {
        let row = sqlx::query("SELECT * FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.reader)
            .await
            .map_err(db)?;
        Ok(row.as_ref().map(user_row))
    }

    async fn list_users(&self) -> Result<Vec<UserRow>> {
        let rows = sqlx::query("SELECT * FROM users ORDER BY name")
            .fetch_all(&self.reader)
            .await
            .map_err(db)?;
        Ok(rows.iter().map(user_row).collect())
    }

    async fn create_token(&self, t: &TokenRow) -> Result<()> {
        sqlx::query("INSERT INTO tokens (id, user_id, hash, description, created_at, scope, expires_at, last_used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(&t.id)
            .bind(&t.user_id)
            .bind(&t.hash)
            .bind(&t.description)
            .bind(t.created_at)
            .bind(&t.scope)
            .bind(t.expires_at)
            .bind(t.last_used_at)
            .execute(&self.writer)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn find_token(&self, hash: &str) -> Result<Option<(TokenRow, UserRow)>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            token_columns!(),
            ", u.id, u.name, u.is_admin, u.created_at, u.disabled, u.kind, u.subject, u.groups
             FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.hash = $1"
        ))
        .bind(hash)
        .fetch_optional(&self.reader)
        .await
        .map_err(db)?;
        Ok(row.map(|r| (token_row(&r), user_row(&r))))
    }

    async fn find_token_by_id(&self, id: &str) -> Result<Option<(TokenRow, UserRow)>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            token_columns!(),
            ", u.id, u.name, u.is_admin, u.created_at, u.disabled, u.kind, u.subject, u.groups
             FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.reader)
        .await
        .map_err(db)?;
        Ok(row.map(|r| (token_row(&r), user_row(&r))))
    }

    async fn list_tokens(&self, user_id: Option<&str>) -> Result<Vec<(TokenRow, String)>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            token_columns!(),
            ", u.name FROM tokens t JOIN users u ON u.id = t.user_id
             WHERE $1 = '' OR t.user_id = $1 ORDER BY u.name, t.created_at, t.id"
        ))
        .bind(user_id.unwrap_or_default())
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        Ok(rows.iter().map(|r| (token_row(r), r.get("name"))).collect())
    }

    async fn delete_token(&self, id: &str) -> Result<Option<TokenRow>> {
        let mut tx = self.writer.begin().await.map_err(db)?;
        let row = sqlx::query(concat!(
            "SELECT ",
            token_columns!(),
            " FROM tokens t WHERE t.id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let Some(token) = row.as_ref().map(token_row) else {
            return Ok(None);
        };
        // The studio sessions that act with it end with it.
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(&token.hash)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query("DELETE FROM tokens WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(Some(token))
    }

    async fn touch_token(&self, id: &str, at: i64) -> Result<()> {
        sqlx::query("UPDATE tokens SET last_used_at = $2 WHERE id = $1")
            .bind(id)
            .bind(at)
            .execute(&self.writer)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn set_user_disabled(&self, user_id: &str, disabled: bool) -> Result<bool> {
        let done = sqlx::query("UPDATE users SET disabled = $2 WHERE id = $1")
            .bind(user_id)
            .bind(disabled as i64)
            .execute(&self.writer)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_user(&self, user_id: &str) -> Result<bool> {
        let mut tx = self.writer.begin().await.map_err(db)?;
        for sql in [
            "DELETE FROM sessions WHERE token_hash IN (SELECT hash FROM tokens WHERE user_id = $1)",
            "DELETE FROM tokens WHERE user_id = $1",
            "DELETE FROM role_assignments WHERE user_id = $1",
        ] {
            sqlx::query(sql)
                .bind(user_id)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        let done = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_compute_state(&self, c: &ComputeStateRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO compute_states (workspace_id, name, desired, reason, updated_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (workspace_id, name)
             DO UPDATE SET desired = $3, reason = $4, updated_at = $5",
        )
        .bind(&c.workspace_id)
        .bind(&c.name)
        .bind(&c.desired)
        .bind(&c.reason)
        .bind(c.updated_at)
        .execute(&self.writer)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn compute_states(&self) -> Result<Vec<ComputeStateRow>> {
        let rows = sqlx::query(
            "SELECT workspace_id, name, desired, reason, updated_at FROM compute_states
             ORDER BY workspace_id, name",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| ComputeStateRow {
                workspace_id: r.get("workspace_id"),
                name: r.get("name"),
                desired: r.get("desired"),
                reason: r.get("reason"),
                updated_at: r.get("updated_at"),
            })
            .collect())
    }

    async fn delete_compute_state(&self, workspace_id: &str, name: &str) -> Result<()> {
        sqlx::query("DELETE FROM compute_states WHERE workspace_id = $1 AND name = $2")
            .bind(workspace_id)
            .bind(name)
            .execute(&self.writer)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn set_schedule_state(&self, c: &ScheduleStateRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO schedule_states (workspace_id, name, created_at, rule, through, fired,
                                          skipped, last_error, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (workspace_id, name)
             DO UPDATE SET created_at = $3, rule = $4, through = $5, fired = $6, skipped = $7,
                           last_error = $8, updated_at = $9",
        )
        .bind(&c.workspace_id)
        .bind(&c.name)
        .bind(c.created_at)
        .bind(&c.rule)
        .bind(c.through)
        .bind(c.fired)
        .bind(c.skipped)
        .bind(&c.last_error)
        .bind(c.updated_at)
        .execute(&self.writer)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn schedule_states(&self) -> Result<Vec<ScheduleStateRow>> {
        let rows = sqlx::query(
            "SELECT workspace_id, name, created_at, rule, through, fired, skipped, last_error,
                    updated_at
             FROM schedule_states ORDER BY workspace_id, name",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| ScheduleStateRow {
                workspace_id: r.get("workspace_id"),
                name: r.get("name"),
                created_at: r.get("created_at"),
                rule: r.get("rule"),
                through: r.get("through"),
                fired: r.get("fired"),
                skipped: r.get("skipped"),
                last_error: r.get("last_error"),
                updated_at: r.get("updated_at"),
            })
            .collect())
    }

    async fn delete_schedule_state(&self, workspace_id: &str, name: &str) -> Result<()> {
        sqlx::query("DELETE FROM schedule_states WHERE workspace_id = $1 AND name = $2")
            .bind(workspace_id)
            .bind(name)
            .execute(&self.writer)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn delete_tokens(&self, scope: &str) -> Result<u64> {
        let done = sqlx::query("DELETE FROM tokens WHERE scope = $1 AND scope <> ''")
            .bind(scope)
            .execute(&self.writer)
            .await
            .map_err(db)?;
        Ok(done.rows_affected())
    }

    async fn insert_job(&self, j: &JobRow) -> Result<()> {
        // `seq` orders jobs across workspaces, so this takes the write lock for all jobs.
        let mut tx = self.begin_write("jobs").await?;
        sqlx::query(
            "INSERT INTO jobs (workspace_id, name, seq, parent, job_type, experiment, compute,
                               priority, status, spec, state, archived, created_by, created_at, updated_at)
             VALUES ($1, $2, (SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs), $3, $4, $5, $6,
                     $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(&j.workspace_id)
        .bind(&j.name)
        .bind(&j.parent)
        .bind(&j.job_type)
        .bind(&j.experiment)
        .bind(&j.compute)
        .bind(j.priority)
        .bind(&j.status)
        .bind(j.spec.to_string())
        .bind(j.state.to_string())
        .bind(j.archived as i64)
        .bind(&j.created_by)
        .bind(j.created_at)
        .bind(j.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn append_job_log(
        &self,
        workspace_id: &str,
        job: &str,
        node: u32,
        offset: u64,
        data: &[u8],
    ) -> Result<std::result::Result<u64, u64>> {
        let mut tx = self.begin_write(&format!("{workspace_id}/{job}")).await?;
        let size = log_size(&mut tx, workspace_id, job, node).await?;
        if offset > size {
            return Ok(Err(size));
        }
        let skip = (size - offset) as usize;
        if skip >= data.len() {
            return Ok(Ok(size));
        }
        sqlx::query(
            "INSERT INTO job_logs (workspace_id, job, node, start_at, data) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(workspace_id)
        .bind(job)
        .bind(i64::from(node))
        .bind(size as i64)
        .bind(&data[skip..])
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(Ok(size + (data.len() - skip) as u64))
    }

    async fn read_job_log(
        &self,
        workspace_id: &str,
        job: &str,
        node: u32,
        offset: u64,
        max: usize,
    ) -> Result<(Vec<u8>, u64)> {
        let mut conn = self.reader.acquire().await.map_err(db)?;
        let size = log_size(&mut conn, workspace_id, job, node).await?;
        let mut out = Vec::new();
        if offset >= size {
            return Ok((out, size));
        }
        // From the chunk holding `offset`, in order, until `max` bytes are in hand.
        let rows = sqlx::query(
            "SELECT start_at, data FROM job_logs
             WHERE workspace_id = $1 AND job = $2 AND node = $3 AND start_at >= COALESCE(
                 (SELECT MAX(start_at) FROM job_logs
                  WHERE workspace_id = $1 AND job = $2 AND node = $3 AND start_at <= $4), 0)
             ORDER BY start_at LIMIT 1000",
        )
        .bind(workspace_id)
        .bind(job)
        .bind(i64::from(node))
        .bind(offset as i64)
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
        for r in rows {
            let start = r.get::<i64, _>("start_at") as u64;
            let data: Vec<u8> = r.get("data");
            let from = offset.saturating_sub(start) as usize;
            if from < data.len() {
                out.extend_from_slice(&data[from..]);
            }
            if out.len() >= max {
                out.truncate(max);
                break;
            }
        }
        Ok((out, size))
    }

    async fn get_job(&self, workspace_id: &str, name: &str) -> Result<Option<JobRow>> {
        let row = sqlx::query(concat!(
            job_select!(),
            "WHERE j.workspace_id = $1 AND j.name = $2"
        ))
        .bind(workspace_id)
        .bind(name)
        .fetch_optional(&self.reader)
        .await
        .map_err(db)?;
        row.as_ref().map(job_row).transpose()
    }

    async fn list_jobs(&self, workspace_id: &str, f: &JobFilter<'_>) -> Result<Vec<JobRow>> {
        // Only the conditions asked for, so the planner can use the index that fits
        // (`jobs_by_parent` for a job's children and the top-level list, else `jobs_by_seq`).
        let mut q = Statement::new(concat!(job_select!(), "WHERE j.workspace_id = "));
        q.bind(workspace_id.to_string());
        if let Some(parent) = f.parent {
            q.push(" AND j.parent = ").bind(parent.to_string());
        }
        if let Some(status) = f.status {
            q.push(" AND j.status = ").bind(status.to_string());
        }
        if !f.include_archived {
            q.push(" AND j.archived = 0");
        }
        if let Some(seq) = f.before_seq {
            q.push(" AND j.seq < ").bind(seq);
        }
        if let Some(experiment) = f.experiment {
            q.push(" AND j.experiment = ").bind(experiment.to_string());
        }
        q.push(" ORDER BY j.seq DESC");
        if let Some(limit) = f.limit {
            q.limit(limit);
        }
        let rows = q.build().fetch_all(&self.reader).await.map_err(db)?;
        rows.iter().map(job_row).collect()
    }

    async fn jobs_in_status(&self, statuses: &[&str]) -> Result<Vec<JobRow>> {
        // A JSON array parameter keeps the statement the same whatever the number of statuses.
        let wanted = serde_json::to_string(statuses).map_err(StoreError::Corrupt)?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "{} WHERE j.status IN ({}) ORDER BY j.seq",
            job_select!(),
            self.dialect.text_list("$1")
        )))
        .bind(wanted)
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        rows.iter().map(job_row).collect()
    }

    async fn update_job(&self, j: &JobRow, expected: &JobRow) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET status = $3, state = $4, archived = $5, updated_at = $6
             WHERE workspace_id = $1 AND name = $2 AND status = $7 AND updated_at = $8",
        )
        .bind(&j.workspace_id)
        .bind(&j.name)
        .bind(&j.status)
        .bind(j.state.to_string())
        .bind(j.archived as i64)
        .bind(j.updated_at)
        .bind(&expected.status)
        .bind(expected.updated_at)
        .execute(&self.writer)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn assign_role(&self, role: &RoleRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO role_assignments (workspace_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (workspace_id, user_id) DO UPDATE SET role = excluded.role",
        )
        .bind(&role.workspace_id)
        .bind(&role.user_id)
        .bind(&role.role)
        .bind(role.created_at)
        .execute(&self.writer)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn remove_role(&self, workspace_id: &str, user_id: &str) -> Result<bool> {
        let done =
            sqlx::query("DELETE FROM role_assignments WHERE workspace_id = $1 AND user_id = $2")
                .bind(workspace_id)
                .bind(user_id)
                .execute(&self.writer)
                .await
                .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_roles(&self, workspace_id: &str) -> Result<Vec<RoleRow>> {
        let rows = sqlx::query(
            "SELECT r.workspace_id, r.user_id, u.name AS user_name, r.role, r.created_at
             FROM role_assignments r JOIN users u ON u.id = r.user_id WHERE r.workspace_id = $1 ORDER BY u.name",
        )
        .bind(workspace_id)
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        Ok(rows.iter().map(role_row).collect())
    }

    async fn roles_of_user(&self, user_id: &str) -> Result<Vec<RoleRow>> {
        let rows = sqlx::query(
            "SELECT r.workspace_id, r.user_id, u.name AS user_name, r.role, r.created_at
             FROM role_assignments r JOIN users u ON u.id = r.user_id WHERE r.user_id = $1
             ORDER BY r.workspace_id",
        )
        .bind(user_id)
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        Ok(rows.iter().map(role_row).collect())
    }

    async fn get_user_by_subject(&self, subject: &str) -> Result<Option<UserRow>> {
        let row = sqlx::query("SELECT * FROM users WHERE subject = $1 AND subject <> ''")
            .bind(subject)
            .fetch_optional(&self.reader)
            .await
            .map_err(db)?;
        Ok(row.as_ref().map(user_row))
    }

    async fn set_user_groups(&self, user_id: &str, groups: &[String]) -> Result<()> {
        sqlx::query("UPDATE users SET groups = $2 WHERE id = $1")
            .bind(user_id)
            .bind(serde_json::to_string(groups).map_err(StoreError::Corrupt)?)
            .execute(&self.writer)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn assign_group_role(
        &self,
        workspace_id: &str,
        group: &str,
        role: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO group_role_assignments (workspace_id, group_name, role, created_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (workspace_id, group_name) DO UPDATE SET role = $3, created_at = $4",
        )
        .bind(workspace_id)
        .bind(group)
        .bind(role)
        .bind(now)
        .execute(&self.writer)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn remove_group_role(&self, workspace_id: &str, group: &str) -> Result<bool> {
        let done = sqlx::query(
            "DELETE FROM group_role_assignments WHERE workspace_id = $1 AND group_name = $2",
        )
        .bind(workspace_id)
        .bind(group)
        .execute(&self.writer)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_group_roles(&self, workspace_id: &str) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query(
            "SELECT group_name, role, created_at FROM group_role_assignments
             WHERE workspace_id = $1 ORDER BY group_name",
        )
        .bind(workspace_id)
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| (r.get("group_name"), r.get("role"), r.get("created_at")))
            .collect())
    }

    async fn group_roles_of(&self, workspace_id: &str, groups: &[String]) -> Result<Vec<String>> {
        if groups.is_empty() {
            return Ok(vec![]);
        }
        // Few groups have roles in a workspace: read them all, match here.
        Ok(self
            .list_group_roles(workspace_id)
            .await?
            .into_iter()
            .filter(|(g, _, _)| groups.contains(g))
            .map(|(_, role, _)| role)
            .collect())
    }

    async fn record_audit(&self, events: &[AuditRow]) -> Result<()> {
        let mut tx = self.writer.begin().await.map_err(db)?;
        for e in events {
            sqlx::query(
                "INSERT INTO audit_events (id, at, actor, actor_kind, address, method, path, workspace, status, changes)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(&e.id)
            .bind(e.at)
            .bind(&e.actor)
            .bind(&e.actor_kind)
            .bind(&e.address)
            .bind(&e.method)
            .bind(&e.path)
            .bind(&e.workspace)
            .bind(e.status)
            .bind(&e.changes)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn list_audit(&self, f: &AuditFilter<'_>) -> Result<Vec<AuditRow>> {
        let mut q = Statement::default();
        let actor = q.placeholder(f.actor.unwrap_or_default().to_string());
        let workspace = q.placeholder(f.workspace.unwrap_or_default().to_string());
        let since = q.placeholder(f.since.unwrap_or(0));
        q.push(format!(
            "SELECT * FROM audit_events
             WHERE ({actor} = '' OR actor = {actor}) AND ({workspace} = '' OR workspace = {workspace})
             AND at >= {since} ORDER BY at DESC, id DESC"
        ));
        q.limit(f.limit.clamp(1, 100_000) as i64);
        let rows = q.build().fetch_all(&self.reader).await.map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| AuditRow {
                id: r.get("id"),
                at: r.get("at"),
                actor: r.get("actor"),
                actor_kind: r.get("actor_kind"),
                address: r.get("address"),
                method: r.get("method"),
                path: r.get("path"),
                workspace: r.get("workspace"),
                status: r.get("status"),
                changes: r.get("changes"),
            })
            .collect())
    }

    async fn prune_audit(&self, before: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM audit_events WHERE at < $1")
            .bind(before)
            .execute(&self.writer)
            .await
            .map_err(db)?;
        Ok(done.rows_affected())
    }

    async fn role_in_use(&self, role: &str) -> Result<bool> {
        let row = sqlx::query(
            "SELECT 1 AS one FROM role_assignments WHERE role = $1
             UNION ALL SELECT 1 AS one FROM group_role_assignments WHERE role = $1 LIMIT 1",
        )
        .bind(role)
        .fetch_optional(&self.reader)
        .await
        .map_err(db)?;
        Ok(row.is_some())
    }

    async fn create_role_definition(&self, name: &str, definition: &str, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO role_definitions (name, definition, created_at) VALUES ($1, $2, $3)",
        )
        .bind(name)
        .bind(definition)
        .bind(now)
        .execute(&self.writer)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn get_role_definition(&self, name: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT definition FROM role_definitions WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.reader)
            .await
            .map_err(db)?;
        Ok(row.map(|r| r.get("definition")))
    }

    async fn list_role_definitions(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT name, definition FROM role_definitions ORDER BY name")
            .fetch_all(&self.reader)
            .await
            .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| (r.get("name"), r.get("definition")))
            .collect())
    }

    async fn delete_role_definition(&self, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM role_definitions WHERE name = $1")
            .bind(name)
            .execute(&self.writer)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn role_of(&self, workspace_id: &str, user_id: &str) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT role FROM role_assignments WHERE workspace_id = $1 AND user_id = $2",
        )
        .bind(workspace_id)
        .bind(user_id)
        .fetch_optional(&self.reader)
        .await
        .map_err(db)?;
        Ok(row.map(|r| r.get("role")))
    }
}

/// Rewrites a resource's spec in `tx`, and its secrets (those under `secret_prefix` replaced)
/// when given; false if there is no such resource.
async fn update_resource_in(
    tx: &mut Transaction<'static, Any>,
    row: &ResourceRow,
    secret_prefix: &str,
    secrets: Option<&[SecretRow]>,
) -> Result<bool> {
    let k = &row.key;
    let done = sqlx::query(
        "UPDATE resources SET spec = $6, updated_at = $7
         WHERE workspace_id = $1 AND kind = $2 AND parent = $3 AND name = $4 AND version = $5",
    )
    .bind(&k.workspace_id)
    .bind(&k.kind)
    .bind(&k.parent)
    .bind(&k.name)
    .bind(&k.version)
    .bind(row.spec.to_string())
    .bind(row.updated_at)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    if let Some(secrets) = secrets {
        delete_secrets(tx, &k.workspace_id, secret_prefix).await?;
        put_secrets(tx, &k.workspace_id, secrets).await?;
    }
    Ok(true)
}
