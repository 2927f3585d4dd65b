//! The audit log, as Azure's activity log: every state-changing call (the API, the MLflow
//! surface, the studio's forms) and every read of secrets, with who made it (a person, a
//! service principal or a job), when, from which address, on which resource (method and path;
//! never a body, so never a secret value) and its outcome. The HTTP layer reports each call
//! (`record`); events are written in batches a moment later, off the request's path, so that
//! auditing costs a logging loop nothing it waits for. Events older than the retention
//! (90 days unless `tarn up --audit-retention` says otherwise) are dropped.

use crate::authz::{Action, Principal, Target};
use crate::error::{Error, Result};
use crate::pending::Pending;
use crate::{Core, now_ms};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tarn_store::{AuditFilter, AuditRow};

/// How long events wait to be written together.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// How often old events are dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// The most events that wait to be written: a store that does not take them (down, full)
/// costs the oldest waiting events, counted in the log, never unbounded memory.
const MAX_PENDING: usize = 100_000;
/// The retention unless set: 90 days.
pub const DEFAULT_RETENTION_MS: i64 = 90 * 24 * 3600 * 1000;

pub struct Audit {
    core: Arc<Core>,
    pending: Mutex<Pending<AuditRow>>,
    retention_ms: std::sync::atomic::AtomicI64,
    writer: OnceLock<()>,
}

crate::service_on_core!(Audit);

/// One call, as the HTTP layer saw it.
pub struct Call<'a> {
    pub who: Option<&'a Principal>,
    pub address: String,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    /// The fields it changed, as the services noted them ([`collecting`]).
    pub changes: Vec<String>,
}

tokio::task_local! {
    /// The fields the call being handled changed, noted by the services.
    static CHANGES: std::cell::RefCell<Vec<String>>;
}

/// Runs `f` — one call's handling — and returns what the services noted it changed.
pub async fn collecting<F: std::future::Future>(f: F) -> (F::Output, Vec<String>) {
    CHANGES
        .scope(std::cell::RefCell::new(Vec::new()), async move {
            let out = f.await;
            let changes = CHANGES.with(|c| std::mem::take(&mut *c.borrow_mut()));
            (out, changes)
        })
        .await
}

/// Notes that the call being handled changed these fields of a document (names only: never
/// a value, so never a secret); secrets given anew are noted by name. Outside a call, nothing.
pub(crate) fn note_changes(
    before: &serde_json::Value,
    after: &serde_json::Value,
    secrets: &[String],
) {
    // Compared only when a call is being audited.
    let _ = CHANGES.try_with(|c| {
        let mut c = c.borrow_mut();
        changed_fields(before, after, "", 2, &mut c);
        c.extend(secrets.iter().map(|s| format!("{s} (secret)")));
    });
}

/// The dotted paths at which `a` and `b` differ, `depth` levels into objects at most.
fn changed_fields(
    a: &serde_json::Value,
    b: &serde_json::Value,
    prefix: &str,
    depth: usize,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) if depth > 0 => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(v), Some(w)) => changed_fields(v, w, &path, depth - 1, out),
                    _ => out.push(path),
                }
            }
        }
        _ if a != b => out.push(if prefix.is_empty() {
            "(all)".to_string()
        } else {
            prefix.to_string()
        }),
        _ => {}
    }
}

impl Audit {
    pub(crate) fn new(core: Arc<Core>) -> Audit {
        Audit {
            core,
            pending: Mutex::new(Pending::new(MAX_PENDING)),
            retention_ms: DEFAULT_RETENTION_MS.into(),
            writer: OnceLock::new(),
        }
    }

    /// How long events are kept (`tarn up --audit-retention`).
    pub fn set_retention(&self, ms: i64) {
        self.retention_ms
            .store(ms.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// Records a call; it is written within [`FLUSH_EVERY`].
    pub fn record(self: &Arc<Self>, call: Call<'_>) {
        let (actor, kind) = match call.who {
            Some(p) => (p.name.clone(), p.kind.clone()),
            None => (String::new(), "anonymous".to_string()),
        };
        let workspace = workspace_of(call.path).unwrap_or_default();
        let row = AuditRow {
            id: uuid::Uuid::new_v4().to_string(),
            at: now_ms(),
            actor,
            actor_kind: kind,
            address: call.address,
            method: call.method.to_string(),
            path: call.path.to_string(),
            workspace,
            status: i64::from(call.status),
            changes: call.changes.join(", "),
        };
        self.pending.lock().expect("audit queue").push(row);
        self.writer.get_or_init(|| {
            let audit = self.clone();
            tokio::spawn(async move { audit.write_loop().await });
        });
    }

    async fn write_loop(self: Arc<Self>) {
        let mut pruned = std::time::Instant::now() - PRUNE_EVERY;
        loop {
            tokio::time::sleep(FLUSH_EVERY).await;
            if let Err(e) = self.flush().await {
                tracing::warn!("could not write audit events: {e}");
            }
            if pruned.elapsed() >= PRUNE_EVERY {
                pruned = std::time::Instant::now();
                let keep = self.retention_ms.load(std::sync::atomic::Ordering::Relaxed);
                if let Err(e) = self.store.prune_audit(now_ms() - keep).await {
                    tracing::warn!("could not drop old audit events: {e}");
                }
            }
        }
    }

    /// Writes what is waiting (also before a listing, so that this server's own latest
    /// events are in it). Events that fail to be written wait for the next try.
    async fn flush(&self) -> Result<()> {
        let (batch, dropped) = {
            let mut pending = self.pending.lock().expect("audit queue");
            (pending.take(), std::mem::take(&mut pending.dropped))
        };
        if dropped > 0 {
            tracing::warn!(
                "the audit log could not be written for a while: {dropped} oldest waiting event(s) dropped"
            );
        }
        if batch.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.store.record_audit(&batch).await {
            self.pending.lock().expect("audit queue").put_back(batch);
            return Err(e.into());
        }
        Ok(())
    }

    /// Events, newest first: administrators see everyone's; a workspace's Owners see its own
    /// (they must name it).
    pub async fn list(
        &self,
        p: &Principal,
        actor: Option<&str>,
        workspace: Option<&str>,
        since: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditRow>> {
        if !p.is_admin {
            let Some(ws) = workspace else {
                return Err(Error::Forbidden(
                    "only administrators see the whole audit log; a workspace's Owners see \
                     its own with --workspace"
                        .into(),
                ));
            };
            self.authorized_workspace(p, ws, Target::RoleAssignments, Action::Write)
                .await?;
        }
        self.flush().await?;
        Ok(self
            .store
            .list_audit(&AuditFilter {
                actor,
                workspace,
                since,
                limit,
            })
            .await?)
    }
}

/// The workspace a path acts in (`/api/v1/workspaces/W/…`, `/ws/W/…`).
fn workspace_of(path: &str) -> Option<String> {
    let rest = path
        .strip_prefix("/api/v1/workspaces/")
        .or_else(|| path.strip_prefix("/ws/"))?;
    let name = rest.split('/').next()?;
    Some(tarn_storage::percent_decode(name))
}

#[cfg(test)]
mod tests {
    #[test]
    fn paths_name_their_workspace() {
        use super::workspace_of;
        assert_eq!(
            workspace_of("/api/v1/workspaces/lab/models").as_deref(),
            Some("lab")
        );
        assert_eq!(
            workspace_of("/api/v1/workspaces/my%20ws").as_deref(),
            Some("my ws")
        );
        assert_eq!(
            workspace_of("/ws/default/mlflow/api/2.0/mlflow/runs/create").as_deref(),
            Some("default")
        );
        assert_eq!(workspace_of("/api/v1/users"), None);
    }

    #[test]
    fn changed_fields_are_named_two_levels_deep() {
        use serde_json::json;
        let mut out = vec![];
        super::changed_fields(
            &json!({"description": "a", "tags": {"team": "x", "keep": 1}, "traffic": {"blue": 100}, "spec": {"deep": {"x": 1}}}),
            &json!({"description": "b", "tags": {"team": "y", "keep": 1}, "traffic": {"blue": 90, "green": 10}, "spec": {"deep": {"x": 2}}, "new": true}),
            "",
            2,
            &mut out,
        );
        assert_eq!(
            out,
            [
                "description",
                "new",
                "spec.deep",
                "tags.team",
                "traffic.blue",
                "traffic.green"
            ]
        );
    }
}
