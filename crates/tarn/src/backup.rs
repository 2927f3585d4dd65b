//! `tarn backup`: take a backup from a running server (`create`), see what a folder holds
//! (`list`), and restore one into a new home (`restore`). What a backup is and how it is made
//! is `tarn_core::backup`; this is the command line's side: unpacking the server's tar stream
//! into a folder here, and the restore, which runs with no server (the home is new).

use crate::client::Client;
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use tarn_core::backup::{self, DB_FILE, KEY_FILE, Manifest};
use tarn_store::Location;

/// Where the passphrase comes from: `--passphrase-file`, else `TARN_BACKUP_PASSPHRASE`.
pub fn passphrase(file: Option<&Path>) -> anyhow::Result<Option<String>> {
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the passphrase file {}", file.display()))?;
        let pass = text.trim_end_matches(['\n', '\r']).to_string();
        if pass.is_empty() {
            bail!("the passphrase file {} is empty", file.display());
        }
        return Ok(Some(pass));
    }
    Ok(std::env::var("TARN_BACKUP_PASSPHRASE")
        .ok()
        .filter(|p| !p.is_empty()))
}

/// `tarn backup create --to DIR|azureml://…`.
pub async fn create(
    client: &Client,
    to: &str,
    workspace: Option<String>,
    passphrase: Option<String>,
) -> anyhow::Result<serde_json::Value> {
    if let Some(pass) = &passphrase {
        backup::check_passphrase(pass).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    if to.starts_with("azureml://") {
        let body = serde_json::json!({"to": to, "workspace": workspace, "passphrase": passphrase});
        return client.post("/backups", &body).await;
    }
    let parent = std::path::absolute(to).with_context(|| format!("--to {to}"))?;
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot make the folder {}", parent.display()))?;
    let body = serde_json::json!({"passphrase": passphrase});
    let resp = client
        .send_raw(reqwest::Method::POST, "/backups", Some(&body))
        .await?;
    let name = resp
        .headers()
        .get("x-tarn-backup")
        .and_then(|v| v.to_str().ok())
        .filter(|n| n.starts_with(backup::PREFIX) && !n.contains(['/', '\\']) && *n != "..")
        .map(str::to_string)
        .context("the server's reply names no backup")?;
    // Unpacked under a hidden name, checked, then renamed: never a partial backup in view.
    let partial = parent.join(format!(".{name}.partial"));
    let unpacked = unpack(resp, &partial, &name).await;
    let result = unpacked.and_then(|()| {
        let (_, manifest) =
            backup::read_manifest(&partial.join(&name)).map_err(|e| anyhow::anyhow!("{e}"))?;
        let dir = parent.join(&name);
        std::fs::rename(partial.join(&name), &dir)?;
        Ok((dir, manifest))
    });
    let _ = std::fs::remove_dir_all(&partial);
    let (dir, manifest) = result.context("the backup could not be saved")?;
    Ok(view(&dir.display().to_string(), &manifest))
}

/// Streams the tar reply to a file, then unpacks it into `into` (only `name/…` entries).
async fn unpack(resp: reqwest::Response, into: &Path, name: &str) -> anyhow::Result<()> {
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    crate::server::create_private_dir(into)?;
    let tar_path = into.join("backup.tar");
    let mut file = tokio::fs::File::create(&tar_path).await?;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        file.write_all(&chunk.context("the backup's transfer broke off")?)
            .await?;
    }
    file.sync_all().await?;
    drop(file);
    let (tar_path, into, name) = (tar_path.clone(), into.to_path_buf(), name.to_string());
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut archive = tar::Archive::new(std::fs::File::open(&tar_path)?);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let path = entry.path()?.into_owned();
            if !path.starts_with(&name) {
                bail!("the backup holds an unexpected entry {}", path.display());
            }
            // `unpack_in` refuses entries that would land outside `into`.
            entry.unpack_in(&into)?;
        }
        let key = into.join(&name).join(KEY_FILE);
        if key.exists() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(())
    })
    .await?
}

/// A backup for the user: where it is and what it holds.
pub fn view(location: &str, m: &Manifest) -> serde_json::Value {
    serde_json::json!({
        "name": m.name,
        "location": location,
        "created_at": m.created_at,
        "source_store": m.source_store,
        "bytes": m.database.bytes,
        "vault_key": m.vault_key,
        "rows": m.tables.values().sum::<u64>(),
        "tables": m.tables,
    })
}

/// `tarn backup list --from DIR`: the whole backups in a folder, oldest first.
pub fn list(dir: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut out = vec![];
    for name in backup::local_backups(dir).map_err(|e| anyhow::anyhow!("{e}"))? {
        let path = dir.join(&name);
        let text = std::fs::read_to_string(path.join(backup::MANIFEST_FILE))?;
        let m: Manifest = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a backup manifest", path.display()))?;
        out.push(view(&path.display().to_string(), &m));
    }
    Ok(out)
}

/// What `tarn backup restore` restores into.
pub struct RestoreArgs {
    pub from: PathBuf,
    pub home: PathBuf,
    /// The store to fill (default: a new SQLite file in the home).
    pub store: Option<Location>,
    /// The key of the server that made the backup, when the backup holds none.
    pub vault_key_file: Option<PathBuf>,
    pub passphrase: Option<String>,
}

/// Restores a backup into a new home: checks everything first (the backup's checksum, the
/// passphrase, that the key opens the backup's vault, that the home and store are empty),
/// then copies the store and writes the vault key. On any failure nothing is left behind.
pub async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let (dir, manifest) = backup::read_manifest(&args.from).map_err(|e| anyhow::anyhow!("{e}"))?;
    eprintln!(
        "restoring {} (made {} by Tarn {} from a {} store)",
        manifest.name, manifest.created_at, manifest.tarn_version, manifest.source_store
    );
    // The vault key: unwrapped from the backup, or the file given.
    let key = match (manifest.vault_key, &args.vault_key_file) {
        (_, Some(file)) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the vault key file {}", file.display()))?;
            tarn_core::vault::key_from_text(&text, &file.display().to_string())
                .map_err(|e| anyhow::anyhow!("{e}"))?
        }
        (true, None) => {
            let Some(pass) = &args.passphrase else {
                bail!(
                    "the backup's vault key is wrapped with a passphrase: pass --passphrase-file FILE (or set TARN_BACKUP_PASSPHRASE)"
                );
            };
            let text = std::fs::read_to_string(dir.join(KEY_FILE))
                .with_context(|| format!("cannot read {}", dir.join(KEY_FILE).display()))?;
            let wrapped: tarn_core::vault::WrappedKey = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a wrapped vault key", KEY_FILE))?;
            wrapped
                .unwrap_key(pass)
                .map_err(|e| anyhow::anyhow!("{e}; nothing was restored"))?
        }
        (false, None) => bail!(
            "this backup holds no vault key (it was made without a passphrase): pass --vault-key-file with the key file of the server that made it, whose secrets it holds sealed"
        ),
    };
    let home = &args.home;
    let key_out = home.join("vault.key");
    for taken in [home.join("tarn.db"), key_out.clone()] {
        if taken.exists() {
            bail!(
                "{} exists: restore into a new home (--home DIR) — a restore never overwrites one",
                taken.display()
            );
        }
    }
    let target_location = args
        .store
        .clone()
        .unwrap_or_else(|| Location::Sqlite(home.join("tarn.db")));
    let made_home = !home.exists();
    crate::server::create_private_dir(home)?;
    // The backup's file is opened from a copy (opening migrates an older schema in place).
    let work = home.join(format!(".restore-{}", manifest.name));
    let outcome = restore_into(&dir, &work, &key, &manifest, &target_location)
        .await
        .and_then(|counts| {
            tarn_core::vault::write_private(
                &key_out,
                &tarn_core::vault::Vault::key_file_text(&key),
            )
            .with_context(|| format!("cannot write {}", key_out.display()))?;
            Ok(counts)
        });
    let _ = std::fs::remove_dir_all(&work);
    let counts = match outcome {
        Ok(counts) => counts,
        Err(e) => {
            if let Location::Sqlite(path) = &target_location {
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    let _ = std::fs::remove_file(p);
                }
            }
            if made_home {
                let _ = std::fs::remove_dir(home);
            }
            return Err(e.context("nothing was restored"));
        }
    };
    let rows: u64 = counts.iter().map(|c| c.rows).sum();
    eprintln!(
        "restored {rows} rows in {} tables into {target_location}; vault key in {}. Start it with `tarn up --home {}{}` (a new local administrator token is made; everyone's tokens work as before).",
        counts.len(),
        key_out.display(),
        home.display(),
        match &args.store {
            Some(s) => format!(" --store {s}"),
            None => String::new(),
        }
    );
    Ok(())
}

/// Opens a copy of the backup's store, checks that `key` opens its vault and that its tables
/// hold the rows the manifest says, then copies it into `target` (which checks its counts).
async fn restore_into(
    dir: &Path,
    work: &Path,
    key: &[u8],
    manifest: &Manifest,
    target: &Location,
) -> anyhow::Result<Vec<tarn_store::TableCount>> {
    crate::server::create_private_dir(work)?;
    let copy = work.join(DB_FILE);
    std::fs::copy(dir.join(DB_FILE), &copy)?;
    let source = Location::Sqlite(copy).open().await?;
    let copied = async {
        tarn_core::vault::Vault::with_key(&source, key, "the backup's vault key")
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for table in tarn_store::TABLES {
            let rows = source.count_rows(table).await?;
            let backed = manifest.tables.get(*table).copied().unwrap_or(0);
            if rows != backed {
                bail!(
                    "the backup's {table} table holds {rows} rows but its manifest says {backed}"
                );
            }
        }
        let target = target
            .open()
            .await
            .with_context(|| format!("cannot open the store {target}"))?;
        let copied = source.copy_into(&target).await;
        target.close().await;
        Ok(copied?)
    }
    .await;
    source.close().await;
    copied
}
