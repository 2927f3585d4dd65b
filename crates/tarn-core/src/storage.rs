//! Data in datastores: checking a datastore before it is stored, and moving files in and out
//! of it for the API. The server does the transfers so that credentials never leave it.

use crate::Core;
use crate::authz::{Action, Principal, Target};
use crate::error::{Error, Result};
use crate::scope::{Scope, WriteOptions};
use bytes::Bytes;
use futures::Stream;
use futures::stream::BoxStream;
use serde_json::Value as Json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tarn_spec::uri::StorePath;
use tarn_spec::{Diagnostic, Kind};
use tarn_storage::{Datastore, Listing, ObjectInfo, StorageError};
use tarn_store::WorkspaceRow;

/// Opened datastores, reused across requests (opening one builds an HTTP client).
pub(crate) type Cache = Mutex<HashMap<(String, String), (i64, Arc<Datastore>)>>;

fn storage_error(datastore: &str, source: StorageError) -> Error {
    Error::Storage {
        datastore: datastore.to_string(),
        source,
    }
}

/// Checks that a datastore about to be stored works: reachable, container present, credentials
/// allowed to list, write and delete. Types Tarn cannot transfer with are accepted with a warning.
pub(crate) async fn check_datastore(
    name: &str,
    spec_with_secrets: &Json,
    options: WriteOptions,
) -> Result<Vec<Diagnostic>> {
    if options.skip_storage_check {
        return Ok(vec![Diagnostic::warning(
            "",
            None,
            "stored without checking that the storage answers (--skip-check)",
        )]);
    }
    match tarn_storage::open(spec_with_secrets) {
        Ok(ds) => {
            ds.check().await.map_err(|e| storage_error(name, e))?;
            Ok(vec![])
        }
        Err(StorageError::Unsupported(why)) => Ok(vec![Diagnostic::warning(
            "type",
            None,
            format!("stored without a connectivity check: {why}"),
        )]),
        Err(e) => Err(storage_error(name, e)),
    }
}

fn path(raw: &str) -> Result<StorePath> {
    StorePath::parse(raw).map_err(|e| Error::invalid("path", e.to_string()))
}

/// Datastores' files: listing, reading and writing them through the opened datastore.
pub struct Storage {
    core: Arc<Core>,
    /// Opened datastores, by (workspace id, name), with the `updated_at` they were opened at.
    datastores: Cache,
}

crate::service_on_core!(Storage);

impl Storage {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        Storage {
            core,
            datastores: Default::default(),
        }
    }
}

impl Storage {
    /// The opened datastore `name` of a workspace the caller may `action` on.
    async fn datastore(
        &self,
        p: &Principal,
        workspace: &str,
        name: &str,
        action: Action,
    ) -> Result<(WorkspaceRow, Arc<Datastore>)> {
        let ws = self
            .authorized_workspace(p, workspace, Target::Resource(Kind::Datastore), action)
            .await?;
        let scope = Scope {
            workspace,
            kind: Kind::Datastore,
            parent: None,
        };
        let row = self
            .store
            .get_resource(&scope.key(&ws.id, name, ""))
            .await?
            .ok_or_else(|| {
                Error::not_found(format!("datastore {name:?} in workspace {workspace:?}"))
            })?;
        let key = (ws.id.clone(), name.to_string());
        if let Some((at, ds)) = self.datastores.lock().expect("cache lock").get(&key)
            && *at == row.updated_at
        {
            return Ok((ws, ds.clone()));
        }
        let spec = self.with_secrets(&ws.id, &row).await?;
        let ds = Arc::new(tarn_storage::open(&spec).map_err(|e| storage_error(name, e))?);
        self.datastores
            .lock()
            .expect("cache lock")
            .insert(key, (row.updated_at, ds.clone()));
        Ok((ws, ds))
    }

    /// Streams a body into a file of a datastore, verifying `sha256` when given.
    pub async fn upload<S, E>(
        &self,
        p: &Principal,
        workspace: &str,
        datastore: &str,
        raw_path: &str,
        body: S,
        sha256: Option<&str>,
    ) -> Result<ObjectInfo>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let path = path(raw_path)?;
        let (_, ds) = self
            .datastore(p, workspace, datastore, Action::Write)
            .await?;
        ds.put_stream(&path, body, sha256)
            .await
            .map_err(|e| storage_error(datastore, e))
    }

    /// Streams a file out of a datastore.
    pub async fn download(
        &self,
        p: &Principal,
        workspace: &str,
        datastore: &str,
        raw_path: &str,
    ) -> Result<(
        ObjectInfo,
        BoxStream<'static, std::result::Result<Bytes, StorageError>>,
    )> {
        let path = path(raw_path)?;
        let (_, ds) = self
            .datastore(p, workspace, datastore, Action::Read)
            .await?;
        ds.get_stream(&path).await.map_err(|e| match e {
            StorageError::NotFound(what) => {
                Error::not_found(format!("{what:?} in datastore {datastore:?}"))
            }
            e => storage_error(datastore, e),
        })
    }

    /// Size and checksum of a file, or `None`.
    pub async fn stat(
        &self,
        p: &Principal,
        workspace: &str,
        datastore: &str,
        raw_path: &str,
    ) -> Result<Option<ObjectInfo>> {
        let path = path(raw_path)?;
        let (_, ds) = self
            .datastore(p, workspace, datastore, Action::Read)
            .await?;
        ds.head(&path)
            .await
            .map_err(|e| storage_error(datastore, e))
    }

    pub async fn list_paths(
        &self,
        p: &Principal,
        workspace: &str,
        datastore: &str,
        raw_path: &str,
        recursive: bool,
    ) -> Result<Listing> {
        let path = path(raw_path)?;
        let (_, ds) = self
            .datastore(p, workspace, datastore, Action::Read)
            .await?;
        ds.list(&path, recursive)
            .await
            .map_err(|e| storage_error(datastore, e))
    }

    pub async fn delete_path(
        &self,
        p: &Principal,
        workspace: &str,
        datastore: &str,
        raw_path: &str,
    ) -> Result<()> {
        let path = path(raw_path)?;
        let (_, ds) = self
            .datastore(p, workspace, datastore, Action::Delete)
            .await?;
        ds.delete(&path).await.map_err(|e| match e {
            StorageError::NotFound(what) => {
                Error::not_found(format!("{what:?} in datastore {datastore:?}"))
            }
            e => storage_error(datastore, e),
        })
    }
}

/// Transfers of many small files at once (see `tarn_api::bundle`), fanned out to the storage
/// at a bounded concurrency.
const MANY_CONCURRENCY: usize = 32;

impl Storage {
    /// Writes many small files under `dest`; returns what was stored for each, in order.
    pub async fn upload_many(
        &self,
        p: &Principal,
        workspace: &str,
        datastore: &str,
        dest: &str,
        files: Vec<(String, Bytes, Option<String>)>,
    ) -> Result<Vec<(String, ObjectInfo)>> {
        use futures::{StreamExt, TryStreamExt};
        let base = path(dest)?;
        let mut targets = Vec::with_capacity(files.len());
        for (rel, data, sha) in files {
            let target = base
                .join(&rel)
                .map_err(|e| Error::invalid("path", e.to_string()))?;
            targets.push((target, data, sha));
        }
        let (_, ds) = self
            .datastore(p, workspace, datastore, Action::Write)
            .await?;
        futures::stream::iter(targets)
            .map(|(target, data, sha)| {
                let ds = ds.clone();
                async move {
                    let body = futures::stream::iter([Ok::<_, std::io::Error>(data)]);
                    let info = ds
                        .put_stream(&target, body, sha.as_deref())
                        .await
                        .map_err(|e| storage_error(datastore, e))?;
                    Ok::<_, Error>((target.to_string(), info))
                }
            })
            .buffered(MANY_CONCURRENCY)
            .try_collect()
            .await
    }

    /// Reads many small files; returns each with its size and SHA-256, in order.
    pub async fn download_many(
        &self,
        p: &Principal,
        workspace: &str,
        datastore: &str,
        paths: &[String],
    ) -> Result<Vec<(String, ObjectInfo, Bytes)>> {
        use futures::{StreamExt, TryStreamExt};
        let checked: Vec<StorePath> = paths.iter().map(|raw| path(raw)).collect::<Result<_>>()?;
        let (_, ds) = self
            .datastore(p, workspace, datastore, Action::Read)
            .await?;
        futures::stream::iter(checked)
            .map(|target| {
                let ds = ds.clone();
                async move {
                    let (info, stream) = ds.get_stream(&target).await.map_err(|e| match e {
                        StorageError::NotFound(what) => {
                            Error::not_found(format!("{what:?} in datastore {datastore:?}"))
                        }
                        e => storage_error(datastore, e),
                    })?;
                    let chunks: Vec<Bytes> = stream
                        .try_collect()
                        .await
                        .map_err(|e| storage_error(datastore, e))?;
                    let data = Bytes::from(chunks.concat());
                    if data.len() as u64 != info.size {
                        return Err(storage_error(
                            datastore,
                            StorageError::Integrity(format!("{target} changed while it was read")),
                        ));
                    }
                    let sha = tarn_spec::digest::sha256_hex(&data);
                    let info = ObjectInfo {
                        size: data.len() as u64,
                        sha256: Some(sha),
                    };
                    Ok::<_, Error>((target.to_string(), info, data))
                }
            })
            .buffered(MANY_CONCURRENCY)
            .try_collect()
            .await
    }
}
