//! Kubernetes clusters (`type: kubernetes`), through the Kubernetes API (`kube`): a Tarn job is
//! a `batch/v1` Job in the compute's namespace (see `manifests.rs` for what Tarn makes), its
//! pods running the shared node script in the environment's image (or the compute's `image`
//! for a conda-only environment), so the runner, its logs and MLflow work as on every engine.
//!
//! Jobs are found again by label (`app.kubernetes.io/managed-by=tarn`) and carry their Tarn job
//! id in an annotation; a Job is named from its Tarn id, so one handed twice is refused by
//! Kubernetes (`AlreadyExists`) rather than run twice. What a pod waits on or died of —
//! `Unschedulable` with the scheduler's message, `ImagePullBackOff`, `OOMKilled`, a deadline —
//! is the job's engine state and reason, and its events are the engine's log.
//!
//! The API is reached with a kubeconfig held in the vault (its user's credentials, client
//! certificates and exec plugins as `kubectl` uses them), or with the service account of the
//! pod Tarn runs in (`in_cluster: true`).

pub(crate) mod manifests;

use super::{
    ComputeBackend, EngineNode, Launch, Observed, Phase, Serve, Served, ServedReplica,
    ServingBackend, fetch_binary, node_env, node_script,
};
use crate::Config;
use crate::error::{Error, Result};
use async_trait::async_trait;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Node, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use manifests::{
    DEPLOYMENT_ID, DEPLOYMENT_LABEL, JOB_ID, JOB_LABEL, JobObjects, MANAGED_BY, REVISION_LABEL,
    SCORING_PORT, ServeObjects, object_name,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tarn_spec::compute::{InstanceType, KubernetesSpec};
use tokio::sync::{Notify, OnceCell};

/// How long one call to the API may take.
const CALL_LIMIT: Duration = Duration::from_secs(30);
/// Azure ML's instance types, as its Kubernetes extension defines them.
const INSTANCE_TYPES: (&str, &str, &str) = ("amlarc.azureml.com", "v1alpha1", "InstanceType");
/// The instance type Azure ML's extension makes and uses when a job names none.
const DEFAULT_INSTANCE_TYPE: &str = "defaultinstancetype";

pub(crate) struct KubernetesBackend {
    spec: KubernetesSpec,
    config: Config,
    client: OnceCell<kube::Client>,
    /// Who is woken when Tarn's pods or Jobs change (the scheduler, the endpoint controller).
    watchers: Arc<Mutex<Vec<Arc<Notify>>>>,
    /// The task that watches them, stopped with the backend.
    watching: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for KubernetesBackend {
    fn drop(&mut self) {
        if let Some(task) = self.watching.lock().expect("watch lock").take() {
            task.abort();
        }
    }
}

/// How long one watch runs before it is opened again (under the client's read timeout, as an
/// idle watch says nothing).
const WATCH_FOR_S: u32 = 25;
/// The pause before a watch that failed or ended at once is tried again.
const WATCH_RETRY: Duration = Duration::from_secs(1);

/// Wakes the watchers at every change of Tarn's objects of kind `K` in the namespace: the
/// change itself is read by their next pass. A watch that ends or fails is opened again from a
/// fresh list (whose changes they are woken for too).
async fn watch_changes<K>(api: Api<K>, watchers: Arc<Mutex<Vec<Arc<Notify>>>>)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    use futures::TryStreamExt;
    use kube::api::{WatchEvent, WatchParams};
    let labels = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
    let wake = || {
        for w in watchers.lock().expect("watchers lock").iter() {
            w.notify_one();
        }
    };
    loop {
        let began = std::time::Instant::now();
        if let Ok(list) = api.list(&ListParams::default().labels(&labels)).await {
            wake();
            let from = list.metadata.resource_version.unwrap_or_default();
            let params = WatchParams::default().labels(&labels).timeout(WATCH_FOR_S);
            if let Ok(stream) = api.watch(&params, &from).await {
                let mut stream = std::pin::pin!(stream);
                while let Ok(Some(event)) = stream.try_next().await {
                    match event {
                        WatchEvent::Added(_) | WatchEvent::Modified(_) | WatchEvent::Deleted(_) => {
                            wake()
                        }
                        WatchEvent::Bookmark(_) => {}
                        // Mostly 410 Gone: the version is too old; list again.
                        WatchEvent::Error(_) => break,
                    }
                }
            }
        }
        if began.elapsed() < WATCH_RETRY {
            tokio::time::sleep(WATCH_RETRY).await;
        }
    }
}

fn engine(message: String) -> Error {
    Error::Engine {
        engine: "kubernetes".into(),
        message,
    }
}

/// An API error in Kubernetes' own words (its status message), never a credential.
fn api_error(what: &str, e: kube::Error) -> Error {
    match e {
        kube::Error::Api(status) => engine(format!(
            "{what}: {} ({})",
            status.message,
            if status.reason.is_empty() {
                status.code.to_string()
            } else {
                status.reason.clone()
            }
        )),
        other => engine(format!("{what}: the API server does not answer: {other}")),
    }
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

impl KubernetesBackend {
    pub(crate) fn new(spec: KubernetesSpec, config: &Config) -> KubernetesBackend {
        KubernetesBackend {
            spec,
            config: config.clone(),
            client: OnceCell::new(),
            watchers: Default::default(),
            watching: Mutex::new(None),
        }
    }

    /// The API client, made on first use from the kubeconfig or the pod's service account.
    async fn client(&self) -> Result<kube::Client> {
        self.client
            .get_or_try_init(|| async {
                let mut config = if self.spec.in_cluster {
                    kube::Config::incluster().map_err(|e| {
                        engine(format!("in_cluster: Tarn does not run in a pod ({e})"))
                    })?
                } else {
                    let text = self.spec.kubeconfig.as_deref().ok_or_else(|| {
                        engine(
                            "Tarn cannot reach this cluster: the compute has no `kubeconfig` \
                             and is not `in_cluster`"
                                .into(),
                        )
                    })?;
                    // The parser's errors may quote the file, credentials included: not shown.
                    let file = kube::config::Kubeconfig::from_yaml(text).map_err(|_| {
                        Error::invalid("kubeconfig", "this is not a kubeconfig file")
                    })?;
                    let options = kube::config::KubeConfigOptions {
                        context: self.spec.context.clone(),
                        ..Default::default()
                    };
                    kube::Config::from_custom_kubeconfig(file, &options)
                        .await
                        .map_err(|e| {
                            Error::invalid("kubeconfig", without_secrets(&e.to_string()))
                        })?
                };
                config.connect_timeout = Some(CALL_LIMIT);
                config.read_timeout = Some(CALL_LIMIT);
                config.default_namespace = self.spec.namespace.clone();
                kube::Client::try_from(config).map_err(|e| engine(format!("no client: {e}")))
            })
            .await
            .cloned()
    }

    async fn api<K>(&self) -> Result<Api<K>>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Ok(Api::namespaced(self.client().await?, &self.spec.namespace))
    }

    fn managed() -> ListParams {
        ListParams::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1))
    }

    /// Instance types: the compute's own, then the cluster's `InstanceType` resources.
    async fn all_instance_types(&self) -> Result<Vec<(String, InstanceType)>> {
        let mut all = self.spec.instance_types.clone();
        let (group, version, kind) = INSTANCE_TYPES;
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        let api: Api<DynamicObject> = Api::all_with(self.client().await?, &resource);
        match api.list(&ListParams::default()).await {
            Ok(list) => {
                for it in list.items {
                    let name = it.metadata.name.clone().unwrap_or_default();
                    if !all.iter().any(|(n, _)| *n == name) {
                        let spec = it.data.get("spec").cloned().unwrap_or_default();
                        all.push((name, InstanceType::parse(&spec)));
                    }
                }
            }
            // No Azure ML extension on this cluster (or no right to read its types).
            Err(e) if is_status(&e, 404) || is_status(&e, 403) => {}
            Err(e) => return Err(api_error("listing instance types", e)),
        }
        Ok(all)
    }

    /// The instance type a job asked for, else the compute's default, else the cluster's.
    async fn instance_type(&self, asked: Option<&str>) -> Result<Option<InstanceType>> {
        let all = self.all_instance_types().await?;
        let find = |name: &str| all.iter().find(|(n, _)| n == name).map(|(_, t)| t.clone());
        match asked {
            Some(name) => find(name).map(Some).ok_or_else(|| {
                let known: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
                Error::invalid(
                    "resources.instance_type",
                    format!(
                        "instance type {name:?} is not defined on this Kubernetes compute (defined: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                )
            }),
            None => Ok(self
                .spec
                .default_instance_type
                .as_deref()
                .and_then(find)
                .or_else(|| find(DEFAULT_INSTANCE_TYPE))),
        }
    }

    /// Whether this server may `verb` `resource` in the namespace.
    async fn may(&self, verb: &str, group: &str, resource: &str) -> Result<bool> {
        let api: Api<SelfSubjectAccessReview> = Api::all(self.client().await?);
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(self.spec.namespace.clone()),
                    verb: Some(verb.into()),
                    group: Some(group.into()),
                    resource: Some(resource.into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| api_error("asking the API server what Tarn may do", e))?;
        Ok(answer.status.is_some_and(|s| s.allowed))
    }
}

impl KubernetesBackend {
    /// Deletes `name` in the foreground (what it owns first); one already gone is fine.
    async fn delete_owner<K>(&self, name: &str, what: &str) -> Result<()>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        <K as kube::Resource>::DynamicType: Default,
    {
        let api: Api<K> = self.api().await?;
        match api.delete(name, &DeleteParams::foreground()).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(api_error(&format!("deleting {what}"), e)),
        }
    }

    /// Fails, naming every right missing, unless Tarn may do all of `rights` in the namespace.
    async fn check_rights(&self, rights: &[(&str, &str, &str)]) -> Result<()> {
        let mut refused = vec![];
        for (verb, group, resource) in rights {
            if !self.may(verb, group, resource).await? {
                refused.push(format!("{verb} {resource}"));
            }
        }
        if refused.is_empty() {
            return Ok(());
        }
        Err(engine(format!(
            "Tarn may not {} in namespace {:?} (see docs/kubernetes-rbac.yaml for what to grant)",
            refused.join(", "),
            self.spec.namespace
        )))
    }
}

/// A kubeconfig loader's error without what may follow a `token`/`password` word.
fn without_secrets(text: &str) -> String {
    if ["token", "password", "BEGIN", "client-key"]
        .iter()
        .any(|w| text.contains(w))
    {
        "the kubeconfig's user cannot be used (its credentials are not shown)".into()
    } else {
        text.to_string()
    }
}

/// What a pod waits on or ended with: `Unschedulable: 0/3 nodes are available…`,
/// `ImagePullBackOff: …`, `OOMKilled`.
fn pod_reason(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    for c in status.container_statuses.iter().flatten() {
        let state = c.state.as_ref();
        if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
            let reason = w.reason.clone().unwrap_or_default();
            if !reason.is_empty() && reason != "ContainerCreating" {
                return Some(match &w.message {
                    Some(m) if !m.is_empty() => format!("{reason}: {m}"),
                    _ => reason,
                });
            }
        }
        if let Some(t) = state.and_then(|s| s.terminated.as_ref())
            && t.exit_code != 0
        {
            let reason = t.reason.clone().unwrap_or_else(|| "Error".into());
            return Some(format!("{reason} (exit code {})", t.exit_code));
        }
    }
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        .map(|c| {
            let reason = c.reason.clone().unwrap_or_else(|| "Unschedulable".into());
            match &c.message {
                Some(m) if !m.is_empty() => format!("{reason}: {m}"),
                _ => reason,
            }
        })
}

/// What a Job and its pods mean for Tarn.
fn observed(namespace: &str, job: &Job, pods: &[&Pod]) -> Option<(String, Observed)> {
    let tarn = job.metadata.annotations.as_ref()?.get(JOB_ID)?.clone();
    let name = job.metadata.name.clone().unwrap_or_default();
    let status = job.status.clone().unwrap_or_default();
    let ended = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.status == "True" && matches!(c.type_.as_str(), "Complete" | "Failed"));
    let running = pods.iter().any(|p| {
        p.status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|ph| ph == "Running")
    });
    let pod_reason = pods.iter().find_map(|p| pod_reason(p));
    let (phase, state, reason) = match ended {
        Some(c) => {
            let why = [c.reason.clone(), pod_reason.clone(), c.message.clone()]
                .into_iter()
                .flatten()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(": ");
            (
                Phase::Ended,
                c.type_.clone(),
                (!why.is_empty()).then_some(why),
            )
        }
        None if running => (Phase::Running, "Running".to_string(), None),
        None => (Phase::Pending, "Pending".to_string(), pod_reason),
    };
    let mut nodes: Vec<String> = pods
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    nodes.sort();
    nodes.dedup();
    Some((
        tarn,
        Observed {
            engine_id: format!("kubernetes:{namespace}/{name}"),
            phase,
            state,
            reason,
            nodes,
        },
    ))
}

/// A Kubernetes quantity (`4`, `500m`, `16Gi`, `8G`) as a number of units (cores, bytes).
fn quantity(q: &str) -> f64 {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+' || c == 'e'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let number: f64 = number.parse().unwrap_or(0.0);
    let scale = match suffix {
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        _ => 1.0,
    };
    number * scale
}

#[async_trait]
impl ComputeBackend for KubernetesBackend {
    fn engine(&self) -> &'static str {
        "kubernetes"
    }

    async fn check(&self) -> Result<String> {
        let client = self.client().await?;
        let version = client
            .apiserver_version()
            .await
            .map_err(|e| api_error("the API server's version", e))?;
        self.check_rights(&[
            ("create", "batch", "jobs"),
            ("list", "batch", "jobs"),
            ("delete", "batch", "jobs"),
            ("create", "", "secrets"),
            ("list", "", "pods"),
        ])
        .await?;
        let nodes = self.nodes().await?;
        Ok(format!(
            "Kubernetes {}, namespace {} ({} nodes)",
            version.git_version,
            self.spec.namespace,
            nodes.len()
        ))
    }

    async fn launch(&self, job: &Launch) -> Result<String> {
        let name = object_name(&job.job_id);
        let engine_id = format!("kubernetes:{}/{name}", self.spec.namespace);
        let multi = job.nodes > 1;
        let script = node_script(
            &self.config,
            &self.spec.work_dir,
            job,
            &tarn_spec::expr::shell_quote(&engine_id),
            "\"${TARN_POD_NODE:-$(hostname)}\"",
            multi.then_some(("\"$JOB_COMPLETION_INDEX\"", "\"$TARN_NODE_COUNT\"")),
        )
        .await?;
        let image = job.image.as_deref().unwrap_or(&self.spec.image);
        let env = pod_env(&self.config, &job.token, image);
        let instance_type = self.instance_type(job.instance_type.as_deref()).await?;
        let objects = JobObjects {
            name: &name,
            namespace: &self.spec.namespace,
            job_id: &job.job_id,
            workspace: &job.workspace,
            job: &job.job,
            nodes: job.nodes,
            image,
            script: &script,
            env: &env,
            instance_type: instance_type.as_ref(),
            timeout_s: job.timeout_s,
            service_account: self.spec.service_account.as_deref(),
            work_dir: &self.spec.work_dir,
        };
        // The Job first, then what it owns (so they go with it). Each step tolerates finding
        // its object made already: a launch cut short (the server died) is finished by the
        // next, never run twice.
        let jobs: Api<Job> = self.api().await?;
        let created = match jobs.create(&PostParams::default(), &objects.job()).await {
            Ok(created) => created,
            Err(e) if is_status(&e, 409) => jobs
                .get(&name)
                .await
                .map_err(|e| api_error("reading the Job", e))?,
            Err(e) => return Err(api_error("creating the Job", e)),
        };
        let uid = created.metadata.uid.clone().unwrap_or_default();
        let secrets: Api<Secret> = self.api().await?;
        let services: Api<Service> = self.api().await?;
        let owned = async {
            match secrets
                .create(&PostParams::default(), &objects.secret(&job.token, &uid))
                .await
            {
                Err(e) if !is_status(&e, 409) => {
                    return Err(api_error("creating the job's Secret", e));
                }
                _ => {}
            }
            if let Some(service) = objects.service(&uid) {
                match services.create(&PostParams::default(), &service).await {
                    Err(e) if !is_status(&e, 409) => {
                        return Err(api_error("creating the job's Service", e));
                    }
                    _ => {}
                }
            }
            Ok(())
        };
        if let Err(e) = owned.await {
            // Nothing half made is left: its Secret and Service go with the Job.
            let _ = jobs.delete(&name, &DeleteParams::foreground()).await;
            return Err(e);
        }
        Ok(engine_id)
    }

    async fn observe(&self) -> Result<HashMap<String, Observed>> {
        let jobs: Api<Job> = self.api().await?;
        let pods: Api<Pod> = self.api().await?;
        let listed = jobs
            .list(&Self::managed())
            .await
            .map_err(|e| api_error("listing Jobs", e))?;
        let all_pods = pods
            .list(&Self::managed())
            .await
            .map_err(|e| api_error("listing pods", e))?;
        let mut seen = HashMap::new();
        for job in &listed.items {
            let name = job.metadata.name.as_deref().unwrap_or_default();
            let its_pods: Vec<&Pod> = all_pods
                .items
                .iter()
                .filter(|p| {
                    p.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(JOB_LABEL))
                        .is_some_and(|j| j == name)
                })
                .collect();
            if let Some((tarn, o)) = observed(&self.spec.namespace, job, &its_pods) {
                seen.insert(tarn, o);
            }
        }
        Ok(seen)
    }

    async fn stop(&self, job_id: &str) -> Result<()> {
        // Its pods first, then the Job; its Secret and Service go with it.
        self.delete_owner::<Job>(&object_name(job_id), "the Job")
            .await
    }

    async fn engine_log(&self, job_id: &str) -> Result<String> {
        let pods: Api<Pod> = self.api().await?;
        let events: Api<Event> = self.api().await?;
        let names = [object_name(job_id)];
        let mut lines = vec![];
        for name in &names {
            let listed = pods
                .list(&ListParams::default().labels(&format!("{JOB_LABEL}={name}")))
                .await
                .map_err(|e| api_error("listing pods", e))?;
            let mut objects = vec![name.clone()];
            for pod in &listed.items {
                let pod_name = pod.metadata.name.clone().unwrap_or_default();
                if let Some(reason) = pod_reason(pod) {
                    lines.push(format!("pod {pod_name}: {reason}"));
                }
                objects.push(pod_name);
            }
            for object in objects {
                let listed = events
                    .list(&ListParams::default().fields(&format!("involvedObject.name={object}")))
                    .await
                    .map_err(|e| api_error("listing events", e))?;
                for e in listed.items {
                    lines.push(format!(
                        "{} {} {}: {}",
                        e.type_.unwrap_or_default(),
                        object,
                        e.reason.unwrap_or_default(),
                        e.message.unwrap_or_default()
                    ));
                }
            }
        }
        Ok(lines.join("\n"))
    }

    async fn instance_types(&self) -> Result<Vec<(String, InstanceType)>> {
        self.all_instance_types().await
    }

    fn serving(&self) -> Option<&dyn ServingBackend> {
        Some(self)
    }

    async fn watch(&self, wake: Arc<Notify>) {
        {
            let mut watchers = self.watchers.lock().expect("watchers lock");
            if !watchers.iter().any(|w| Arc::ptr_eq(w, &wake)) {
                watchers.push(wake);
            }
        }
        if self.watching.lock().expect("watch lock").is_some() {
            return;
        }
        // No client yet (a kubeconfig that does not work): the next pass tries again.
        let Ok(client) = self.client().await else {
            return;
        };
        let mut watching = self.watching.lock().expect("watch lock");
        if watching.is_none() {
            let pods: Api<Pod> = Api::namespaced(client.clone(), &self.spec.namespace);
            let jobs: Api<Job> = Api::namespaced(client, &self.spec.namespace);
            let watchers = self.watchers.clone();
            let task = tokio::spawn(async move {
                tokio::join!(
                    watch_changes(pods, watchers.clone()),
                    watch_changes(jobs, watchers)
                );
            });
            *watching = Some(task.abort_handle());
        }
    }

    async fn nodes(&self) -> Result<Vec<EngineNode>> {
        let api: Api<Node> = Api::all(self.client().await?);
        let listed = api
            .list(&ListParams::default())
            .await
            .map_err(|e| api_error("listing nodes", e))?;
        Ok(listed
            .items
            .iter()
            .map(|n| {
                let status = n.status.clone().unwrap_or_default();
                let allocatable = status.allocatable.unwrap_or_default();
                let get = |k: &str| allocatable.get(k).map(|q| quantity(&q.0)).unwrap_or(0.0);
                let ready = status
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                let cordoned = n
                    .spec
                    .as_ref()
                    .and_then(|s| s.unschedulable)
                    .unwrap_or(false);
                EngineNode {
                    name: n.metadata.name.clone().unwrap_or_default(),
                    state: match (ready, cordoned) {
                        (true, false) => "Ready",
                        (true, true) => "Ready,SchedulingDisabled",
                        (false, _) => "NotReady",
                    }
                    .to_string(),
                    cpus: get("cpu") as u32,
                    memory_mb: (get("memory") / 1_048_576.0) as u64,
                    gpus: get("nvidia.com/gpu") as u32,
                }
            })
            .collect())
    }
}

impl KubernetesBackend {
    /// The script a replica's pod runs: fetch the `tarn` binary, write the serve plan from the
    /// pod's environment, and run `tarn replica` on the pod's address, logging to the pod's
    /// output (`kubectl logs`).
    async fn replica_script(&self, serve: &Serve) -> Result<String> {
        use tarn_spec::expr::shell_quote as sq;
        let work = std::path::Path::new(&self.spec.work_dir);
        let dir = work.join("deployments").join(&serve.id);
        Ok(format!(
            r#"#!/bin/sh
set -eu
# The scoring code may run as another user (isolation): it must read its folder.
umask 022
dir={dir}/"$HOSTNAME"
mkdir -p "$dir"
{fetch}printf '%s' "$TARN_SERVE_PLAN" >"$dir/plan.json"
exec "$cache/tarn" replica --server {server} --plan "$dir/plan.json" --port {port} --bind "${{TARN_POD_IP:-0.0.0.0}}" --envs {envs} --log /dev/stdout
"#,
            dir = sq(&dir.display().to_string()),
            fetch = fetch_binary(&self.config, work).await?,
            server = sq(&self.config.public_url),
            port = SCORING_PORT,
            envs = sq(&work.join("envs").display().to_string()),
        ))
    }
}

/// A pod's environment: the node environment without its token (which comes from the Secret),
/// and the image it runs in (the runner uses the image's Python for an image-only environment).
fn pod_env(config: &Config, token: &str, image: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = node_env(config, token)
        .into_iter()
        .filter(|(k, _)| k != "TARN_RUNNER_TOKEN")
        .collect();
    env.push(("TARN_IN_IMAGE".into(), image.to_string()));
    env
}

/// A replica as its pod says: address, revision, readiness, restarts, what it waits on.
fn served_replica(pod: &Pod) -> ServedReplica {
    let status = pod.status.clone().unwrap_or_default();
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    ServedReplica {
        name: pod.metadata.name.clone().unwrap_or_default(),
        addr: status
            .pod_ip
            .as_deref()
            .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
            .map(|ip| std::net::SocketAddr::new(ip, SCORING_PORT as u16)),
        revision: pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(REVISION_LABEL))
            .cloned()
            .unwrap_or_default(),
        ready,
        terminating: pod.metadata.deletion_timestamp.is_some(),
        restarts: status
            .container_statuses
            .iter()
            .flatten()
            .map(|c| c.restart_count.max(0) as u32)
            .sum(),
        reason: pod_reason(pod),
    }
}

#[async_trait]
impl ServingBackend for KubernetesBackend {
    async fn check_serving(&self) -> Result<()> {
        self.check_rights(&[
            ("create", "apps", "deployments"),
            ("update", "apps", "deployments"),
            ("delete", "apps", "deployments"),
            ("create", "", "services"),
            ("update", "", "secrets"),
            ("list", "", "pods"),
        ])
        .await
    }

    async fn apply(&self, serve: &Serve) -> Result<()> {
        let name = object_name(&serve.id);
        let script = self.replica_script(serve).await?;
        let image = serve.image.as_deref().unwrap_or(&self.spec.image);
        let env = pod_env(&self.config, &serve.token, image);
        let instance_type = self.instance_type(serve.instance_type.as_deref()).await?;
        let objects = ServeObjects {
            name: &name,
            namespace: &self.spec.namespace,
            serve,
            image,
            script: &script,
            env: &env,
            instance_type: instance_type.as_ref(),
            service_account: self.spec.service_account.as_deref(),
            work_dir: &self.spec.work_dir,
        };
        let deployments: Api<Deployment> = self.api().await?;
        let mut wanted = objects.deployment();
        let current = deployments
            .get_opt(&name)
            .await
            .map_err(|e| api_error("reading the Deployment", e))?;
        let made = match current {
            Some(current) => {
                wanted.metadata.resource_version = current.metadata.resource_version;
                deployments
                    .replace(&name, &PostParams::default(), &wanted)
                    .await
                    .map_err(|e| api_error("updating the Deployment", e))?
            }
            None => deployments
                .create(&PostParams::default(), &wanted)
                .await
                .map_err(|e| api_error("creating the Deployment", e))?,
        };
        let uid = made.metadata.uid.clone().unwrap_or_default();
        // The token may be new (a restarted server makes new ones): replaced, so that a
        // replica that restarts starts with a token that works.
        let secrets: Api<Secret> = self.api().await?;
        let secret = objects.secret(&serve.token, &uid);
        match secrets.create(&PostParams::default(), &secret).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 409) => {
                secrets
                    .replace(&name, &PostParams::default(), &secret)
                    .await
                    .map_err(|e| api_error("updating the deployment's Secret", e))?;
            }
            Err(e) => return Err(api_error("creating the deployment's Secret", e)),
        }
        let services: Api<Service> = self.api().await?;
        match services
            .create(&PostParams::default(), &objects.service(&uid))
            .await
        {
            Err(e) if !is_status(&e, 409) => Err(api_error("creating the deployment's Service", e)),
            _ => Ok(()),
        }
    }

    async fn served(&self, id: &str) -> Result<Served> {
        let name = object_name(id);
        let deployments: Api<Deployment> = self.api().await?;
        let Some(d) = deployments
            .get_opt(&name)
            .await
            .map_err(|e| api_error("reading the Deployment", e))?
        else {
            return Ok(Served::default());
        };
        let pods: Api<Pod> = self.api().await?;
        let listed = pods
            .list(&ListParams::default().labels(&format!("{DEPLOYMENT_LABEL}={name}")))
            .await
            .map_err(|e| api_error("listing the deployment's pods", e))?;
        Ok(Served {
            exists: true,
            revision: d
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(REVISION_LABEL))
                .cloned()
                .unwrap_or_default(),
            replicas: d.spec.and_then(|s| s.replicas).unwrap_or(1).max(0) as u32,
            pods: listed.items.iter().map(served_replica).collect(),
        })
    }

    async fn served_ids(&self) -> Result<Vec<String>> {
        let deployments: Api<Deployment> = self.api().await?;
        let listed = deployments
            .list(&Self::managed())
            .await
            .map_err(|e| api_error("listing Deployments", e))?;
        Ok(listed
            .items
            .iter()
            .filter_map(|d| d.metadata.annotations.as_ref()?.get(DEPLOYMENT_ID).cloned())
            .collect())
    }

    async fn unserve(&self, id: &str) -> Result<()> {
        // Its pods first, then the Deployment; its Service and Secret go with it.
        self.delete_owner::<Deployment>(&object_name(id), "the Deployment")
            .await
    }

    async fn replica_log(&self, _id: &str, name: &str) -> Result<String> {
        let pods: Api<Pod> = self.api().await?;
        pods.logs(
            name,
            &LogParams {
                tail_lines: Some(500),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| api_error("reading the replica's log", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(conditions: serde_json::Value) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "tarn-train-01", "annotations": {JOB_ID: "ws/train"}},
            "status": {"conditions": conditions}
        }))
        .unwrap()
    }

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"spec": {"containers": [], "nodeName": "node-a"}, "status": status}),
        )
        .unwrap()
    }

    #[test]
    fn jobs_and_pods_read_as_tarn_jobs() {
        let unschedulable = pod(json!({"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/2 nodes are available: 2 Insufficient cpu."}]}));
        let (tarn, o) = observed("ml", &job(json!([])), &[&unschedulable]).unwrap();
        assert_eq!(tarn, "ws/train");
        assert_eq!(o.phase, Phase::Pending);
        assert_eq!(o.engine_id, "kubernetes:ml/tarn-train-01");
        assert_eq!(
            o.summary(),
            "Pending (Unschedulable: 0/2 nodes are available: 2 Insufficient cpu.)"
        );
        let pulling = pod(json!({"phase": "Pending", "containerStatuses": [{
            "name": "runner", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"x\""}}}]}));
        let (_, o) = observed("ml", &job(json!([])), &[&pulling]).unwrap();
        assert!(o.summary().contains("ImagePullBackOff"), "{}", o.summary());
        let running = pod(json!({"phase": "Running"}));
        let (_, o) = observed("ml", &job(json!([])), &[&running]).unwrap();
        assert_eq!(
            (o.phase, o.nodes.clone()),
            (Phase::Running, vec!["node-a".to_string()])
        );
        let oom = pod(json!({"phase": "Failed", "containerStatuses": [{
            "name": "runner", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}]}));
        let failed = job(
            json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
            "message": "Job has reached the specified backoff limit"}]),
        );
        let (_, o) = observed("ml", &failed, &[&oom]).unwrap();
        assert_eq!(o.phase, Phase::Ended);
        assert!(
            o.summary()
                .contains("BackoffLimitExceeded: OOMKilled (exit code 137)"),
            "{}",
            o.summary()
        );
        let deadline = job(
            json!([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
            "message": "Job was active longer than specified deadline"}]),
        );
        let (_, o) = observed("ml", &deadline, &[]).unwrap();
        assert!(o.summary().contains("DeadlineExceeded"), "{}", o.summary());
    }

    #[test]
    fn quantities() {
        assert_eq!(quantity("4"), 4.0);
        assert_eq!(quantity("500m"), 0.5);
        assert_eq!(quantity("16Gi"), 16.0 * 1024.0 * 1024.0 * 1024.0);
        assert_eq!(quantity("8G"), 8e9);
    }
}
