//! Which server runs the background controllers (the scheduler with its sweeps, pipelines and
//! autoscaler, the endpoint and instance controllers). Every server on a store reports itself
//! each second and, when the store is shared (PostgreSQL), tries to hold the `controllers`
//! lease there; the holder runs the controllers, the others only answer requests. A holder
//! that dies stops renewing, and another takes over once the lease runs out (`LEASE_TTL`, on the
//! database's clock); a clean shutdown hands it over at once. A SQLite store has one server
//! (the home's lock file sees to it), which always leads.
//!
//! A server counts itself the leader only until its last renewal's lease would end, measured
//! from before it asked and less a margin, on its own monotonic clock: a server that cannot
//! reach the database stops its controllers before anyone else may start theirs. What a pass
//! already under way writes is fenced by the store itself: every change of a job's state is a
//! compare-and-set on the row as read, so of two servers acting on one job only one wins.

use crate::Core;
use crate::error::Result;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tarn_store::ServerRow;
use tokio::sync::Notify;

const LEASE: &str = "controllers";
/// How long a lease lasts unless renewed: a dead leader is replaced within this plus a pass.
const LEASE_TTL: Duration = Duration::from_secs(5);
/// How often a server reports itself and renews or asks for the lease.
pub(crate) const RENEW_EVERY: Duration = Duration::from_secs(1);
/// Taken off a lease's end, for the time a renewal's answer takes to arrive.
const MARGIN: Duration = Duration::from_secs(1);
/// Servers not heard from in this long are not listed.
const SERVER_GONE_AFTER: Duration = Duration::from_secs(30);

/// This server's part: its id, and the lease it holds.
pub(crate) struct Leadership {
    pub(crate) id: String,
    started_ms: i64,
    /// The epoch of the lease held and until when, or `None`.
    held: Mutex<Option<(i64, Instant)>>,
    /// Notified when this server starts or stops leading.
    pub(crate) changed: Arc<Notify>,
    /// The leader's advertised URL when another server leads, as last seen.
    leader_url: Mutex<Option<String>>,
    /// What runs when this server stops leading (see [`Core::on_stand_down`]).
    stand_down: Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
}

impl Default for Leadership {
    fn default() -> Leadership {
        Leadership {
            id: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
            started_ms: crate::now_ms(),
            held: Mutex::new(None),
            changed: Arc::new(Notify::new()),
            leader_url: Mutex::new(None),
            stand_down: Mutex::new(Vec::new()),
        }
    }
}

/// A server on this store, for `tarn server status`.
#[derive(Clone, Debug)]
pub struct ServerView {
    pub id: String,
    pub url: String,
    pub host: String,
    pub pid: i64,
    pub version: String,
    pub started_at: i64,
    /// Since its last report.
    pub lag: Duration,
    pub leader: bool,
    /// This server (the one answering).
    pub this: bool,
}

impl Core {
    /// This server's id among the servers on its store.
    pub fn server_id(&self) -> &str {
        &self.leadership.id
    }

    /// Whether this server runs the background controllers now.
    pub fn leads(&self) -> bool {
        if !self.store.shared() {
            return true;
        }
        let held = *self.leadership.held.lock().expect("leadership lock");
        held.is_some_and(|(_, until)| Instant::now() < until)
    }

    /// Reports this server and renews (or asks for) the lease: one pass of the `leadership`
    /// task.
    async fn lead_or_follow(&self) -> Result<()> {
        let asked = Instant::now();
        let me = ServerRow {
            id: self.leadership.id.clone(),
            url: self.config.advertise_url.clone(),
            host: hostname(),
            pid: i64::from(std::process::id()),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: self.leadership.started_ms,
            seen_at: 0,
        };
        self.store.report_server(&me).await?;
        if !self.store.shared() {
            return Ok(());
        }
        let was = self.leads();
        let epoch = self
            .store
            .hold_lease(LEASE, &self.leadership.id, LEASE_TTL.as_millis() as i64)
            .await;
        let held = match epoch {
            Ok(Some(epoch)) => Some((epoch, asked + LEASE_TTL - MARGIN)),
            Ok(None) => None,
            // Unsure: keep what the last renewal gave, which runs out by itself.
            Err(e) => {
                self.note_leadership(was);
                return Err(e.into());
            }
        };
        let follows = held.is_none();
        *self.leadership.held.lock().expect("leadership lock") = held;
        self.note_leadership(was);
        let leader_url = if follows {
            self.servers()
                .await?
                .into_iter()
                .find(|s| s.leader)
                .map(|s| s.url)
        } else {
            None
        };
        *self.leadership.leader_url.lock().expect("leadership lock") = leader_url;
        Ok(())
    }

    /// Where to send a request only the leader can answer (scoring, replicas' and instances'
    /// state): the leader's advertised URL, or `None` when this server leads or no server
    /// does right now.
    pub fn leader_url(&self) -> Option<String> {
        if self.leads() {
            return None;
        }
        self.leadership
            .leader_url
            .lock()
            .expect("leadership lock")
            .clone()
    }

    fn note_leadership(&self, was: bool) {
        let now = self.leads();
        if now != was {
            if now {
                tracing::info!("this server now runs the background controllers");
            } else {
                tracing::warn!("this server no longer runs the background controllers");
                for stand_down in self
                    .leadership
                    .stand_down
                    .lock()
                    .expect("leadership lock")
                    .iter()
                {
                    stand_down();
                }
            }
            self.leadership.changed.notify_waiters();
        }
    }

    /// Starts reporting this server and holding the lease (before the controllers start, so
    /// that the first server on a store leads from its first second).
    pub async fn start_leadership(self: &Arc<Core>) -> tokio::task::JoinHandle<()> {
        if let Err(e) = self.lead_or_follow().await {
            tracing::warn!("cannot report this server to the store: {e}");
        }
        let wake = Arc::new(Notify::new());
        self.spawn_task_always("leadership", RENEW_EVERY, wake, |core| async move {
            core.lead_or_follow().await
        })
    }

    /// Has `f` run when this server stops leading (the controllers stop what they started).
    pub(crate) fn on_stand_down(&self, f: Box<dyn Fn() + Send + Sync>) {
        self.leadership
            .stand_down
            .lock()
            .expect("leadership lock")
            .push(f);
    }

    /// A clean shutdown: hands the lease over and leaves the list of servers.
    pub async fn step_down(&self) {
        *self.leadership.held.lock().expect("leadership lock") = None;
        let _ = self.store.release_lease(LEASE, &self.leadership.id).await;
        let _ = self.store.remove_server(&self.leadership.id).await;
    }

    /// The servers on this store, the leader marked.
    pub async fn servers(&self) -> Result<Vec<ServerView>> {
        let (rows, now) = self
            .store
            .list_servers(SERVER_GONE_AFTER.as_millis() as i64)
            .await?;
        let leader = if self.store.shared() {
            let (lease, now) = self.store.lease(LEASE).await?;
            lease.filter(|l| l.expires_at >= now).map(|l| l.holder)
        } else {
            Some(self.leadership.id.clone())
        };
        Ok(rows
            .into_iter()
            .map(|r| ServerView {
                leader: leader.as_deref() == Some(&r.id),
                this: r.id == self.leadership.id,
                lag: Duration::from_millis((now - r.seen_at).max(0) as u64),
                id: r.id,
                url: r.url,
                host: r.host,
                pid: r.pid,
                version: r.version,
                started_at: r.started_at,
            })
            .collect())
    }
}

/// This machine's name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}
