//! `tarn store migrate`: moves a home's metadata to another store (SQLite to PostgreSQL when a
//! team outgrows one machine, or back). The copy itself is `tarn_store::SqlStore::copy_into`;
//! this checks what only the command line knows: that no server is writing to the source.

use anyhow::{Context, bail};
use tarn_store::Location;

pub async fn migrate(from: &Location, to: &Location) -> anyhow::Result<()> {
    if from == to {
        bail!("--from and --to name the same store");
    }
    // A running server holds its home's lock; a SQLite file it writes cannot be copied whole.
    let _lock = match from {
        Location::Sqlite(path) => {
            if !path.is_file() {
                bail!("there is no store at {from} (no such file)");
            }
            let lock_file = path.with_file_name("tarn.lock");
            match std::fs::OpenOptions::new().write(true).open(&lock_file) {
                Ok(lock) => {
                    if lock.try_lock().is_err() {
                        bail!(
                            "a Tarn server is using {}: stop it first, then migrate",
                            path.display()
                        );
                    }
                    Some(lock)
                }
                Err(_) => None,
            }
        }
        Location::Postgres(_) => None,
    };
    if let Location::Sqlite(path) = to
        && path.exists()
    {
        bail!("{to} exists already: migrate into a new file");
    }
    let source = from
        .open()
        .await
        .with_context(|| format!("cannot open the store {from}"))?;
    let target = to
        .open()
        .await
        .with_context(|| format!("cannot open the store {to}"))?;
    eprintln!("copying {from} to {to}");
    let started = std::time::Instant::now();
    let counts = match source.copy_into(&target).await {
        Ok(counts) => counts,
        Err(e) => {
            target.close().await;
            // A SQLite file this command made goes again; a PostgreSQL database keeps its
            // (empty) schema, the copy being one transaction.
            if let Location::Sqlite(path) = to {
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    let _ = std::fs::remove_file(p);
                }
            }
            return Err(anyhow::Error::new(e)
                .context(format!("copying {from} to {to} failed; nothing was copied")));
        }
    };
    let width = counts.iter().map(|c| c.table.len()).max().unwrap_or(0);
    for c in &counts {
        println!("{:width$}  {}", c.table, c.rows);
    }
    let rows: u64 = counts.iter().map(|c| c.rows).sum();
    eprintln!(
        "copied {rows} rows in {} tables in {:.1} s; every table's row count matches. Start the server with `tarn up --store {to}` and the same vault key file.",
        counts.len(),
        started.elapsed().as_secs_f64()
    );
    source.close().await;
    target.close().await;
    Ok(())
}
