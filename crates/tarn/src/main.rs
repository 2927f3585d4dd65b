//! `tarn`: one binary for the server (`tarn up`), the CLI, and the benchmark harness.
//! Parsing produces validated arguments before any work; every command but `up`, `validate`
//! and `configure` is a client of the HTTP API.

mod assets;
mod backup;
mod bench;
mod client;
mod commands;
mod endpoints;
mod instance;
mod jobs;
mod login;
mod output;
mod quickstart;
mod replica;
mod runner;
mod serve;
mod server;
mod store;
mod tied;
mod tls;
mod transfer;
mod usercode;

use clap::{Args, Parser, Subcommand};
use output::Format;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "tarn",
    version,
    about = "Tarn: a self-hosted machine-learning workspace"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Clone)]
pub struct Global {
    /// Tarn's home: database, vault key, workspace storage, local credentials.
    #[arg(long, env = "TARN_HOME", global = true)]
    pub home: Option<PathBuf>,
    /// The server URL (default: the one `tarn up` recorded in TARN_HOME).
    #[arg(long, env = "TARN_SERVER", global = true)]
    pub server: Option<String>,
    /// The API token (default: the local administrator's, from TARN_HOME).
    #[arg(long, env = "TARN_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, global = true)]
    pub output: Option<Format>,
    /// A JMESPath query applied to the result before printing (as in `az`), e.g.
    /// `--query name -o tsv`.
    #[arg(long, global = true)]
    pub query: Option<String>,
    /// No progress bars, notes or warnings on stderr.
    #[arg(short = 'q', long, global = true)]
    pub quiet: bool,
}

impl Global {
    pub fn home(&self) -> PathBuf {
        self.home.clone().unwrap_or_else(|| {
            let base = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."));
            base.join(".tarn")
        })
    }
}

#[derive(Subcommand)]
pub enum Command {
    /// Start the Tarn server on its embedded defaults.
    Up(Box<UpCmd>),
    /// Check a YAML file and print what Tarn understood (no server needed).
    Validate(ValidateCmd),
    /// Set CLI defaults, e.g. `--defaults workspace=W`.
    Configure(ConfigureCmd),
    /// Workspaces: create, list, show, update, delete.
    #[command(subcommand)]
    Workspace(WorkspaceCmd),
    /// Computes: clusters, instances, attached Kubernetes, VMs, Synapse.
    #[command(subcommand)]
    Compute(ComputeCmd),
    /// Jobs: command jobs written for `az ml`, their logs and outputs.
    #[command(subcommand)]
    Job(jobs::JobCmd),
    /// Datastores (credentials go to the workspace vault), and files in them.
    #[command(subcommand)]
    Datastore(DatastoreCmd),
    /// Data assets (versioned).
    #[command(subcommand)]
    Data(AssetCmd),
    /// Environments (versioned).
    #[command(subcommand)]
    Environment(ResourceCmd),
    /// Components (versioned).
    #[command(subcommand)]
    Component(ResourceCmd),
    /// Models (versioned).
    #[command(subcommand)]
    Model(AssetCmd),
    /// Connections to outside services (`az ml connection`); their credentials go to the vault.
    #[command(subcommand)]
    Connection(ConnectionCmd),
    /// Registries: models, components, environments and data shared by every workspace.
    #[command(subcommand)]
    Registry(RegistryCmd),
    /// Schedules: jobs fired on a cron or recurrence trigger (`az ml schedule`).
    #[command(subcommand)]
    Schedule(ScheduleCmd),
    /// Online endpoints.
    #[command(subcommand, name = "online-endpoint")]
    OnlineEndpoint(endpoints::OnlineEndpointCmd),
    /// Online deployments (under an endpoint).
    #[command(subcommand, name = "online-deployment")]
    OnlineDeployment(endpoints::OnlineDeploymentCmd),
    /// Batch endpoints.
    #[command(subcommand, name = "batch-endpoint")]
    BatchEndpoint(endpoints::BatchEndpointCmd),
    /// Batch deployments (under an endpoint).
    #[command(subcommand, name = "batch-deployment")]
    BatchDeployment(endpoints::BatchDeploymentCmd),
    /// Sign in through the server's single sign-on (the device flow: open a link, confirm a
    /// code); the CLI then uses that sign-in until it expires.
    Login,
    /// Sign out: revoke `tarn login`'s token and forget it.
    Logout,
    /// Users: people (administrators manage them; anyone shows themselves).
    #[command(subcommand)]
    User(UserCmd),
    /// Service principals: identities for automation, with their own tokens and roles
    /// (administrators only).
    #[command(subcommand, name = "sp", alias = "service-principal")]
    Sp(SpCmd),
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Role assignments in a workspace.
    #[command(subcommand)]
    Role(RoleCmd),
    /// The audit log: who changed what, when, from where, with what outcome.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Server status.
    #[command(subcommand)]
    Server(ServerCmd),
    /// The metadata store: copy a home's database to PostgreSQL (or back).
    #[command(subcommand)]
    Store(StoreCmd),
    /// Backups of the metadata (every workspace, resource, job, run, metric, user and sealed
    /// secret) taken while the server runs, and restoring one into a new home.
    #[command(subcommand)]
    Backup(BackupCmd),
    /// Measure start-up time, idle memory and API throughput.
    Bench(bench::BenchCmd),
    /// Install what jobs need on this machine (uv, for building environments).
    Setup,
    /// The whole loop in one command: workspace, data, a training job on a cluster, MLflow
    /// tracking, a registered model, an online endpoint with two deployments and a traffic
    /// split, and batch scoring. Starts a server first if none answers.
    Quickstart(quickstart::QuickstartCmd),
    /// Run one job (started by the server on a node; not for direct use).
    #[command(hide = true)]
    Runner(runner::RunnerCmd),
    /// Internal: runs a program confined by a sandbox policy (see tarn_core::isolation).
    #[command(hide = true)]
    Sandbox(SandboxCmd),
    /// Run one replica of an online deployment (started by the server; not for direct use).
    #[command(hide = true)]
    Replica(replica::ReplicaCmd),
    /// Run one compute instance's JupyterLab (started by the server; not for direct use).
    #[command(hide = true)]
    Instance(instance::InstanceCmd),
}

/// Compute commands: the resource commands plus the nodes of a cluster.
#[derive(Subcommand)]
pub enum ComputeCmd {
    #[command(flatten)]
    Resource(ResourceCmd),
    /// Attach a compute that runs elsewhere (`type: kubernetes`, `slurm`, `ray`) from its YAML,
    /// as `az ml compute attach --file` does: the same as `create`.
    Attach {
        #[arg(short, long)]
        file: PathBuf,
        #[arg(long = "set", value_name = "PATH=VALUE")]
        sets: Vec<String>,
        #[arg(short, long, env = "TARN_WORKSPACE")]
        workspace: Option<String>,
    },
    /// Detach a compute, as `az ml compute detach` does: the same as `delete`; the cluster
    /// and what runs there are left alone.
    Detach {
        #[arg(short, long)]
        name: String,
        #[arg(short, long)]
        yes: bool,
        #[arg(short, long, env = "TARN_WORKSPACE")]
        workspace: Option<String>,
    },
    /// The nodes of a cluster (or of `serverless` / `local`) and what runs on them.
    ListNodes {
        #[arg(short, long)]
        name: String,
        #[arg(short, long, env = "TARN_WORKSPACE")]
        workspace: Option<String>,
    },
    /// Start a compute instance (its JupyterLab).
    Start(InstanceArgs),
    /// Stop a compute instance; its notebooks stay on the working-directory datastore.
    Stop(InstanceArgs),
    /// Stop and start a compute instance.
    Restart(InstanceArgs),
    /// The end of a compute instance's log (environment build, setup scripts, JupyterLab).
    GetLogs {
        #[arg(short, long)]
        name: String,
        #[arg(short, long, env = "TARN_WORKSPACE")]
        workspace: Option<String>,
        #[arg(short, long, default_value_t = 100)]
        lines: usize,
    },
}

/// Which compute instance to start, stop or restart.
#[derive(Args)]
pub struct InstanceArgs {
    #[arg(short, long)]
    pub name: String,
    #[arg(short, long, env = "TARN_WORKSPACE")]
    pub workspace: Option<String>,
    /// Return at once instead of waiting until it is Running (or Stopped).
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Args)]
pub struct UpCmd {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 8790)]
    pub port: u16,
    /// The URL clients and runners on other machines use to reach this server, if not
    /// http(s)://HOST:PORT.
    #[arg(long)]
    pub public_url: Option<String>,
    /// The URL the other servers on a shared store reach this one at (they send it the
    /// requests only the leader can answer: scoring, replicas' and instances' state), if not
    /// http(s)://HOST:PORT (the machine's name when HOST is 0.0.0.0).
    #[arg(long, env = "TARN_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Allow plain HTTP on an address other machines can reach (tokens then cross the
    /// network in the clear).
    #[arg(long)]
    pub insecure_http: bool,
    /// The vault's master key file (default: TARN_HOME/vault.key).
    #[arg(long, env = "TARN_VAULT_KEY_FILE")]
    pub vault_key_file: Option<PathBuf>,
    /// Where the metadata lives: `postgres://USER@HOST:PORT/DATABASE[?sslmode=verify-full]`
    /// (the password from PGPASSWORD or a password file, never the URL), shared by every
    /// server of a team, or `sqlite:PATH` (default: TARN_HOME/tarn.db).
    #[arg(long, env = "TARN_STORE", hide_env_values = true, value_name = "URL")]
    pub store: Option<String>,
    /// Run user code (jobs, notebooks, scoring code) with the server's own identity and view
    /// of the files: only for debugging on a single-user machine (the server warns).
    #[arg(long)]
    pub no_isolation: bool,
    /// The folder the default workspace's MLflow artifacts go to (as `mlflow server
    /// --artifacts-destination`); a later start with another moves new runs' artifacts there.
    #[arg(long, value_name = "DIR")]
    pub artifact_store: Option<PathBuf>,
    /// How long the audit log keeps its events.
    #[arg(long, default_value = "90d", value_name = "DURATION")]
    pub audit_retention: String,
    /// The most connections served at once (further ones wait until one closes); default:
    /// three quarters of the open-file limit, raised to its hard limit at start.
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// How long a client has to send a request's headers; a kept-alive connection idle this
    /// long is closed.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub header_timeout: String,
    /// How long a request body may send nothing before the request fails.
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub body_timeout: String,
    /// Make a backup this often (`6h`, `1d`) while the server runs (the first at start
    /// when none was made within that time), into --backup-to.
    #[arg(long, value_name = "DURATION", requires = "backup_to")]
    pub backup_every: Option<String>,
    /// Where scheduled backups go: an absolute folder on this machine, or
    /// `azureml://datastores/<ds>/paths/<folder>` of --backup-workspace.
    #[arg(long, value_name = "DIR|URI", requires = "backup_every")]
    pub backup_to: Option<String>,
    /// The workspace whose datastore --backup-to names.
    #[arg(long, default_value = "default", value_name = "WORKSPACE")]
    pub backup_workspace: String,
    /// How many scheduled backups are kept (the oldest go).
    #[arg(long, default_value_t = 7, value_name = "N")]
    pub backup_keep: usize,
    /// A file holding a passphrase: scheduled backups then hold the vault key wrapped with it
    /// (without one they hold none, and a restore needs the key file).
    #[arg(long, value_name = "FILE")]
    pub backup_passphrase_file: Option<PathBuf>,
    #[command(flatten)]
    pub sso: SsoArgs,
}

/// Single sign-on through an OpenID Connect provider (Tarn is a confidential client; register
/// `<public url>/login/oidc/callback` as its redirect URI there).
#[derive(Args, Clone)]
pub struct SsoArgs {
    /// The provider's issuer URL: turns single sign-on on.
    #[arg(long, env = "TARN_OIDC_ISSUER", requires = "oidc_client_id")]
    pub oidc_issuer: Option<String>,
    /// Tarn's client id at the provider.
    #[arg(long, env = "TARN_OIDC_CLIENT_ID")]
    pub oidc_client_id: Option<String>,
    /// A file holding the client secret (else the TARN_OIDC_CLIENT_SECRET variable). It is
    /// kept in the vault: later starts need neither.
    #[arg(long, value_name = "FILE")]
    pub oidc_client_secret_file: Option<PathBuf>,
    /// The provider's name, on the studio's "Sign in with …" button.
    #[arg(long, default_value = "single sign-on")]
    pub oidc_name: String,
    /// The claim a new user's name comes from (then `email`, `preferred_username`, `sub`).
    #[arg(long, default_value = "email")]
    pub oidc_user_claim: String,
    /// The claim listing a user's groups (roles may be given to groups).
    #[arg(long, default_value = "groups")]
    pub oidc_groups_claim: String,
    /// How long a token from `tarn login` lasts.
    #[arg(long, default_value = "7d", value_name = "DURATION")]
    pub oidc_cli_token_lifetime: String,
}

#[derive(Args)]
pub struct ValidateCmd {
    /// The YAML file.
    #[arg(short, long)]
    pub file: PathBuf,
    /// What the file describes (a CLI group such as `compute` or `job`), when it has no `$schema`.
    #[arg(long)]
    pub kind: Option<String>,
    /// Override a field: `--set a.b=c` (repeatable).
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub sets: Vec<String>,
}

#[derive(Args)]
pub struct ConfigureCmd {
    /// `key=value` pairs; known keys: workspace.
    #[arg(long = "defaults", value_name = "KEY=VALUE", required = true)]
    pub defaults: Vec<String>,
}

#[derive(Subcommand)]
pub enum WorkspaceCmd {
    /// Create a workspace with its four default datastores.
    Create {
        #[arg(short, long, required_unless_present = "name")]
        file: Option<PathBuf>,
        #[arg(short, long)]
        name: Option<String>,
        #[arg(long = "set", value_name = "PATH=VALUE")]
        sets: Vec<String>,
        /// A datastore YAML file (azure_blob, azure_data_lake_gen2, s3 or gcs): the workspace's
        /// blob-type default datastores are created there.
        #[arg(long)]
        storage: Option<PathBuf>,
        /// Where MLflow's artifacts go (as `mlflow server --artifacts-destination`): a folder,
        /// or a datastore YAML file (azure_blob, azure_data_lake_gen2, s3, gcs).
        #[arg(long, value_name = "DIR|FILE")]
        artifact_store: Option<PathBuf>,
    },
    /// List the workspaces you can see.
    List,
    /// Show a workspace.
    Show {
        #[arg(short, long)]
        name: Option<String>,
    },
    /// Change a workspace's description, tags or settings.
    Update {
        #[arg(short, long)]
        name: Option<String>,
        #[arg(short, long)]
        file: Option<PathBuf>,
        #[arg(long = "set", value_name = "PATH=VALUE")]
        sets: Vec<String>,
        /// Move where new runs' MLflow artifacts go: a folder, or a datastore YAML file (it
        /// must answer; earlier runs' artifacts stay where they are).
        #[arg(long, value_name = "DIR|FILE")]
        artifact_store: Option<PathBuf>,
    },
    /// Delete a workspace (and, with --all-resources, its storage).
    Delete {
        #[arg(short, long)]
        name: String,
        /// Confirm the deletion.
        #[arg(short, long)]
        yes: bool,
        /// Also delete the workspace's storage.
        #[arg(long)]
        all_resources: bool,
    },
}

// The workspace (and endpoint) a resource command acts in. (A comment, not a doc comment:
// clap would show a flattened struct's doc as the help of commands that have none.)
#[derive(Args, Clone)]
pub struct Where {
    /// Workspace (default: `tarn configure --defaults workspace=…`, else `default`).
    #[arg(short, long, env = "TARN_WORKSPACE")]
    pub workspace: Option<String>,
    /// The endpoint, for deployments.
    #[arg(short = 'e', long = "endpoint-name", visible_alias = "endpoint")]
    pub endpoint: Option<String>,
    /// A registry instead of a workspace (models, components, environments, data).
    #[arg(long = "registry-name", conflicts_with = "workspace")]
    pub registry: Option<String>,
}

// Which version of an asset: `--version N`, or `--label latest` (as `az ml` takes it).
#[derive(Args, Clone)]
pub struct Pick {
    /// The asset's version (default: the latest).
    #[arg(short, long, conflicts_with = "label")]
    pub version: Option<String>,
    /// The asset's label: `latest` is the only one.
    #[arg(short, long)]
    pub label: Option<String>,
}

impl Pick {
    /// The version asked for; `None` means the latest.
    pub fn version(&self) -> anyhow::Result<Option<String>> {
        match self.label.as_deref() {
            None | Some("latest") => Ok(self.version.clone()),
            Some(other) => anyhow::bail!(
                "--label {other:?}: the only label is `latest`; give a version with --version"
            ),
        }
    }
}

// What `create` takes instead of a file, as `az ml … create` takes it (boxed: it is large).
#[derive(Args, Clone, Default)]
pub struct CreateFields {
    /// Without a file: the version of an asset (numbered for you when omitted).
    #[arg(short, long, requires = "name")]
    pub version: Option<String>,
    /// Data and models without a file: a local path, a datastore URI, `runs:/<run>/<path>`,
    /// `azureml://jobs/<job>/outputs/artifacts/paths/<path>` or `models:/<name>/<version>`.
    #[arg(long, requires = "name")]
    pub path: Option<String>,
    /// Without a file: the type (`uri_folder`, `mlflow_model`, `amlcompute`, …).
    #[arg(long = "type", requires = "name")]
    pub type_: Option<String>,
    /// Without a file: the description.
    #[arg(long, requires = "name")]
    pub description: Option<String>,
    /// Computes without a file: the VM size.
    #[arg(long, requires = "name")]
    pub size: Option<String>,
    /// Clusters without a file: the fewest nodes.
    #[arg(long, requires = "name")]
    pub min_instances: Option<i64>,
    /// Clusters without a file: the most nodes.
    #[arg(long, requires = "name")]
    pub max_instances: Option<i64>,
    /// Environments without a file: the conda file (read and inlined).
    #[arg(long, requires = "name")]
    pub conda_file: Option<String>,
    /// Environments without a file: the Docker image.
    #[arg(long, requires = "name")]
    pub image: Option<String>,
}

#[derive(Subcommand)]
pub enum ResourceCmd {
    /// Create from an Azure ML YAML file, or from flags as `az ml … create --name …` takes them.
    Create {
        #[arg(short, long, required_unless_present = "name")]
        file: Option<PathBuf>,
        /// Without a file: the name (`az ml model create --name … --path …`).
        #[arg(short, long, conflicts_with = "file")]
        name: Option<String>,
        #[command(flatten)]
        fields: Box<CreateFields>,
        #[arg(long = "set", value_name = "PATH=VALUE")]
        sets: Vec<String>,
        /// Datastores: store without checking that the storage answers (e.g. storage that
        /// only compute nodes can reach).
        #[arg(long)]
        skip_check: bool,
        /// Online deployments: send all of the endpoint's traffic here once it is ready.
        #[arg(long)]
        all_traffic: bool,
        /// Online deployments: return at once instead of waiting until it is ready.
        #[arg(long)]
        no_wait: bool,
        /// Batch deployments: make it the endpoint's default deployment.
        #[arg(long)]
        set_default: bool,
        #[command(flatten)]
        at: Where,
    },
    /// Show one resource (an asset's latest version unless --version or --label says).
    Show {
        #[arg(short, long)]
        name: String,
        #[command(flatten)]
        pick: Pick,
        /// Include stored secrets (needs the listsecrets permission).
        #[arg(long)]
        include_secrets: bool,
        #[command(flatten)]
        at: Where,
    },
    /// List the resources (the latest version of each asset, or every version of one).
    List {
        /// Every version of this asset.
        #[arg(short, long)]
        name: Option<String>,
        #[arg(long)]
        include_archived: bool,
        #[command(flatten)]
        at: Where,
    },
    /// Change fields with `--set`, or replace from a file.
    Update {
        #[arg(short, long)]
        name: String,
        #[command(flatten)]
        pick: Pick,
        #[arg(short, long)]
        file: Option<PathBuf>,
        #[arg(long = "set", value_name = "PATH=VALUE")]
        sets: Vec<String>,
        /// Datastores: store without checking that the storage answers.
        #[arg(long)]
        skip_check: bool,
        /// Online endpoints: the traffic split, e.g. "blue=90 green=10".
        #[arg(long)]
        traffic: Option<String>,
        /// Online endpoints: mirrored traffic, e.g. "green=10".
        #[arg(long)]
        mirror_traffic: Option<String>,
        /// Online deployments: return at once instead of waiting for the rollout.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        at: Where,
    },
    /// Delete a resource (assets are archived instead, never deleted).
    Delete {
        #[arg(short, long)]
        name: String,
        #[arg(short, long)]
        yes: bool,
        #[command(flatten)]
        at: Where,
    },
    /// Share an asset version into a registry (`az ml model share`): its files are copied there.
    Share {
        #[arg(short, long)]
        name: String,
        #[arg(short, long)]
        version: String,
        /// The registry to share it into.
        #[arg(long = "registry-name")]
        registry: String,
        /// Its name in the registry (default: its own).
        #[arg(long)]
        share_with_name: Option<String>,
        /// Its version in the registry (default: its own).
        #[arg(long)]
        share_with_version: Option<String>,
        #[arg(short, long, env = "TARN_WORKSPACE")]
        workspace: Option<String>,
    },
    /// Archive an asset version (all versions without --version).
    Archive {
        #[arg(short, long)]
        name: String,
        #[command(flatten)]
        pick: Pick,
        #[command(flatten)]
        at: Where,
    },
    /// Restore an archived asset version (all versions without --version).
    Restore {
        #[arg(short, long)]
        name: String,
        #[command(flatten)]
        pick: Pick,
        #[command(flatten)]
        at: Where,
    },
}

#[derive(Subcommand)]
pub enum RegistryCmd {
    /// Create a registry from Azure ML's registry YAML (administrators).
    Create {
        #[arg(short, long)]
        file: PathBuf,
    },
    /// Show a registry.
    Show {
        #[arg(short, long)]
        name: String,
    },
    /// The registries you have a role in.
    List,
    /// Delete a registry with its assets and their files.
    Delete {
        #[arg(short, long)]
        name: String,
        #[arg(short, long)]
        yes: bool,
    },
}

// Connections are not versioned assets: archive and restore do not apply to them.
#[derive(Subcommand)]
#[command(
    mut_subcommand("archive", |c| c.hide(true)),
    mut_subcommand("share", |c| c.hide(true)),
    mut_subcommand("restore", |c| c.hide(true))
)]
pub enum ConnectionCmd {
    #[command(flatten)]
    Resource(ResourceCmd),
}

// Schedules are not versioned assets either; they are turned on and off instead.
#[derive(Subcommand)]
#[command(
    mut_subcommand("archive", |c| c.hide(true)),
    mut_subcommand("share", |c| c.hide(true)),
    mut_subcommand("restore", |c| c.hide(true))
)]
pub enum ScheduleCmd {
    #[command(flatten)]
    Resource(ResourceCmd),
    /// Turn a schedule on: it fires from now on.
    Enable {
        #[arg(short, long)]
        name: String,
        #[command(flatten)]
        at: Where,
    },
    /// Turn a schedule off: it fires nothing until enabled.
    Disable {
        #[arg(short, long)]
        name: String,
        #[command(flatten)]
        at: Where,
    },
}

// Datastores are not versioned assets: archive and restore do not apply to them.
#[derive(Subcommand)]
#[command(
    mut_subcommand("archive", |c| c.hide(true)),
    mut_subcommand("share", |c| c.hide(true)),
    mut_subcommand("restore", |c| c.hide(true))
)]
pub enum DatastoreCmd {
    #[command(flatten)]
    Resource(ResourceCmd),
    /// Upload a file or folder into a datastore.
    Upload {
        #[arg(long)]
        datastore: String,
        /// The local file or folder.
        #[arg(long)]
        src: PathBuf,
        /// Where it goes: a file's path (`raw/data.csv`), or a folder to put it into, ending
        /// in `/` (`raw/`); a folder's contents go into this folder. The root when omitted.
        #[arg(long, default_value = "")]
        dest: String,
        #[arg(short, long, env = "TARN_WORKSPACE")]
        workspace: Option<String>,
    },
    /// Download a file or folder from a datastore.
    Download {
        #[arg(long)]
        datastore: String,
        /// The file or folder in the datastore.
        #[arg(long)]
        src: String,
        /// The local folder to write into.
        #[arg(long, default_value = ".")]
        dest: PathBuf,
        #[arg(short, long, env = "TARN_WORKSPACE")]
        workspace: Option<String>,
    },
    /// Delete a file from a datastore (a folder and everything in it with --recursive).
    Rm {
        #[arg(long)]
        datastore: String,
        /// The file (or, with --recursive, folder) in the datastore.
        #[arg(long)]
        path: String,
        #[arg(short, long)]
        recursive: bool,
        #[arg(short, long, env = "TARN_WORKSPACE")]
        workspace: Option<String>,
    },
    /// List the files in a datastore folder.
    Ls {
        #[arg(long)]
        datastore: String,
        #[arg(long, default_value = "")]
        path: String,
        /// Every file below the folder.
        #[arg(short, long)]
        recursive: bool,
        #[arg(short, long, env = "TARN_WORKSPACE")]
        workspace: Option<String>,
    },
}

/// Commands of data assets and models: the resource commands plus `download`.
#[derive(Subcommand)]
pub enum AssetCmd {
    #[command(flatten)]
    Resource(ResourceCmd),
    /// Download the asset's files into `<download-path>/<name>/`.
    Download {
        #[arg(short, long)]
        name: String,
        #[command(flatten)]
        pick: Pick,
        #[arg(short = 'p', long, default_value = ".")]
        download_path: PathBuf,
        #[arg(short, long, env = "TARN_WORKSPACE")]
        workspace: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum UserCmd {
    /// Create a user; prints their first token once.
    Create {
        #[arg(short, long)]
        name: String,
        /// Make the user an administrator.
        #[arg(long)]
        admin: bool,
    },
    /// List the users (people; `tarn sp list` lists service principals).
    List,
    /// Show a user with their role assignments in every workspace.
    Show {
        #[arg(short, long)]
        name: String,
    },
    /// Disable a user: their tokens, studio sessions and compute instances stop working at
    /// once; their running jobs finish unless --cancel-jobs.
    Disable {
        #[arg(short, long)]
        name: String,
        /// Cancel their jobs that have not ended.
        #[arg(long)]
        cancel_jobs: bool,
    },
    /// Enable a disabled user again.
    Enable {
        #[arg(short, long)]
        name: String,
    },
    /// Delete a user: their jobs that have not ended are canceled, their tokens, sessions and
    /// role assignments removed; what they made stays.
    Delete {
        #[arg(short, long)]
        name: String,
    },
}

#[derive(Subcommand)]
pub enum SpCmd {
    /// Create a service principal; prints its first token once.
    Create {
        #[arg(short, long)]
        name: String,
    },
    /// List the service principals.
    List,
    /// Show a service principal with its role assignments.
    Show {
        #[arg(short, long)]
        name: String,
    },
    /// Delete a service principal with its tokens and role assignments.
    Delete {
        #[arg(short, long)]
        name: String,
    },
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Create a token (for yourself, or for --user as an administrator); printed once.
    Create {
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// It stops working after this long: 30d, 12h, 90m.
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
        /// Narrow it to this workspace (with --role).
        #[arg(short, long)]
        workspace: Option<String>,
        /// The most it may do in --workspace: Owner, Contributor, Reader, "Data Scientist",
        /// "Compute Operator".
        #[arg(long)]
        role: Option<String>,
    },
    /// List tokens (never their secrets): yours, --user's or --all (administrators).
    List {
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// Revoke a token by id: it stops working at once, on every server.
    Revoke {
        /// The token's id (`tarn token list`).
        id: String,
    },
    /// Print a new random token without a server (for TARN_ADMIN_TOKEN).
    Generate,
}

#[derive(Subcommand)]
pub enum AuditCmd {
    /// List audit events, newest first (administrators; a workspace's Owners with -w).
    List {
        #[arg(long)]
        user: Option<String>,
        #[arg(short, long)]
        workspace: Option<String>,
        /// A time (2026-12-01T00:00:00Z) or a duration ago (24h, 7d).
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
}

#[derive(Subcommand)]
pub enum RoleCmd {
    /// Give a user, or everyone in a sign-in group, a role in a workspace (replacing any role
    /// they had there).
    Assign {
        #[arg(long, required_unless_present = "group", conflicts_with = "group")]
        user: Option<String>,
        /// A group the single sign-on provider's sign-ins claim.
        #[arg(long)]
        group: Option<String>,
        /// Owner, Contributor, Reader, "Data Scientist", "Compute Operator" or a custom role.
        #[arg(long)]
        role: String,
        #[arg(short, long, env = "TARN_WORKSPACE")]
        workspace: Option<String>,
        /// In a registry instead: a Reader uses its assets, Owners and Contributors add to it.
        #[arg(long = "registry-name", conflicts_with = "workspace")]
        registry: Option<String>,
    },
    /// List the role assignments in a workspace (or registry).
    List {
        #[arg(short, long, env = "TARN_WORKSPACE")]
        workspace: Option<String>,
        #[arg(long = "registry-name", conflicts_with = "workspace")]
        registry: Option<String>,
    },
    /// Take a user's (or a group's) role in a workspace (or registry) away.
    Delete {
        #[arg(long, required_unless_present = "group", conflicts_with = "group")]
        user: Option<String>,
        #[arg(long)]
        group: Option<String>,
        #[arg(short, long, env = "TARN_WORKSPACE")]
        workspace: Option<String>,
        #[arg(long = "registry-name", conflicts_with = "workspace")]
        registry: Option<String>,
    },
    /// Define a custom role (administrators): Azure's role-definition file (JSON or YAML:
    /// Name, Description, Actions, NotActions).
    Create {
        #[arg(short, long)]
        file: PathBuf,
    },
    /// The roles there are: the built-in ones and the custom ones, with their actions.
    Definitions,
    /// Show one role's definition.
    Show {
        #[arg(short, long)]
        name: String,
    },
    /// Remove a custom role that no workspace assigns.
    DeleteDefinition {
        #[arg(short, long)]
        name: String,
    },
}

#[derive(Subcommand)]
pub enum ServerCmd {
    /// Is the server up?
    Status,
}

#[derive(Subcommand)]
pub enum StoreCmd {
    /// Copy every table of a stopped server's store into a new, empty one and compare the
    /// tables' row counts; secrets stay encrypted (keep the vault key file with the home).
    Migrate {
        /// The store to copy (default: the home's SQLite file, sqlite:TARN_HOME/tarn.db).
        #[arg(long, value_name = "URL")]
        from: Option<String>,
        /// The empty store to fill: postgres://USER@HOST:PORT/DATABASE (password from
        /// PGPASSWORD or a password file) or sqlite:PATH.
        #[arg(long, value_name = "URL")]
        to: String,
    },
}

#[derive(Subcommand)]
pub enum BackupCmd {
    /// Take a backup from the running server: a consistent snapshot of the whole metadata
    /// store while jobs and MLflow writes go on (administrators only).
    Create {
        /// A folder here (the backup is a new `tarn-backup-<time>` folder in it), or
        /// `azureml://datastores/<ds>/paths/<folder>` (written by the server).
        #[arg(long, value_name = "DIR|URI")]
        to: String,
        /// The workspace of the datastore --to names.
        #[arg(short, long, env = "TARN_WORKSPACE")]
        workspace: Option<String>,
        /// Put the vault key in the backup, wrapped with a passphrase (from --passphrase-file
        /// or TARN_BACKUP_PASSPHRASE; at least 12 characters).
        #[arg(long)]
        include_vault_key: bool,
        /// A file holding the passphrase.
        #[arg(long, value_name = "FILE", requires = "include_vault_key")]
        passphrase_file: Option<PathBuf>,
    },
    /// The backups in a folder, oldest first.
    List {
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
    },
    /// Restore a backup into a new home (no server running there): checks the backup's
    /// checksum and the vault key before writing anything.
    Restore {
        /// A backup folder, or a folder of backups (the newest is taken).
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
        /// The store to fill (default: sqlite:TARN_HOME/tarn.db); it must be empty.
        #[arg(long, value_name = "URL")]
        store: Option<String>,
        /// The vault key file of the server that made the backup, when the backup holds none.
        #[arg(long, value_name = "FILE")]
        vault_key_file: Option<PathBuf>,
        /// A file holding the passphrase the backup's vault key is wrapped with (else
        /// TARN_BACKUP_PASSPHRASE).
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
}

#[derive(Args)]
pub struct SandboxCmd {
    /// Try each isolation mechanism and print what works.
    #[arg(long)]
    probe: bool,
    /// The policy (JSON).
    #[arg(long, required_unless_present = "probe")]
    policy: Option<String>,
    /// The program and its arguments.
    #[arg(last = true)]
    command: Vec<std::ffi::OsString>,
}

/// `tarn sandbox`: before any thread starts (a user namespace needs a single thread).
fn sandbox(cmd: SandboxCmd) -> ExitCode {
    if cmd.probe {
        print!("{}", tarn_core::isolation::probe_here());
        return ExitCode::SUCCESS;
    }
    let policy: tarn_core::isolation::SandboxPolicy =
        match serde_json::from_str(cmd.policy.as_deref().unwrap_or_default()) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("tarn sandbox: the policy is unreadable: {e}");
                return ExitCode::from(125);
            }
        };
    let Some((program, args)) = cmd.command.split_first() else {
        eprintln!("tarn sandbox: no program given");
        return ExitCode::from(125);
    };
    match tarn_core::isolation::enter(&policy, program, args) {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("tarn sandbox: {e}");
            ExitCode::from(125)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    output::set_quiet(cli.global.quiet);
    if let Err(e) = output::set_query(cli.global.query.as_deref(), cli.global.output.is_some()) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    if let Command::Sandbox(cmd) = cli.command {
        return sandbox(cmd);
    }
    {
        use tracing_subscriber::prelude::*;
        // sqlx reports PostgreSQL's notices ("already exists, skipping") at INFO: not news.
        let filter = tracing_subscriber::filter::Targets::new()
            .with_default(tracing::Level::INFO)
            .with_target("sqlx", tracing::Level::WARN);
        tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .with(filter)
            .init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the async runtime");
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", commands::describe(&e));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    /// Every command says what it does in its help (none borrows another's text).
    #[test]
    fn every_command_has_its_own_help() {
        use clap::CommandFactory;
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for sub in cmd.get_subcommands() {
                let path = format!("{path} {}", sub.get_name());
                if !sub.is_hide_set() && sub.get_name() != "help" {
                    match sub.get_about().map(|a| a.to_string()) {
                        Some(a) if !a.starts_with("The workspace") && !a.starts_with("Which ") => {}
                        other => missing.push(format!("{path}: {other:?}")),
                    }
                }
                walk(sub, &path, missing);
            }
        }
        let mut missing = vec![];
        walk(&super::Cli::command(), "tarn", &mut missing);
        assert!(
            missing.is_empty(),
            "commands without help:\n{}",
            missing.join("\n")
        );
    }
}
