//! Opening a datastore's backend and moving objects through it.

use crate::errors::{StorageError, classify, redact};
use crate::{PART_CONCURRENCY, PART_SIZE, SHA256_METADATA};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, Attributes, ClientOptions, ObjectStore, ObjectStoreExt, PutMultipartOptions,
    PutOptions, PutPayload, RetryConfig, WriteMultipart,
};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tarn_spec::digest::hex;
use tarn_spec::uri::StorePath;

/// An opened datastore.
pub struct Datastore {
    store: Arc<dyn ObjectStore>,
    /// The folder inside the container or bucket this datastore is rooted at.
    root: String,
    /// Whether the backend keeps user metadata (the SHA-256 of each object).
    metadata: bool,
    /// Secret values, scrubbed from every error message.
    secrets: Vec<String>,
    /// For local directories: the directory, read directly with large buffers
    /// (`object_store` reads local files 8 KiB at a time, each on a blocking thread).
    local_dir: Option<std::path::PathBuf>,
}

/// What is known about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    /// Hex SHA-256, when the backend kept it (all but local directories) or it was computed.
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub size: u64,
    /// Milliseconds since the epoch.
    pub modified: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub files: Vec<Entry>,
    /// Immediate sub-folders (non-recursive listings only), with a trailing `/`.
    pub folders: Vec<String>,
}

fn text<'a>(spec: &'a Json, key: &str) -> Option<&'a str> {
    spec.get(key)
        .and_then(Json::as_str)
        .filter(|s| !s.is_empty())
}

fn config(message: impl Into<String>) -> StorageError {
    StorageError::Config(message.into())
}

fn client_options() -> ClientOptions {
    ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(120))
        .with_allow_http(true)
}

fn retry() -> RetryConfig {
    RetryConfig {
        max_retries: 2,
        retry_timeout: Duration::from_secs(15),
        ..Default::default()
    }
}

fn secret_strings(v: &Json, out: &mut Vec<String>) {
    match v {
        Json::String(s) => out.push(s.clone()),
        Json::Array(items) => items.iter().for_each(|i| secret_strings(i, out)),
        Json::Object(map) => map.values().for_each(|i| secret_strings(i, out)),
        _ => {}
    }
}

/// Opens the backend a datastore spec describes. `spec` carries its credentials (decrypted
/// from the vault by the caller); relative local paths are not accepted here.
pub fn open(spec: &Json) -> Result<Datastore, StorageError> {
    let creds = spec
        .get("credentials")
        .filter(|c| c.is_object())
        .cloned()
        .unwrap_or(Json::Null);
    let mut secrets = vec![];
    secret_strings(&creds, &mut secrets);
    let cred = |k: &str| creds.get(k).and_then(Json::as_str).map(str::to_string);
    let root = text(spec, "prefix")
        .unwrap_or("")
        .trim_matches('/')
        .to_string();
    if !root.is_empty() {
        StorePath::parse(&root).map_err(|e| config(e.to_string()))?;
    }
    let kind = text(spec, "type").unwrap_or_default();
    let fail = |e: object_store::Error| config(redact(&e.to_string(), &secrets));
    let mut local_dir = None;
    let (store, metadata): (Arc<dyn ObjectStore>, bool) = match kind {
        "local" | "azure_file" => {
            let Some(dir) = text(spec, "path") else {
                return Err(StorageError::Unsupported(
                    "Azure Files shares are reached through a mount: mount the share (SMB or NFS) and set `path:` to the mount point"
                        .into(),
                ));
            };
            let dir = std::path::Path::new(dir);
            if !dir.is_absolute() {
                return Err(config(format!(
                    "local datastore path {dir:?} must be absolute"
                )));
            }
            std::fs::create_dir_all(dir).map_err(|e| {
                StorageError::Denied(format!("cannot create {}: {e}", dir.display()))
            })?;
            let local = object_store::local::LocalFileSystem::new_with_prefix(dir)
                .map_err(fail)?
                .with_automatic_cleanup(true);
            local_dir = Some(dir.to_path_buf());
            (Arc::new(local), false)
        }
        "azure_blob" | "azure_data_lake_gen2" => {
            let account =
                text(spec, "account_name").ok_or_else(|| config("account_name is missing"))?;
            let container = text(spec, "container_name")
                .or_else(|| text(spec, "filesystem"))
                .ok_or_else(|| config("container is missing"))?;
            let endpoint = text(spec, "endpoint").unwrap_or("core.windows.net");
            // Tarn accepts a full service URL as `endpoint` (e.g. Azurite's); Azure's own YAML
            // gives the DNS suffix.
            let url = if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
                endpoint.trim_end_matches('/').to_string()
            } else {
                format!("https://{account}.blob.{endpoint}")
            };
            let mut b = object_store::azure::MicrosoftAzureBuilder::new()
                .with_account(account)
                .with_container_name(container)
                .with_endpoint(url)
                .with_allow_http(true)
                .with_client_options(client_options())
                .with_retry(retry());
            if let Some(key) = cred("account_key") {
                b = b.with_access_key(key);
            } else if let Some(sas) = cred("sas_token") {
                let pairs: Vec<(String, String)> = sas
                    .trim_start_matches('?')
                    .split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), percent_decode(v)))
                    .collect();
                b = b.with_sas_authorization(pairs);
            } else if let (Some(id), Some(secret), Some(tenant)) =
                (cred("client_id"), cred("client_secret"), cred("tenant_id"))
            {
                b = b.with_client_secret_authorization(id, secret, tenant);
            } else {
                b = b.with_skip_signature(true);
            }
            (Arc::new(b.build().map_err(fail)?), true)
        }
        "s3" => {
            let bucket = text(spec, "bucket").ok_or_else(|| config("bucket is missing"))?;
            let mut b = object_store::aws::AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_region(text(spec, "region").unwrap_or("us-east-1"))
                .with_client_options(client_options())
                .with_retry(retry());
            if let Some(endpoint) = text(spec, "endpoint_url") {
                b = b
                    .with_endpoint(endpoint)
                    .with_virtual_hosted_style_request(false)
                    .with_allow_http(true);
            }
            match (cred("access_key_id"), cred("secret_access_key")) {
                (Some(id), Some(secret)) => {
                    b = b.with_access_key_id(id).with_secret_access_key(secret);
                    if let Some(token) = cred("session_token") {
                        b = b.with_token(token);
                    }
                }
                _ => b = b.with_skip_signature(true),
            }
            (Arc::new(b.build().map_err(fail)?), true)
        }
        "gcs" => {
            let bucket = text(spec, "bucket").ok_or_else(|| config("bucket is missing"))?;
            let mut b = object_store::gcp::GoogleCloudStorageBuilder::new()
                .with_bucket_name(bucket)
                .with_client_options(client_options())
                .with_retry(retry());
            match creds.get("service_account_key") {
                Some(Json::String(s)) => b = b.with_service_account_key(s),
                Some(key @ Json::Object(_)) => b = b.with_service_account_key(key.to_string()),
                _ => b = b.with_skip_signature(true),
            }
            (Arc::new(b.build().map_err(fail)?), true)
        }
        "azure_data_lake_gen1" => {
            return Err(StorageError::Unsupported(
                "Azure Data Lake Gen1 was retired by Microsoft in 2024; Tarn keeps the datastore but cannot transfer data".into(),
            ));
        }
        other => {
            return Err(StorageError::Unsupported(format!(
                "datastores of type {other:?} cannot transfer data yet"
            )));
        }
    };
    Ok(Datastore {
        store,
        root,
        metadata,
        secrets,
        local_dir,
    })
}

/// Decodes `%XX` escapes (a URI's path or query part); anything else is kept as it is.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes[i] == b'%' && i + 2 < bytes.len() + 1)
            .then(|| {
                s.get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .flatten();
        match decoded {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Datastore {
    /// The object key of a path: kept as written (unicode and spaces included), which
    /// `StorePath` has already checked; `ObjectPath::from` would percent-encode it instead.
    fn object(&self, path: &StorePath) -> ObjectPath {
        let p = path.as_str().trim_end_matches('/');
        let full = match (self.root.is_empty(), p.is_empty()) {
            (true, _) => p.to_string(),
            (false, true) => self.root.clone(),
            (false, false) => format!("{}/{p}", self.root),
        };
        ObjectPath::parse(&full).unwrap_or_else(|_| ObjectPath::from(full.as_str()))
    }

    fn relative(&self, location: &ObjectPath) -> String {
        let full = location.as_ref();
        if self.root.is_empty() {
            return full.to_string();
        }
        full.strip_prefix(&self.root)
            .map(|r| r.trim_start_matches('/'))
            .unwrap_or(full)
            .to_string()
    }

    fn err(&self, e: object_store::Error, what: &StorePath) -> StorageError {
        classify(&e, what.as_str(), &self.secrets)
    }

    /// Checks that the datastore is reachable, the container exists, and the credentials may
    /// list, write and delete: by listing the root and writing then removing a probe object.
    pub async fn check(&self) -> Result<(), StorageError> {
        let root = StorePath::root();
        let prefix = (!self.root.is_empty()).then(|| ObjectPath::from(self.root.as_str()));
        self.store
            .list_with_delimiter(prefix.as_ref())
            .await
            .map_err(|e| self.err(e, &root))?;
        let probe = StorePath::parse(&format!(".tarn-probe-{}", uuid::Uuid::new_v4()))
            .expect("a valid probe name");
        self.store
            .put(&self.object(&probe), PutPayload::from_static(b"tarn"))
            .await
            .map_err(|e| self.err(e, &probe))?;
        self.store
            .delete(&self.object(&probe))
            .await
            .map_err(|e| self.err(e, &probe))?;
        Ok(())
    }

    /// Writes a stream to `path`: one request when it is small, in parallel parts otherwise.
    /// When `expected_sha256` is given, a mismatch removes the object and fails.
    pub async fn put_stream<S, E>(
        &self,
        path: &StorePath,
        body: S,
        expected_sha256: Option<&str>,
    ) -> Result<ObjectInfo, StorageError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        if path.is_folder() {
            return Err(config(format!("{path:?} names a folder; give a file path")));
        }
        let location = self.object(path);
        let mut attributes = Attributes::new();
        if let (true, Some(sha)) = (self.metadata, expected_sha256) {
            attributes.insert(
                Attribute::Metadata(SHA256_METADATA.into()),
                sha.to_string().into(),
            );
        }
        let mut body = std::pin::pin!(body);
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut first = Vec::new();
        let read_err = |e: E| StorageError::Other(format!("reading the upload: {e}"));
        // Buffer up to one part: small objects go in a single request.
        let mut finished = false;
        while first.len() < PART_SIZE {
            match body.next().await {
                Some(chunk) => {
                    let chunk = chunk.map_err(read_err)?;
                    hasher.update(&chunk);
                    size += chunk.len() as u64;
                    first.extend_from_slice(&chunk);
                }
                None => {
                    finished = true;
                    break;
                }
            }
        }
        let sha = if finished {
            let sha = hex(&hasher.finalize());
            check_sha(&sha, expected_sha256)?;
            let opts = PutOptions {
                attributes,
                ..Default::default()
            };
            self.store
                .put_opts(&location, PutPayload::from(first), opts)
                .await
                .map_err(|e| self.err(e, path))?;
            sha
        } else {
            let opts = PutMultipartOptions {
                attributes,
                ..Default::default()
            };
            let upload = self
                .store
                .put_multipart_opts(&location, opts)
                .await
                .map_err(|e| self.err(e, path))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            writer.put(Bytes::from(first));
            let streamed: Result<(), StorageError> = async {
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.map_err(read_err)?;
                    hasher.update(&chunk);
                    size += chunk.len() as u64;
                    writer
                        .wait_for_capacity(PART_CONCURRENCY)
                        .await
                        .map_err(|e| self.err(e, path))?;
                    writer.put(chunk);
                }
                Ok(())
            }
            .await;
            let sha = hex(&hasher.finalize());
            let verdict = streamed.and_then(|()| check_sha(&sha, expected_sha256));
            if let Err(e) = verdict {
                let _ = writer.abort().await;
                return Err(e);
            }
            writer.finish().await.map_err(|e| self.err(e, path))?;
            sha
        };
        Ok(ObjectInfo {
            size,
            sha256: Some(sha),
        })
    }

    /// Size and checksum of a file, or `None` when it does not exist.
    pub async fn head(&self, path: &StorePath) -> Result<Option<ObjectInfo>, StorageError> {
        let opts = object_store::GetOptions {
            head: true,
            ..Default::default()
        };
        match self.store.get_opts(&self.object(path), opts).await {
            Ok(got) => Ok(Some(ObjectInfo {
                size: got.meta.size,
                sha256: sha_of(&got.attributes),
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => match self.err(e, path) {
                StorageError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    /// Streams a file.
    pub async fn get_stream(
        &self,
        path: &StorePath,
    ) -> Result<(ObjectInfo, BoxStream<'static, Result<Bytes, StorageError>>), StorageError> {
        if let Some(dir) = &self.local_dir {
            let file_path = dir.join(self.object(path).as_ref());
            let file = match tokio::fs::File::open(&file_path).await {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(StorageError::NotFound(path.to_string()));
                }
                Err(e) => return Err(StorageError::Other(format!("reading {path}: {e}"))),
            };
            let meta = file
                .metadata()
                .await
                .map_err(|e| StorageError::Other(format!("reading {path}: {e}")))?;
            if !meta.is_file() {
                return Err(StorageError::NotFound(path.to_string()));
            }
            let what = path.to_string();
            let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024)
                .map_err(move |e| StorageError::Other(format!("reading {what}: {e}")))
                .boxed();
            return Ok((
                ObjectInfo {
                    size: meta.len(),
                    sha256: None,
                },
                stream,
            ));
        }
        let got = self
            .store
            .get(&self.object(path))
            .await
            .map_err(|e| self.err(e, path))?;
        let info = ObjectInfo {
            size: got.meta.size,
            sha256: sha_of(&got.attributes),
        };
        let secrets = self.secrets.clone();
        let what = path.to_string();
        Ok((
            info,
            got.into_stream()
                .map_err(move |e| classify(&e, &what, &secrets))
                .boxed(),
        ))
    }

    /// Lists a folder: every file below it when `recursive`, else files and sub-folders.
    pub async fn list(&self, prefix: &StorePath, recursive: bool) -> Result<Listing, StorageError> {
        let p = self.object(prefix);
        let p = (!p.as_ref().is_empty()).then_some(p);
        let mut listing = Listing::default();
        if recursive {
            let mut stream = self.store.list(p.as_ref());
            while let Some(meta) = stream.next().await {
                let meta = meta.map_err(|e| self.err(e, prefix))?;
                listing
                    .files
                    .push(entry(self.relative(&meta.location), &meta));
            }
        } else {
            let result = self
                .store
                .list_with_delimiter(p.as_ref())
                .await
                .map_err(|e| self.err(e, prefix))?;
            listing.files = result
                .objects
                .iter()
                .map(|m| entry(self.relative(&m.location), m))
                .collect();
            listing.folders = result
                .common_prefixes
                .iter()
                .map(|f| format!("{}/", self.relative(f)))
                .collect();
        }
        listing
            .files
            .retain(|f| !f.path.starts_with(".tarn-probe-"));
        listing.files.sort_by(|a, b| a.path.cmp(&b.path));
        listing.folders.sort();
        Ok(listing)
    }

    pub async fn delete(&self, path: &StorePath) -> Result<(), StorageError> {
        self.store
            .delete(&self.object(path))
            .await
            .map_err(|e| self.err(e, path))
    }
}

fn entry(path: String, meta: &object_store::ObjectMeta) -> Entry {
    Entry {
        path,
        size: meta.size,
        modified: meta.last_modified.timestamp_millis(),
    }
}

fn sha_of(attributes: &Attributes) -> Option<String> {
    attributes
        .get(&Attribute::Metadata(SHA256_METADATA.into()))
        .map(|v| v.as_ref().to_string())
}

fn check_sha(actual: &str, expected: Option<&str>) -> Result<(), StorageError> {
    match expected {
        Some(e) if !e.eq_ignore_ascii_case(actual) => Err(StorageError::Integrity(format!(
            "the data received has SHA-256 {actual}, the sender said {e}"
        ))),
        _ => Ok(()),
    }
}
