//! The run plan: everything a `tarn runner` needs to run one job, resolved by the server when
//! the job is submitted (references pinned, paths fixed, environment planned). It is the
//! contract between the server and the runner on any backend, so it is plain serde data.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunPlan {
    pub workspace: String,
    pub job: String,
    pub experiment: String,
    /// The command with `${{inputs.…}}`/`${{outputs.…}}`/`$[[…]]` still in it.
    pub command: String,
    /// The code snapshot (a folder in a datastore), if the job has code.
    pub code: Option<Location>,
    pub environment: EnvSpec,
    pub inputs: BTreeMap<String, Input>,
    pub outputs: BTreeMap<String, Output>,
    /// Where the run's artifacts (`./outputs`, `./logs`, `user_logs/`) go.
    pub artifacts: Location,
    pub environment_variables: BTreeMap<String, String>,
    pub timeout_s: Option<u64>,
    pub distribution: Option<Distribution>,
    pub instance_count: u32,
    /// Filled in when the job starts: the nodes it runs on.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// For a job on several nodes of an engine: rank 0's `host:port`, once its node reported.
    #[serde(default)]
    pub master: Option<String>,
    /// CPUs each node may use (the node's share of the machine); 0: all of the node's own.
    pub cpus_per_node: u32,
    /// Memory each node may use, in MiB (its share of the machine); 0: the node's own less what
    /// its server keeps.
    #[serde(default)]
    pub memory_mb_per_node: u64,
    pub tracking_uri: String,
    /// A Spark job's application name: the runner finds the application's id and web UI by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spark_app: Option<String>,
    /// A Spark job on a cluster: the runner packs the environment's packages for the
    /// executors and names the archive in `TARN_SPARK_ENV`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub spark_ships_env: bool,
    /// Code from a git repository (`code: git+https://…`), cloned by the runner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_code: Option<GitCode>,
}

/// A job's code as a git repository. The credentials (from the `git` connection whose target
/// the URL starts with) are only in the plan a runner fetches, never in the stored one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitCode {
    pub source: crate::uri::GitSource,
    /// The connection that gives the credentials, if one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl GitCode {
    /// Environment variables that make `git` send the credentials (as an HTTP header: never
    /// on a command line or in a URL git might print), and never prompt for any.
    pub fn git_env(&self) -> Vec<(String, String)> {
        let mut env = vec![("GIT_TERMINAL_PROMPT".to_string(), "0".to_string())];
        if let (Some(user), Some(pass)) = (&self.username, &self.password) {
            let basic = base64_encode(format!("{user}:{pass}").as_bytes());
            env.extend([
                ("GIT_CONFIG_COUNT".to_string(), "1".to_string()),
                (
                    "GIT_CONFIG_KEY_0".to_string(),
                    "http.extraHeader".to_string(),
                ),
                (
                    "GIT_CONFIG_VALUE_0".to_string(),
                    format!("Authorization: Basic {basic}"),
                ),
            ]);
        }
        env
    }
}

/// Standard base64 with padding.
fn base64_encode(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A Spark job's application, as its driver's web UI names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SparkApp {
    /// `local-1765…` (serverless) or `app-2026…-0000` (a standalone cluster).
    pub application_id: String,
    /// The driver's web UI.
    pub ui_url: String,
}

/// A folder or file in a datastore of the job's workspace (or of a registry).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    pub datastore: String,
    pub path: String,
    /// For `local` datastores: the path on this machine (for read-only links).
    #[serde(default)]
    pub local_path: Option<String>,
    /// The workspace the datastore is in when it is not the job's: a registry's, for a
    /// shared asset's files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvSpec {
    /// The content hash that names the cached build.
    pub hash: String,
    pub python: Option<String>,
    pub requirements: Vec<String>,
    pub notes: Vec<String>,
    /// The environment's Docker `image:`, which engines that run containers (Kubernetes) use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Package indexes its packages may come from besides PyPI: the workspace's `python_feed`
    /// connections.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub indexes: Vec<PackageIndex>,
}

/// A package index (a `python_feed` connection). Its credentials are only in the plan a
/// runner fetches, filled in from the vault then: never in the stored plan.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PackageIndex {
    /// The connection's name.
    pub connection: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl PackageIndex {
    /// Its URL with the credentials in it (`https://user:pass@host/…`, percent-encoded), for
    /// installers that take them only so; they hide them when they print it.
    pub fn url_with_credentials(&self) -> String {
        let (Some(user), Some(pass)) = (&self.username, &self.password) else {
            return self.url.clone();
        };
        match self.url.split_once("://") {
            Some((scheme, rest)) => format!(
                "{scheme}://{}:{}@{rest}",
                percent_encode(user),
                percent_encode(pass)
            ),
            None => self.url.clone(),
        }
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl EnvSpec {
    /// The planned environment `environment` (its `image:` kept for container engines).
    pub fn of(plan: &crate::envplan::EnvPlan, environment: &serde_json::Value) -> EnvSpec {
        EnvSpec {
            hash: plan.hash(),
            python: plan.python.clone(),
            requirements: plan.requirements.clone(),
            notes: plan.notes.clone(),
            image: environment
                .get("image")
                .and_then(serde_json::Value::as_str)
                .map(str::to_string),
            indexes: vec![],
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Input {
    /// A literal value, substituted as text.
    Literal { value: String },
    /// Data in a datastore: `download`, `ro_mount` (a read-only link for local datastores,
    /// else a download) or `direct` (the URI is passed).
    Data {
        #[serde(rename = "type")]
        type_: String,
        mode: String,
        uri: String,
        location: Location,
    },
    /// A file or folder in a public Azure blob container (`wasbs://…`, a blob `https://`
    /// URL), read anonymously by the runner.
    PublicBlob {
        #[serde(rename = "type")]
        type_: String,
        mode: String,
        uri: String,
        account: String,
        container: String,
        endpoint: String,
        path: String,
    },
    /// An `http(s)://` file, downloaded by the runner.
    Web {
        #[serde(rename = "type")]
        type_: String,
        mode: String,
        url: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    #[serde(rename = "type")]
    pub type_: String,
    pub uri: String,
    pub location: Location,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Distribution {
    /// `pytorch`, `mpi` or `tensorflow`.
    #[serde(rename = "type")]
    pub type_: String,
    pub process_count_per_instance: u32,
}

impl RunPlan {
    /// Processes in the whole job.
    pub fn world_size(&self) -> u32 {
        self.instance_count.max(1)
            * self
                .distribution
                .as_ref()
                .map_or(1, |d| d.process_count_per_instance.max(1))
    }
}

/// The serve plan: everything a `tarn replica` needs to run one replica of an online
/// deployment, resolved by the server when the replica is started (model and code pinned to
/// datastore locations, environment planned). The server writes it next to the replica; the
/// replica downloads what it names, builds the environment and starts the scoring server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServePlan {
    pub workspace: String,
    pub endpoint: String,
    pub deployment: String,
    pub model: Option<ServeModel>,
    /// The scoring code's folder, and the script in it that has `init()` and `run()`.
    pub code: Option<Location>,
    pub scoring_script: Option<String>,
    /// `None` for an MLflow model without an environment: the replica plans it from the
    /// model's own `requirements.txt` and `python_env.yaml`.
    pub environment: Option<EnvSpec>,
    pub environment_variables: BTreeMap<String, String>,
}

/// A deployment's model: where it is and how it is served.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServeModel {
    pub location: Location,
    /// `custom_model`, `mlflow_model` or `triton_model`.
    #[serde(rename = "type")]
    pub type_: String,
}

/// The instance plan: everything a `tarn instance` needs to run one compute instance's
/// JupyterLab, written by the server next to the instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstancePlan {
    pub workspace: String,
    pub name: String,
    /// The Tarn user the instance belongs to.
    pub user: String,
    /// JupyterLab's root: `Users/<user>/` of the workspace's working-directory datastore.
    pub root_dir: String,
    /// The path JupyterLab is served under, the same as through Tarn's proxy.
    pub base_url: String,
    pub tracking_uri: String,
    pub environment: EnvSpec,
    /// `setup_scripts`: run in the root folder before JupyterLab starts.
    pub setup: Vec<SetupScript>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetupScript {
    /// `creation_script` (once, the first time) rather than `startup_script` (every start).
    pub once: bool,
    /// An inline command, run with bash.
    pub command: Option<String>,
    /// A script file, relative to the root folder.
    pub path: Option<String>,
    pub timeout_s: u64,
}

/// How one piece of user code is confined: the contract between whoever starts it (a runner,
/// a replica, an instance) and `tarn sandbox`, which applies it and then runs the program.
/// Passed as `tarn sandbox --policy <json>`: paths and a uid, never a secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxPolicy {
    /// The unprivileged identity (uid = gid) to run as; `None` keeps the caller's.
    pub uid: Option<u32>,
    /// Show the process its own view of the file system (a mount namespace): `hidden` replaced
    /// by an empty folder with only the grants in it, a private `/tmp`.
    pub namespaces: bool,
    /// Confine with Landlock: writes only to the grants, `/tmp` and `/dev`; no signals to,
    /// ptrace of, or abstract sockets of processes outside the sandbox.
    pub landlock: bool,
    /// A folder the process must not see (`TARN_HOME`), but for the grants below it.
    pub hidden: Option<String>,
    /// Paths shown read-only.
    pub read: Vec<String>,
    /// Paths shown read-write (and, with `uid`, owned by it).
    pub write: Vec<String>,
    /// A folder bound at `/tmp`.
    pub tmp: Option<String>,
    /// The working folder.
    pub cwd: String,
    /// Most processes the identity may have at once (only with `uid`: the limit is per user).
    pub max_processes: Option<u64>,
    /// The identity's control group: files to write the process's pid to before dropping root.
    #[serde(default)]
    pub cgroup_procs: Vec<String>,
}
