//! Wire types: what `/api/v1` sends and receives. Converted from the services' views with
//! `From`; nothing below this crate derives `Serialize`.

use crate::error::DiagnosticView;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use tarn_core::{ResourceView, RoleView, WorkspaceView};
use utoipa::ToSchema;

pub fn time(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// A list response, shaped as Azure's (`{"value": [...]}`).
#[derive(Serialize, ToSchema)]
pub struct List<T> {
    pub value: Vec<T>,
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub version: String,
    /// How user code (jobs, notebooks, scoring code) is isolated on this server's machine.
    pub isolation: Isolation,
}

/// `tarn server status`: the health answer and, for administrators, the background tasks.
#[derive(Serialize, ToSchema)]
pub struct ServerStatus {
    #[serde(flatten)]
    pub health: Health,
    /// The server that answered.
    pub server_id: String,
    /// Whether it runs the background tasks (on a shared PostgreSQL store, one server does).
    pub leader: bool,
    /// The servers on this store, heard from in the last 30 s.
    pub servers: Vec<ServerView>,
    /// The background tasks; on a server that does not lead, they wait.
    pub tasks: Vec<TaskView>,
}

/// A server on the store.
#[derive(Serialize, ToSchema)]
pub struct ServerView {
    pub id: String,
    /// Where it answers.
    pub url: String,
    pub host: String,
    pub pid: i64,
    pub version: String,
    pub started_at: String,
    /// Seconds since it last reported itself (each second while it runs).
    pub lag_s: f64,
    /// It holds the lease: it runs the background tasks.
    pub leader: bool,
    /// The server that answered this request.
    pub this: bool,
}

/// A background task (scheduler, endpoint or instance controller) and how its passes go.
#[derive(Serialize, ToSchema)]
pub struct TaskView {
    pub name: String,
    /// Seconds between passes when nothing wakes it.
    pub interval_s: f64,
    pub passes: u64,
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_pass: Option<String>,
    pub last_pass_ms: f64,
    /// Seconds past its interval since its last pass (0 when on time).
    pub lag_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Isolation {
    /// False: user code can read Tarn's files and reach the server's processes.
    pub isolated: bool,
    /// One line for people.
    pub summary: String,
    /// The mechanisms in force.
    pub mechanisms: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Workspace {
    pub name: String,
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub mlflow_tracking_uri: String,
    pub storage_root: String,
    pub default_datastore: String,
    pub created_at: String,
    pub updated_at: String,
    /// The normalised workspace document.
    pub spec: Json,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<DiagnosticView>,
}

impl From<WorkspaceView> for Workspace {
    fn from(v: WorkspaceView) -> Workspace {
        let text = |k: &str| v.row.spec.get(k).and_then(Json::as_str).map(str::to_string);
        Workspace {
            name: v.row.name.clone(),
            id: v.row.id.clone(),
            display_name: text("display_name"),
            description: text("description"),
            mlflow_tracking_uri: v.mlflow_tracking_uri,
            storage_root: v.row.storage_root.clone(),
            default_datastore: v.default_datastore.to_string(),
            created_at: time(v.row.created_at),
            updated_at: time(v.row.updated_at),
            spec: v.row.spec,
            warnings: vec![],
        }
    }
}

impl Workspace {
    pub fn with_warnings(mut self, warnings: &[tarn_spec::Diagnostic]) -> Workspace {
        self.warnings = warnings.iter().map(DiagnosticView::from).collect();
        self
    }
}

#[derive(Serialize, ToSchema)]
pub struct Resource {
    /// The CLI group: `compute`, `datastore`, `model`, …
    pub kind: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_name: Option<String>,
    /// For datastores: whether this is the workspace's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_default: Option<bool>,
    /// For computes: the engine that runs its jobs (`local`, `slurm`, `ray`, or `none`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    pub archived: bool,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
    /// The normalised document; secrets appear as `<stored in vault>`.
    pub spec: Json,
    /// For computes (in `show`): the nodes the autoscaler holds and what runs on them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<crate::jobs::ComputeNode>>,
    /// For computes whose engine has them (Kubernetes): the instance types a job may ask for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_types: Option<Vec<InstanceTypeView>>,
    /// For online endpoints: where scoring requests go.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scoring_uri: Option<String>,
    /// For online endpoints and deployments: `Creating`, `Updating`, `Succeeded`, `Failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
    /// For a failed deployment: why, with the end of its replica's log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For online deployments: the replicas the controller runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<Vec<crate::endpoints::ReplicaView>>,
    /// For compute instances: `Creating`, `Starting`, `Running`, `Stopping`, `Stopped`, `Failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// For compute instances: JupyterLab's last activity, and seconds idle since (Running).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_seconds: Option<u64>,
    /// For compute instances: the applications they serve (JupyterLab, through Tarn).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<crate::computes::ServiceView>>,
    /// For schedules: what comes next and how the fires went.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<crate::schedules::ScheduleView>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<DiagnosticView>,
}

impl From<ResourceView> for Resource {
    fn from(v: ResourceView) -> Resource {
        let is_default = (v.kind == tarn_spec::Kind::Datastore)
            .then(|| v.row.key.name == tarn_core::DEFAULT_DATASTORE);
        Resource {
            kind: v.kind.group().to_string(),
            name: v.row.key.name.clone(),
            version: Some(v.row.key.version.clone()).filter(|s| !s.is_empty()),
            type_: v
                .row
                .spec
                .get("type")
                .and_then(Json::as_str)
                .map(str::to_string),
            endpoint_name: v.parent,
            is_default,
            engine: (v.kind == tarn_spec::Kind::Compute).then(|| {
                tarn_spec::compute::ComputeSpec::parse(&v.row.spec)
                    .engine()
                    .to_string()
            }),
            archived: v.row.archived,
            created_by: v.row.created_by,
            created_at: time(v.row.created_at),
            updated_at: time(v.row.updated_at),
            spec: v.row.spec,
            nodes: None,
            instance_types: None,
            scoring_uri: None,
            provisioning_state: None,
            error: None,
            replicas: None,
            state: None,
            last_activity: None,
            idle_seconds: None,
            services: None,
            schedule: None,
            warnings: v.warnings.iter().map(DiagnosticView::from).collect(),
        }
    }
}

/// A role given to a user (or service principal), or to everyone in a sign-in group.
#[derive(Serialize, ToSchema)]
pub struct RoleAssignment {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub role: String,
    pub created_at: String,
}

impl From<RoleView> for RoleAssignment {
    fn from(r: RoleView) -> RoleAssignment {
        RoleAssignment {
            user: r.user,
            group: r.group,
            role: r.role,
            created_at: time(r.created_at),
        }
    }
}

/// Either `user` or `group`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignRole {
    pub user: Option<String>,
    /// A group the OpenID provider's sign-ins claim.
    pub group: Option<String>,
    /// Owner, Contributor, Reader, Data Scientist, Compute Operator, or a custom role.
    pub role: String,
}

/// A file written to or found in a datastore.
#[derive(Serialize, ToSchema)]
pub struct FileInfo {
    pub path: String,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub modified: String,
}

/// The files (and, unless recursive, the sub-folders) under a datastore path.
#[derive(Serialize, ToSchema)]
pub struct FileListing {
    pub files: Vec<FileEntry>,
    pub folders: Vec<String>,
}

impl From<tarn_core::Listing> for FileListing {
    fn from(l: tarn_core::Listing) -> FileListing {
        FileListing {
            files: l
                .files
                .into_iter()
                .map(|e| FileEntry {
                    path: e.path,
                    size: e.size,
                    modified: time(e.modified),
                })
                .collect(),
            folders: l.folders,
        }
    }
}

/// Which files a bundle download carries.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BundleRequest {
    /// The files to read (each at most 1 MiB; larger ones are read one by one).
    pub paths: Vec<String>,
}

/// An instance type (Azure ML's, on Kubernetes): where its pods go and what each may use.
#[derive(Serialize, ToSchema)]
pub struct InstanceTypeView {
    pub name: String,
    pub node_selector: std::collections::BTreeMap<String, String>,
    /// Kubernetes quantities (`cpu`, `memory`, `nvidia.com/gpu`).
    pub requests: std::collections::BTreeMap<String, String>,
    pub limits: std::collections::BTreeMap<String, String>,
}

impl From<(String, tarn_spec::compute::InstanceType)> for InstanceTypeView {
    fn from((name, t): (String, tarn_spec::compute::InstanceType)) -> InstanceTypeView {
        InstanceTypeView {
            name,
            node_selector: t.node_selector.into_iter().collect(),
            requests: t.requests.into_iter().collect(),
            limits: t.limits.into_iter().collect(),
        }
    }
}
