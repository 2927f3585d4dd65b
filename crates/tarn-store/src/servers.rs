//! Several servers on one store: leases (which server runs the background controllers), the
//! servers' own reports of themselves (for `tarn server status`), and the studio's browser
//! sessions, which any server must know. Lease and report times are on the database's clock
//! ([`crate::Dialect::now_ms`]), so servers whose clocks differ still agree when a lease has
//! run out.

use crate::sql::db;
use crate::{Result, SqlStore};
use async_trait::async_trait;
use sqlx::Row;

/// A lease as the store holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRow {
    pub name: String,
    pub holder: String,
    /// One more each time the holder changed.
    pub epoch: i64,
    pub expires_at: i64,
}

/// A server as it last reported itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerRow {
    pub id: String,
    /// Where it answers (its public URL).
    pub url: String,
    pub host: String,
    pub pid: i64,
    pub version: String,
    pub started_at: i64,
    /// Its last report (set by the store, on the database's clock).
    pub seen_at: i64,
}

/// A studio session, by hashes only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRow {
    pub id_hash: String,
    pub token_hash: String,
    pub csrf: String,
    /// ms since the epoch.
    pub expires_at: i64,
    /// How it signed in: `""` with a token, else the sign-in provider's name.
    pub via: String,
}

#[async_trait]
pub trait Servers: Send + Sync {
    /// Stores a new session, dropping those that expired before `now`.
    async fn create_session(&self, session: &SessionRow, now: i64) -> Result<()>;
    /// The session, if it is there and has not expired at `now`.
    async fn get_session(&self, id_hash: &str, now: i64) -> Result<Option<SessionRow>>;
    async fn delete_session(&self, id_hash: &str) -> Result<()>;
    /// Takes lease `name` for `holder` for `ttl_ms`, or renews it when `holder` has it: the
    /// lease's epoch while `holder` holds it, `None` while another's lease runs.
    async fn hold_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<Option<i64>>;
    /// Gives lease `name` up if `holder` has it (a clean shutdown: another takes over at once).
    async fn release_lease(&self, name: &str, holder: &str) -> Result<()>;
    /// The lease, and now on the database's clock.
    async fn lease(&self, name: &str) -> Result<(Option<LeaseRow>, i64)>;
    /// Records `server` as seen now.
    async fn report_server(&self, server: &ServerRow) -> Result<()>;
    /// Every server seen in the last `within_ms`, and now on the database's clock.
    async fn list_servers(&self, within_ms: i64) -> Result<(Vec<ServerRow>, i64)>;
    async fn remove_server(&self, id: &str) -> Result<()>;
}

#[async_trait]
impl Servers for SqlStore {
    async fn create_session(&self, s: &SessionRow, now: i64) -> Result<()> {
        let mut tx = self.writer.begin().await.map_err(db)?;
        sqlx::query("DELETE FROM sessions WHERE expires_at < $1")
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query(
            "INSERT INTO sessions (id_hash, token_hash, csrf, expires_at, via) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&s.id_hash)
        .bind(&s.token_hash)
        .bind(&s.csrf)
        .bind(s.expires_at)
        .bind(&s.via)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn get_session(&self, id_hash: &str, now: i64) -> Result<Option<SessionRow>> {
        let row = sqlx::query(
            "SELECT id_hash, token_hash, csrf, expires_at, via FROM sessions
             WHERE id_hash = $1 AND expires_at >= $2",
        )
        .bind(id_hash)
        .bind(now)
        .fetch_optional(&self.reader)
        .await
        .map_err(db)?;
        Ok(row.map(|r| SessionRow {
            id_hash: r.get("id_hash"),
            token_hash: r.get("token_hash"),
            csrf: r.get("csrf"),
            expires_at: r.get("expires_at"),
            via: r.get("via"),
        }))
    }

    async fn delete_session(&self, id_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.writer)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn hold_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<Option<i64>> {
        let now = self.dialect.now_ms();
        // One statement: the database decides, so two servers asking at once never both win.
        let sql = format!(
            "INSERT INTO leases (name, holder, epoch, expires_at) VALUES ($1, $2, 1, {now} + $3)
             ON CONFLICT (name) DO UPDATE SET
                 epoch = CASE WHEN leases.holder = excluded.holder
                              THEN leases.epoch ELSE leases.epoch + 1 END,
                 holder = excluded.holder,
                 expires_at = excluded.expires_at
             WHERE leases.holder = excluded.holder OR leases.expires_at < {now}
             RETURNING epoch"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .bind(holder)
            .bind(ttl_ms)
            .fetch_optional(&self.writer)
            .await
            .map_err(db)?;
        Ok(row.map(|r| r.get::<i64, _>(0)))
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        sqlx::query("UPDATE leases SET expires_at = 0 WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.writer)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn lease(&self, name: &str) -> Result<(Option<LeaseRow>, i64)> {
        let sql = format!(
            "SELECT {} AS now, l.name, l.holder, l.epoch, l.expires_at
             FROM (SELECT 1) AS one LEFT JOIN leases l ON l.name = $1",
            self.dialect.now_ms()
        );
        let r = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .fetch_one(&self.reader)
            .await
            .map_err(db)?;
        let lease = r.get::<Option<String>, _>("name").map(|name| LeaseRow {
            name,
            holder: r.get("holder"),
            epoch: r.get("epoch"),
            expires_at: r.get("expires_at"),
        });
        Ok((lease, r.get("now")))
    }

    async fn report_server(&self, s: &ServerRow) -> Result<()> {
        let sql = format!(
            "INSERT INTO servers (id, url, host, pid, version, started_at, seen_at)
             VALUES ($1, $2, $3, $4, $5, $6, {now})
             ON CONFLICT (id) DO UPDATE SET url = $2, seen_at = {now}",
            now = self.dialect.now_ms()
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&s.id)
            .bind(&s.url)
            .bind(&s.host)
            .bind(s.pid)
            .bind(&s.version)
            .bind(s.started_at)
            .execute(&self.writer)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn list_servers(&self, within_ms: i64) -> Result<(Vec<ServerRow>, i64)> {
        let now = self.dialect.now_ms();
        let sql = format!(
            "SELECT {now} AS now, s.id, s.url, s.host, s.pid, s.version, s.started_at, s.seen_at
             FROM (SELECT 1) AS one LEFT JOIN servers s ON s.seen_at >= {now} - $1
             ORDER BY s.started_at, s.id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(within_ms)
            .fetch_all(&self.reader)
            .await
            .map_err(db)?;
        let now = rows.first().map(|r| r.get::<i64, _>("now")).unwrap_or(0);
        let servers = rows
            .iter()
            .filter_map(|r| {
                Some(ServerRow {
                    id: r.get::<Option<String>, _>("id")?,
                    url: r.get("url"),
                    host: r.get("host"),
                    pid: r.get("pid"),
                    version: r.get("version"),
                    started_at: r.get("started_at"),
                    seen_at: r.get("seen_at"),
                })
            })
            .collect();
        Ok((servers, now))
    }

    async fn remove_server(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM servers WHERE id = $1")
            .bind(id)
            .execute(&self.writer)
            .await
            .map_err(db)?;
        Ok(())
    }
}
