//! The one URI resolver: every way a user can point at data (`azureml://datastores/…`, the long
//! ARM form, `tarn://`, job outputs, `https://`, `wasbs://`, `abfss://`, `s3://`, `gs://`, local
//! paths) becomes a [`DataUri`], and every path inside a datastore becomes a [`StorePath`] that
//! cannot escape it.

use std::fmt;

/// A relative path inside a datastore: `/`-separated, no empty, `.` or `..` segments, no
/// backslashes or control characters, and no percent-encoded separators or dots.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePath(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    #[error(
        "{0:?} escapes its datastore: paths may not contain `..`, `.`, empty segments, backslashes or encoded separators"
    )]
    Escapes(String),
    #[error(
        "{0:?} is not a data URI Tarn understands: use azureml://datastores/<name>/paths/<path>, https://…, s3://…, wasbs://…, abfss://…, gs://… or a local path"
    )]
    Unknown(String),
    #[error(transparent)]
    Name(#[from] crate::names::NameError),
}

impl StorePath {
    /// Checks a datastore path. A trailing `/` (a folder) is kept; a leading `/` is not allowed.
    pub fn parse(raw: &str) -> Result<StorePath, UriError> {
        let escapes = || UriError::Escapes(raw.to_string());
        let lowered = raw.to_ascii_lowercase();
        if raw.starts_with('/')
            || raw.contains('\\')
            || raw.chars().any(char::is_control)
            || ["%2f", "%5c", "%2e", "%00"]
                .iter()
                .any(|e| lowered.contains(e))
        {
            return Err(escapes());
        }
        let body = raw.strip_suffix('/').unwrap_or(raw);
        if !body.is_empty()
            && body
                .split('/')
                .any(|seg| seg.is_empty() || seg == "." || seg == "..")
        {
            return Err(escapes());
        }
        Ok(StorePath(raw.to_string()))
    }

    /// The root of a datastore.
    pub fn root() -> StorePath {
        StorePath(String::new())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_folder(&self) -> bool {
        self.0.is_empty() || self.0.ends_with('/')
    }

    /// `self/child`, with `child` checked.
    pub fn join(&self, child: &str) -> Result<StorePath, UriError> {
        let base = self.0.trim_end_matches('/');
        if base.is_empty() {
            StorePath::parse(child)
        } else {
            StorePath::parse(&format!("{base}/{child}"))
        }
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a URI points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataUri {
    /// A path in a datastore of this workspace (`workspace` is set by the long form).
    Datastore {
        workspace: Option<String>,
        datastore: String,
        path: StorePath,
    },
    /// `azureml://jobs/<job>/outputs/<output>/paths/<path>` (`artifacts` is the run's store).
    JobOutput {
        job: String,
        output: String,
        path: StorePath,
    },
    /// `http(s)://…`: read-only inputs.
    Web(String),
    /// A URI for a storage service, used as given: `wasbs`, `abfss`, `s3`, `gs`.
    Service {
        scheme: String,
        container: String,
        account: Option<String>,
        path: StorePath,
    },
    /// MLflow's `runs:/<run>/<path>` and `models:/<name>/<version>`, resolved by tracking.
    Mlflow(String),
    /// A local file or folder (relative paths are relative to the YAML file).
    Local(String),
    /// `git+https://host/repo.git[@ref][#subdirectory=path]` (pip's VCS form, over HTTP(S)):
    /// code from a git repository.
    Git(GitSource),
}

/// A git repository, a branch, tag or commit in it, and a folder in that.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GitSource {
    /// The repository's URL, without `git+`, the ref or the fragment.
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// A folder in it, checked as a [`StorePath`] (no `..`, not absolute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdirectory: Option<String>,
}

fn parse_git(rest: &str, whole: &str) -> Result<GitSource, UriError> {
    let unknown = || UriError::Unknown(whole.to_string());
    let (main, fragment) = match rest.split_once('#') {
        Some((m, f)) => (m, Some(f)),
        None => (rest, None),
    };
    let (scheme, after) = main.split_once("://").ok_or_else(unknown)?;
    // Over HTTP(S) only: `ssh://` would use the server's own keys and `file://` its disks.
    if !["https", "http"].contains(&scheme) {
        return Err(unknown());
    }
    // `@ref` after the path (an `@` in the host part is a user name).
    let path_start = after.find('/').unwrap_or(after.len());
    let (url, reference) = match after[path_start..].rsplit_once('@') {
        Some((path, r)) if !r.is_empty() && !path.is_empty() => (
            format!("{scheme}://{}{path}", &after[..path_start]),
            Some(r.to_string()),
        ),
        _ => (format!("{scheme}://{after}"), None),
    };
    let subdirectory = match fragment {
        None => None,
        Some(f) => match f.strip_prefix("subdirectory=") {
            Some(dir) if !dir.is_empty() => Some(
                StorePath::parse(dir.trim_end_matches('/'))?
                    .as_str()
                    .to_string(),
            ),
            _ => return Err(unknown()),
        },
    };
    if reference.as_deref().is_some_and(|r| {
        r.starts_with('-') || r.chars().any(|c| c.is_whitespace() || c.is_control())
    }) {
        return Err(unknown());
    }
    Ok(GitSource {
        url,
        reference,
        subdirectory,
    })
}

/// Parses any data URI. Local paths are returned as written, to be resolved by the caller.
pub fn parse(uri: &str) -> Result<DataUri, UriError> {
    use crate::names::{NameRule, check};
    let unknown = || UriError::Unknown(uri.to_string());
    if let Some(rest) = uri
        .strip_prefix("azureml://")
        .or_else(|| uri.strip_prefix("tarn://"))
    {
        let parts: Vec<&str> = rest.splitn(2, "/paths/").collect();
        let (head, path) = match parts.as_slice() {
            [head, path] => (*head, StorePath::parse(path)?),
            [head] => (head.trim_end_matches('/'), StorePath::root()),
            _ => return Err(unknown()),
        };
        let segs: Vec<&str> = head.split('/').collect();
        return match segs.as_slice() {
            ["datastores", ds] => {
                check(NameRule::Datastore, ds)?;
                Ok(DataUri::Datastore {
                    workspace: None,
                    datastore: ds.to_string(),
                    path,
                })
            }
            ["jobs", job, "outputs", output] => {
                check(NameRule::Job, job)?;
                Ok(DataUri::JobOutput {
                    job: job.to_string(),
                    output: output.to_string(),
                    path,
                })
            }
            [.., ws_key, ws, "datastores", ds] if ws_key.eq_ignore_ascii_case("workspaces") => {
                check(NameRule::Datastore, ds)?;
                Ok(DataUri::Datastore {
                    workspace: Some(ws.to_string()),
                    datastore: ds.to_string(),
                    path,
                })
            }
            _ => Err(unknown()),
        };
    }
    if let Some(rest) = uri.strip_prefix("git+") {
        return Ok(DataUri::Git(parse_git(rest, uri)?));
    }
    if uri.starts_with("runs:/") || uri.starts_with("models:/") {
        return Ok(DataUri::Mlflow(uri.to_string()));
    }
    if uri.starts_with("https://") || uri.starts_with("http://") {
        return Ok(DataUri::Web(uri.to_string()));
    }
    for scheme in ["wasbs", "wasb", "abfss", "abfs", "s3", "gs"] {
        let Some(rest) = uri.strip_prefix(scheme).and_then(|r| r.strip_prefix("://")) else {
            continue;
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (container, account) = match authority.split_once('@') {
            Some((c, host)) => (
                c.to_string(),
                Some(host.split('.').next().unwrap_or(host).to_string()),
            ),
            None => (authority.to_string(), None),
        };
        if container.is_empty() {
            return Err(unknown());
        }
        return Ok(DataUri::Service {
            scheme: scheme.to_string(),
            container,
            account,
            path: StorePath::parse(path)?,
        });
    }
    if let Some(path) = uri
        .strip_prefix("file://")
        .or_else(|| uri.strip_prefix("file:"))
    {
        return Ok(DataUri::Local(path.to_string()));
    }
    if uri.contains("://") || uri.starts_with("azureml:") {
        return Err(unknown());
    }
    Ok(DataUri::Local(uri.to_string()))
}

/// A path in an Azure blob container read without credentials, as Azure ML reads public
/// containers named by URI (no datastore needed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicBlob {
    pub account: String,
    pub container: String,
    /// The blob service's URL (`https://<account>.blob.core.windows.net`, or an emulator's
    /// `http://127.0.0.1:10000/<account>`).
    pub endpoint: String,
    pub path: StorePath,
}

/// The public blob a URI names: `wasbs://<container>@<account>.blob.<suffix>/<path>` (also
/// `wasb`, and `abfss`/`abfs` on a `.dfs.` host, read through its blob endpoint),
/// `https://<account>.blob.<suffix>/<container>/<path>`, or an emulator's path-style
/// `http://127.0.0.1:<port>/<account>/<container>/<path>` (loopback hosts only).
pub fn public_blob(uri: &str) -> Option<PublicBlob> {
    let (scheme, rest) = uri.split_once("://")?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (container, host, path) = match scheme {
        "wasbs" | "wasb" | "abfss" | "abfs" => {
            let (container, host) = authority.split_once('@')?;
            (container.to_string(), host.replace(".dfs.", ".blob."), path)
        }
        "https" | "http" => {
            let host = authority;
            let loopback = ["127.0.0.1", "localhost", "[::1]"]
                .iter()
                .any(|h| host == *h || host.starts_with(&format!("{h}:")));
            if loopback {
                // Path style: /<account>/<container>/<path>.
                let (account, rest) = path.split_once('/')?;
                let (container, path) = rest.split_once('/').unwrap_or((rest, ""));
                return Some(PublicBlob {
                    account: account.to_string(),
                    container: container.to_string(),
                    endpoint: format!("{scheme}://{host}/{account}"),
                    path: StorePath::parse(path).ok()?,
                });
            }
            if !host.contains(".blob.") {
                return None;
            }
            let (container, path) = path.split_once('/').unwrap_or((path, ""));
            (container.to_string(), host.to_string(), path)
        }
        _ => return None,
    };
    let account = host.split('.').next()?.to_string();
    if account.is_empty() || container.is_empty() || !host.contains(".blob.") {
        return None;
    }
    let secure = matches!(scheme, "wasbs" | "abfss" | "https");
    Some(PublicBlob {
        account,
        container,
        endpoint: format!("{}://{host}", if secure { "https" } else { "http" }),
        path: StorePath::parse(path.split('?').next().unwrap_or(path)).ok()?,
    })
}

/// The short datastore URI for a path.
pub fn datastore_uri(datastore: &str, path: &StorePath) -> String {
    format!("azureml://datastores/{datastore}/paths/{path}")
}

/// A URI's scheme (letters, digits, `+-.`, starting with a letter; one letter is a Windows
/// drive, not a scheme) and the rest; `("", uri)` for a plain path.
pub fn split_scheme(uri: &str) -> (&str, &str) {
    match uri.split_once(':') {
        Some((scheme, rest))
            if scheme.len() > 1
                && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
        {
            (scheme, rest)
        }
        _ => ("", uri),
    }
}

/// Decodes one `application/x-www-form-urlencoded` value (`+` and `%XX`).
pub fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn git_sources_read_as_pip_writes_them() {
        let git = |u: &str| match parse(u).unwrap() {
            DataUri::Git(g) => g,
            other => panic!("{u}: {other:?}"),
        };
        let g = git("git+https://github.com/contoso/repo.git");
        assert_eq!(
            (g.url.as_str(), g.reference, g.subdirectory),
            ("https://github.com/contoso/repo.git", None, None)
        );
        let g = git("git+https://github.com/contoso/repo.git@release/1.2#subdirectory=src/train");
        assert_eq!(g.url, "https://github.com/contoso/repo.git");
        assert_eq!(g.reference.as_deref(), Some("release/1.2"));
        assert_eq!(g.subdirectory.as_deref(), Some("src/train"));
        let g = git("git+https://host.example/repo.git@v1");
        assert_eq!(
            (g.url.as_str(), g.reference.as_deref()),
            ("https://host.example/repo.git", Some("v1"))
        );
        for bad in [
            "git+ftp://host/repo",
            "git+ssh://git@host/repo.git",
            "git+file:///etc/repo",
            "git+https://host/repo#subdirectory=../up",
            "git+https://host/repo#egg=x",
            "git+https://host/repo@--upload-pack=evil",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    use super::*;

    fn ds(name: &str, path: &str) -> DataUri {
        DataUri::Datastore {
            workspace: None,
            datastore: name.into(),
            path: StorePath::parse(path).unwrap(),
        }
    }

    #[test]
    fn public_blob_uris_name_their_account_container_and_endpoint() {
        let b = public_blob("wasbs://data@pubstore.blob.core.windows.net/iris/train/").unwrap();
        assert_eq!(
            (
                b.account.as_str(),
                b.container.as_str(),
                b.endpoint.as_str(),
                b.path.as_str()
            ),
            (
                "pubstore",
                "data",
                "https://pubstore.blob.core.windows.net",
                "iris/train/"
            )
        );
        let b = public_blob("https://pubstore.blob.core.windows.net/data/iris.csv").unwrap();
        assert_eq!(
            (b.container.as_str(), b.path.as_str()),
            ("data", "iris.csv")
        );
        let b = public_blob("abfss://fs@lake.dfs.core.windows.net/x").unwrap();
        assert_eq!(b.endpoint, "https://lake.blob.core.windows.net");
        let b = public_blob("http://127.0.0.1:10000/devstoreaccount1/pub/dir/").unwrap();
        assert_eq!(
            (
                b.account.as_str(),
                b.container.as_str(),
                b.endpoint.as_str(),
                b.path.as_str()
            ),
            (
                "devstoreaccount1",
                "pub",
                "http://127.0.0.1:10000/devstoreaccount1",
                "dir/"
            )
        );
        assert!(public_blob("https://example.com/files/a.csv").is_none());
        assert!(public_blob("wasbs://c@pubstore.blob.core.windows.net/../x").is_none());
        assert!(public_blob("s3://bucket/x").is_none());
    }

    #[test]
    fn uris_resolve() {
        let cases: &[(&str, DataUri)] = &[
            (
                "azureml://datastores/workspaceblobstore/paths/data/x.csv",
                ds("workspaceblobstore", "data/x.csv"),
            ),
            ("tarn://datastores/blob/paths/dir/", ds("blob", "dir/")),
            ("azureml://datastores/blob", ds("blob", "")),
            (
                "azureml://subscriptions/s/resourcegroups/g/workspaces/ws1/datastores/blob/paths/a b/ü.txt",
                DataUri::Datastore {
                    workspace: Some("ws1".into()),
                    datastore: "blob".into(),
                    path: StorePath::parse("a b/ü.txt").unwrap(),
                },
            ),
            (
                "azureml://jobs/quiet_cat/outputs/artifacts/paths/model/",
                DataUri::JobOutput {
                    job: "quiet_cat".into(),
                    output: "artifacts".into(),
                    path: StorePath::parse("model/").unwrap(),
                },
            ),
            (
                "https://example.com/iris.csv",
                DataUri::Web("https://example.com/iris.csv".into()),
            ),
            (
                "wasbs://data@acct.blob.core.windows.net/raw/x.csv",
                DataUri::Service {
                    scheme: "wasbs".into(),
                    container: "data".into(),
                    account: Some("acct".into()),
                    path: StorePath::parse("raw/x.csv").unwrap(),
                },
            ),
            (
                "s3://bucket/key/part-0.parquet",
                DataUri::Service {
                    scheme: "s3".into(),
                    container: "bucket".into(),
                    account: None,
                    path: StorePath::parse("key/part-0.parquet").unwrap(),
                },
            ),
            ("./data/train", DataUri::Local("./data/train".into())),
            (
                "runs:/0a1b/model",
                DataUri::Mlflow("runs:/0a1b/model".into()),
            ),
            ("models:/iris/3", DataUri::Mlflow("models:/iris/3".into())),
            ("file:///tmp/x", DataUri::Local("/tmp/x".into())),
        ];
        for (uri, expected) in cases {
            assert_eq!(&parse(uri).unwrap(), expected, "{uri}");
        }
    }

    #[test]
    fn paths_cannot_escape_their_datastore() {
        for bad in [
            "../etc/passwd",
            "a/../../b",
            "a/./b",
            "/etc/passwd",
            "a//b",
            "a\\..\\b",
            "%2e%2e/x",
            "a%2Fb",
            "a/%2E%2E/b",
            "x\0y",
        ] {
            assert!(StorePath::parse(bad).is_err(), "{bad} was accepted");
            assert!(
                parse(&format!("azureml://datastores/blob/paths/{bad}")).is_err(),
                "{bad} was accepted in a URI"
            );
        }
        assert!(parse("azureml://datastores/../paths/x").is_err());
        assert!(parse("s3://bucket/../x").is_err());
        assert!(StorePath::parse("dir/").unwrap().join("../x").is_err());
    }
}
