//! Backups of a home's metadata: every workspace, resource, job, run, metric, user, token and
//! sealed secret, as of one instant, taken while the server keeps working. A backup is a
//! folder named after its time:
//!
//! ```text
//! tarn-backup-20261206T213000.123Z/
//!   tarn.db          the whole store, as a SQLite file (whatever the store is)
//!   vault-key.json   the vault's master key sealed under a passphrase (only when asked)
//!   manifest.json    written last: what the backup holds, with tarn.db's SHA-256
//! ```
//!
//! The snapshot is the store's own consistent read ([`tarn_store::Store::snapshot_to`]: one
//! read transaction, so writes go on); its rows are counted on both sides. The folder is made
//! under a hidden name and renamed when whole (in a datastore, the manifest goes last), so a
//! backup without its manifest is never a complete one. Files in datastores are not in a
//! backup: they stay in their datastores. Restoring is `tarn backup restore`, which reads the
//! folder with [`read_manifest`] into a new home.

use crate::authz::Principal;
use crate::error::{Error, Result};
use crate::storage::Storage;
use crate::{Core, now_ms};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// What a backup's manifest says its format is.
pub const FORMAT: &str = "tarn-backup/1";
pub const DB_FILE: &str = "tarn.db";
pub const KEY_FILE: &str = "vault-key.json";
pub const MANIFEST_FILE: &str = "manifest.json";
/// Every backup's folder name starts so.
pub const PREFIX: &str = "tarn-backup-";
/// The shortest passphrase a vault key is wrapped with.
pub const MIN_PASSPHRASE: usize = 12;

/// What a backup holds (`manifest.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub name: String,
    pub created_at: String,
    pub created_at_ms: i64,
    pub tarn_version: String,
    /// The store it was taken from: `sqlite` or `postgres`.
    pub source_store: String,
    /// Rows per table.
    pub tables: BTreeMap<String, u64>,
    pub database: FileSum,
    /// Whether `vault-key.json` is there.
    pub vault_key: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileSum {
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
}

/// Where backups go.
#[derive(Clone, Debug, PartialEq)]
pub enum Destination {
    /// A folder on the server's machine.
    Dir(PathBuf),
    /// A folder in a workspace's datastore (`azureml://datastores/<ds>/paths/<p>`).
    Datastore {
        workspace: String,
        datastore: String,
        path: String,
    },
}

impl Destination {
    /// Reads `--backup-to`/`--to`: an `azureml://` datastore URI (its workspace from the URI's
    /// long form or `workspace`) or an absolute folder.
    pub fn parse(text: &str, workspace: Option<&str>) -> Result<Destination> {
        if text.starts_with("azureml://") {
            let bad = |why: String| Error::invalid("to", why);
            match tarn_spec::uri::parse(text).map_err(|e| bad(e.to_string()))? {
                tarn_spec::uri::DataUri::Datastore {
                    workspace: named,
                    datastore,
                    path,
                } => {
                    let workspace = named.or(workspace.map(str::to_string)).ok_or_else(|| {
                        bad("a datastore URI needs its workspace: pass --workspace".into())
                    })?;
                    Ok(Destination::Datastore {
                        workspace,
                        datastore,
                        path: path.as_str().trim_end_matches('/').to_string(),
                    })
                }
                _ => Err(bad(format!(
                    "{text} is not a datastore path (azureml://datastores/<datastore>/paths/<folder>)"
                ))),
            }
        } else {
            let path = PathBuf::from(text);
            if !path.is_absolute() {
                return Err(Error::invalid(
                    "to",
                    format!("{text} is not an absolute folder"),
                ));
            }
            Ok(Destination::Dir(path))
        }
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Dir(p) => write!(f, "{}", p.display()),
            Destination::Datastore {
                workspace,
                datastore,
                path,
            } => write!(
                f,
                "azureml://datastores/{datastore}/paths/{path} (workspace {workspace})"
            ),
        }
    }
}

/// `tarn up --backup-every … --backup-to …`.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub every: Duration,
    pub to: Destination,
    /// How many backups are kept there (the oldest go).
    pub keep: usize,
    /// With a passphrase, each backup holds the vault key wrapped with it.
    pub passphrase: Option<String>,
}

/// A backup folder made on the server's machine.
pub struct Made {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

pub struct Backups {
    core: Arc<Core>,
    storage: Arc<Storage>,
    schedule: OnceLock<Schedule>,
}

crate::service_on_core!(Backups);

/// When the last scheduled backup was made (any server's), in the store's `meta`.
const LAST_META: &str = "backup.last_at";

/// Checks a passphrase for a wrapped vault key.
pub fn check_passphrase(passphrase: &str) -> Result<()> {
    if passphrase.chars().count() < MIN_PASSPHRASE {
        return Err(Error::invalid(
            "passphrase",
            format!("a passphrase for the vault key has at least {MIN_PASSPHRASE} characters"),
        ));
    }
    Ok(())
}

impl Backups {
    pub(crate) fn new(core: Arc<Core>, storage: Arc<Storage>) -> Backups {
        Backups {
            core,
            storage,
            schedule: OnceLock::new(),
        }
    }

    /// Makes a backup in a new folder under `parent` on this machine (administrators only);
    /// with a passphrase it holds the vault key wrapped with it.
    pub async fn create_in_dir(
        &self,
        p: &Principal,
        parent: &Path,
        passphrase: Option<&str>,
    ) -> Result<Made> {
        crate::users::admin_only(p, "make backups")?;
        if let Some(pass) = passphrase {
            check_passphrase(pass)?;
        }
        let created_at_ms = now_ms();
        let name = backup_name(created_at_ms);
        std::fs::create_dir_all(parent).map_err(Error::Io)?;
        let partial = parent.join(format!(".{name}.partial"));
        let made = self
            .write_folder(&partial, &name, created_at_ms, passphrase)
            .await;
        let manifest = match made {
            Ok(m) => m,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&partial);
                return Err(e);
            }
        };
        let dir = parent.join(&name);
        std::fs::rename(&partial, &dir).map_err(Error::Io)?;
        tracing::info!(backup = %dir.display(), "backup made");
        Ok(Made { dir, manifest })
    }

    /// Makes a backup at `to` (administrators only): a folder, or a folder in a datastore
    /// (through a temporary folder in the home).
    pub async fn create(
        &self,
        p: &Principal,
        to: &Destination,
        passphrase: Option<&str>,
    ) -> Result<Made> {
        match to {
            Destination::Dir(parent) => self.create_in_dir(p, parent, passphrase).await,
            Destination::Datastore {
                workspace,
                datastore,
                path,
            } => {
                let staging = self.staging_dir();
                let made = self.create_in_dir(p, &staging, passphrase).await?;
                let uploaded = self.upload(p, &made, workspace, datastore, path).await;
                let _ = std::fs::remove_dir_all(&made.dir);
                uploaded?;
                Ok(made)
            }
        }
    }

    /// A private folder in the home for backups on their way elsewhere.
    pub fn staging_dir(&self) -> PathBuf {
        self.config.home.join("backups-staging")
    }

    async fn upload(
        &self,
        p: &Principal,
        made: &Made,
        workspace: &str,
        datastore: &str,
        path: &str,
    ) -> Result<()> {
        let folder = join(path, &made.manifest.name);
        // The manifest last: a folder without one is not a whole backup.
        let mut files = vec![DB_FILE];
        if made.manifest.vault_key {
            files.push(KEY_FILE);
        }
        files.push(MANIFEST_FILE);
        for file in files {
            let local = made.dir.join(file);
            let sha = checksum(&local)?.0;
            let handle = tokio::fs::File::open(&local).await.map_err(Error::Io)?;
            let body = file_stream(handle);
            self.storage
                .upload(
                    p,
                    workspace,
                    datastore,
                    &join(&folder, file),
                    body,
                    Some(&sha),
                )
                .await?;
        }
        Ok(())
    }

    /// Writes the snapshot, the wrapped key and the manifest into `dir` (new).
    async fn write_folder(
        &self,
        dir: &Path,
        name: &str,
        created_at_ms: i64,
        passphrase: Option<&str>,
    ) -> Result<Manifest> {
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(Error::Io)?;
        }
        let db = dir.join(DB_FILE);
        let counts = self.store.snapshot_to(&db).await?;
        for leftover in ["tarn.db-wal", "tarn.db-shm"] {
            let _ = std::fs::remove_file(dir.join(leftover));
        }
        let (sha256, bytes) = checksum(&db)?;
        if let Some(pass) = passphrase {
            let wrapped = self.vault.wrap_key(pass)?;
            crate::vault::write_private(
                &dir.join(KEY_FILE),
                &serde_json::to_string_pretty(&wrapped).expect("serializable"),
            )
            .map_err(Error::Io)?;
        }
        let manifest = Manifest {
            format: FORMAT.into(),
            name: name.into(),
            created_at: rfc3339(created_at_ms),
            created_at_ms,
            tarn_version: env!("CARGO_PKG_VERSION").into(),
            source_store: if self.store.shared() {
                "postgres"
            } else {
                "sqlite"
            }
            .into(),
            tables: counts
                .iter()
                .map(|c| (c.table.to_string(), c.rows))
                .collect(),
            database: FileSum {
                file: DB_FILE.into(),
                bytes,
                sha256,
            },
            vault_key: passphrase.is_some(),
        };
        crate::vault::write_private(
            &dir.join(MANIFEST_FILE),
            &serde_json::to_string_pretty(&manifest).expect("serializable"),
        )
        .map_err(Error::Io)?;
        Ok(manifest)
    }

    /// Drops all but the newest `keep` whole backups at `to`; returns the names dropped.
    pub async fn prune(&self, p: &Principal, to: &Destination, keep: usize) -> Result<Vec<String>> {
        crate::users::admin_only(p, "remove backups")?;
        let mut names = match to {
            Destination::Dir(parent) => local_backups(parent)?,
            Destination::Datastore {
                workspace,
                datastore,
                path,
            } => {
                let listing = self
                    .storage
                    .list_paths(p, workspace, datastore, &format!("{path}/"), false)
                    .await?;
                listing
                    .folders
                    .iter()
                    .filter_map(|f| f.trim_end_matches('/').rsplit('/').next())
                    .filter(|n| n.starts_with(PREFIX))
                    .map(str::to_string)
                    .collect()
            }
        };
        names.sort();
        let drop = names.len().saturating_sub(keep);
        let dropped: Vec<String> = names.into_iter().take(drop).collect();
        for name in &dropped {
            match to {
                Destination::Dir(parent) => {
                    std::fs::remove_dir_all(parent.join(name)).map_err(Error::Io)?
                }
                Destination::Datastore {
                    workspace,
                    datastore,
                    path,
                } => {
                    let folder = join(path, name);
                    // The manifest first: a half-removed backup is then no longer whole.
                    for file in [MANIFEST_FILE, KEY_FILE, DB_FILE] {
                        match self
                            .storage
                            .delete_path(p, workspace, datastore, &join(&folder, file))
                            .await
                        {
                            Ok(()) | Err(Error::NotFound { .. }) => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
            tracing::info!(backup = %name, "old backup removed");
        }
        Ok(dropped)
    }

    /// Sets `tarn up --backup-every`; [`Backups::start`] then makes them.
    pub fn set_schedule(&self, schedule: Schedule) {
        let _ = self.schedule.set(schedule);
    }

    /// Makes scheduled backups on the server that leads: one when the last is `every` old
    /// (or there is none), then keeps the newest `keep`.
    pub fn start(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let schedule = self.schedule.get()?.clone();
        let check = schedule.every.min(Duration::from_secs(60));
        Some(
            self.spawn_task("backups", check, Default::default(), self, move |backups| {
                let schedule = schedule.clone();
                async move { backups.scheduled(&schedule).await }
            }),
        )
    }

    async fn scheduled(&self, schedule: &Schedule) -> Result<()> {
        let last = self
            .store
            .get_meta(LAST_META)
            .await?
            .and_then(|v| v.parse::<i64>().ok());
        if last.is_some_and(|at| now_ms() - at < schedule.every.as_millis() as i64) {
            return Ok(());
        }
        let system = Principal::system("backups");
        let made = self
            .create(&system, &schedule.to, schedule.passphrase.as_deref())
            .await?;
        self.store
            .set_meta(LAST_META, &made.manifest.created_at_ms.to_string())
            .await?;
        self.prune(&system, &schedule.to, schedule.keep).await?;
        Ok(())
    }
}

/// The whole backups in a local folder, by name.
pub fn local_backups(parent: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(parent) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(Error::Io(e)),
    };
    let mut names = vec![];
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with(PREFIX) && entry.path().join(MANIFEST_FILE).is_file() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Reads and checks a backup folder: its manifest's format, and that `tarn.db` is the file
/// the manifest describes (size and SHA-256). `dir` may also be a folder of backups: the
/// newest is taken.
pub fn read_manifest(dir: &Path) -> Result<(PathBuf, Manifest)> {
    let dir = if dir.join(MANIFEST_FILE).is_file() {
        dir.to_path_buf()
    } else {
        match local_backups(dir)?.pop() {
            Some(newest) => dir.join(newest),
            None => {
                return Err(Error::invalid(
                    "from",
                    format!(
                        "{} holds no backup (no {MANIFEST_FILE}, and no {PREFIX}* folder with one)",
                        dir.display()
                    ),
                ));
            }
        }
    };
    let text = std::fs::read_to_string(dir.join(MANIFEST_FILE)).map_err(Error::Io)?;
    let manifest: Manifest = serde_json::from_str(&text).map_err(|e| {
        Error::invalid(
            "from",
            format!(
                "{}: not a Tarn backup manifest: {e}",
                dir.join(MANIFEST_FILE).display()
            ),
        )
    })?;
    if manifest.format != FORMAT {
        return Err(Error::invalid(
            "from",
            format!(
                "the backup's format is {:?}; this Tarn reads {FORMAT:?}",
                manifest.format
            ),
        ));
    }
    // The file is always `tarn.db`: a manifest naming another is not trusted to point anywhere.
    if manifest.database.file != DB_FILE {
        return Err(Error::invalid(
            "from",
            format!(
                "the manifest names the database {:?}; a backup's is {DB_FILE:?}",
                manifest.database.file
            ),
        ));
    }
    let (sha, bytes) = checksum(&dir.join(DB_FILE))?;
    if sha != manifest.database.sha256 || bytes != manifest.database.bytes {
        return Err(Error::invalid(
            "from",
            format!(
                "{} is not the file the manifest describes ({bytes} bytes, SHA-256 {sha}; the manifest says {} bytes, {}): the backup is damaged",
                dir.join(DB_FILE).display(),
                manifest.database.bytes,
                manifest.database.sha256
            ),
        ));
    }
    Ok((dir, manifest))
}

/// A backup's name from its time: `tarn-backup-20261206T213000.123Z` (names sort by time).
fn backup_name(at_ms: i64) -> String {
    let stamp: String = rfc3339(at_ms)
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    format!("{PREFIX}{stamp}")
}

fn rfc3339(at_ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_millis(at_ms.max(0) as u64);
    humantime::format_rfc3339_millis(at).to_string()
}

fn join(folder: &str, name: &str) -> String {
    if folder.is_empty() {
        name.to_string()
    } else {
        format!("{}/{name}", folder.trim_end_matches('/'))
    }
}

/// The hex SHA-256 and the size of a file.
fn checksum(path: &Path) -> Result<(String, u64)> {
    let sha = crate::process::sha256_file(path).map_err(Error::Io)?;
    let bytes = std::fs::metadata(path).map_err(Error::Io)?.len();
    Ok((sha, bytes))
}

/// A file as a stream of chunks, for an upload.
pub fn file_stream(
    file: tokio::fs::File,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send {
    use tokio::io::AsyncReadExt;
    futures::stream::unfold(Some(file), |state| async move {
        let mut file = state?;
        let mut buf = vec![0u8; 1 << 20];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_time_and_destinations_read() {
        let a = backup_name(1_796_000_000_000);
        let b = backup_name(1_796_000_000_001);
        assert!(a < b, "{a} {b}");
        assert!(a.starts_with(PREFIX) && a.ends_with('Z'), "{a}");
        assert!(!a.contains(':'), "{a}");
        assert_eq!(
            Destination::parse("/srv/backups", None).unwrap(),
            Destination::Dir("/srv/backups".into())
        );
        assert!(Destination::parse("backups", None).is_err());
        assert_eq!(
            Destination::parse("azureml://datastores/store/paths/tarn/backups/", Some("w"))
                .unwrap(),
            Destination::Datastore {
                workspace: "w".into(),
                datastore: "store".into(),
                path: "tarn/backups".into()
            }
        );
        assert!(Destination::parse("azureml://datastores/store/paths/b", None).is_err());
        assert!(Destination::parse("azureml://jobs/j/outputs/o", Some("w")).is_err());
        assert!(check_passphrase("short").is_err());
        assert!(check_passphrase("a long enough passphrase").is_ok());
    }
}
