//! The Kubernetes objects Tarn makes for a job or an online deployment, built as the Kubernetes API's own types
//! (`k8s-openapi`), so that a field Kubernetes does not have cannot be written. Pure: the
//! golden tests below pin every manifest.
//!
//! A job is a `batch/v1` `Job` whose pods run the shared node script (`backends::node_script`)
//! in the environment's image; a job on several nodes is an Indexed Job (one pod per node,
//! `JOB_COMPLETION_INDEX` its rank) with a headless `Service` that gives its pods DNS names
//! (the ranks meet through the server, which tells them rank 0's address, as on every engine).
//! The runner's token is in a `Secret` that the Job owns (deleted with it), never in the pod
//! spec.

use super::super::ProbeSettings;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction,
    HTTPGetAction, Lifecycle, LifecycleHandler, ObjectFieldSelector, PodSpec, PodTemplateSpec,
    Probe, ResourceRequirements, Secret, SecretKeySelector, Service, ServicePort, ServiceSpec,
    Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;
use tarn_spec::compute::InstanceType;

/// Every object Tarn makes carries it (`kubectl get jobs -l app.kubernetes.io/managed-by=tarn`).
pub(crate) const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "tarn");
/// The label that names a job's objects (its Kubernetes name).
pub(crate) const JOB_LABEL: &str = "tarn.io/job";
/// The annotation that carries the Tarn job id (`<workspace id>/<job>`) back.
pub(crate) const JOB_ID: &str = "tarn.io/job-id";
/// The key of the runner's token in the job's Secret.
pub(crate) const TOKEN_KEY: &str = "token";
/// Seconds a job may run past its `limits.timeout` before Kubernetes stops it (the runner
/// stops the command itself at the timeout and reports why).
const DEADLINE_GRACE_S: i64 = 60;
/// How long an ended Job (and its pods, for `kubectl logs`) is kept.
const KEEP_ENDED_S: i32 = 3600;

/// What Tarn makes for one job.
pub(crate) struct JobObjects<'a> {
    /// The Kubernetes name of the job's objects (see [`object_name`]).
    pub name: &'a str,
    pub namespace: &'a str,
    /// `<workspace id>/<job>`.
    pub job_id: &'a str,
    /// The workspace's and the job's names, for people reading `kubectl describe`.
    pub workspace: &'a str,
    pub job: &'a str,
    pub nodes: u32,
    pub image: &'a str,
    /// The node script (`sh -c`).
    pub script: &'a str,
    /// The runner's environment, without its token.
    pub env: &'a [(String, String)],
    pub instance_type: Option<&'a InstanceType>,
    pub timeout_s: Option<u64>,
    pub service_account: Option<&'a str>,
    /// The folder the node script works in: an `emptyDir`.
    pub work_dir: &'a str,
}

/// A Kubernetes name for a Tarn job: its name, lower-cased to a DNS label, and a hash of its id
/// (two workspaces may have jobs of the same name), at most 63 characters (a Job's pods carry
/// its name in a label).
pub(crate) fn object_name(job_id: &str) -> String {
    let job = job_id.rsplit('/').next().unwrap_or(job_id);
    let hash = &tarn_spec::digest::sha256_hex(job_id.as_bytes())[..10];
    let mut readable: String = job
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    readable.truncate(63 - "tarn--".len() - hash.len());
    let readable = readable.trim_matches('-');
    format!("tarn-{readable}-{hash}")
}

impl JobObjects<'_> {
    fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
            (JOB_LABEL.to_string(), self.name.to_string()),
        ])
    }

    fn meta(&self) -> ObjectMeta {
        ObjectMeta {
            name: Some(self.name.to_string()),
            namespace: Some(self.namespace.to_string()),
            labels: Some(self.labels()),
            annotations: Some(BTreeMap::from([
                (JOB_ID.to_string(), self.job_id.to_string()),
                ("tarn.io/workspace".to_string(), self.workspace.to_string()),
                ("tarn.io/job-name".to_string(), self.job.to_string()),
            ])),
            ..Default::default()
        }
    }

    fn multi(&self) -> bool {
        self.nodes > 1
    }

    /// The Job.
    pub(crate) fn job(&self) -> Job {
        let mut env = values(self.env);
        // The node the pod runs on, as the runner names it.
        env.push(field("TARN_POD_NODE", "spec.nodeName"));
        env.push(token_from(self.name));
        if self.multi() {
            env.push(EnvVar {
                name: "TARN_NODE_COUNT".into(),
                value: Some(self.nodes.to_string()),
                ..Default::default()
            });
        }
        let it = self.instance_type.cloned().unwrap_or_default();
        let container = Container {
            name: "runner".into(),
            image: Some(self.image.to_string()),
            command: Some(vec!["sh".into(), "-c".into(), self.script.to_string()]),
            env: Some(env),
            resources: resources(&it),
            volume_mounts: Some(work_mount(self.work_dir)),
            ..Default::default()
        };
        let pod = PodSpec {
            restart_policy: Some("Never".into()),
            containers: vec![container],
            service_account_name: self.service_account.map(str::to_string),
            subdomain: self.multi().then(|| self.name.to_string()),
            ..placed_pod(&it)
        };
        let n = self.nodes.max(1) as i32;
        Job {
            metadata: self.meta(),
            spec: Some(JobSpec {
                // A failed runner is not retried by Kubernetes: Tarn decides (and the runner
                // reported why).
                backoff_limit: Some(0),
                completions: self.multi().then_some(n),
                parallelism: self.multi().then_some(n),
                completion_mode: self.multi().then(|| "Indexed".to_string()),
                active_deadline_seconds: self.timeout_s.map(|t| t as i64 + DEADLINE_GRACE_S),
                ttl_seconds_after_finished: Some(KEEP_ENDED_S),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(self.labels()),
                        ..Default::default()
                    }),
                    spec: Some(pod),
                },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// What the Job `job_uid` owns goes with it (deleted, or kept for `KEEP_ENDED_S`).
    fn owned_by_job(&self, job_uid: &str) -> ObjectMeta {
        ObjectMeta {
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "Job".into(),
                name: self.name.to_string(),
                uid: job_uid.to_string(),
                ..Default::default()
            }]),
            ..self.meta()
        }
    }

    /// The headless Service of a job on several nodes (its pods' DNS names), owned by the Job
    /// `job_uid`.
    pub(crate) fn service(&self, job_uid: &str) -> Option<Service> {
        self.multi().then(|| Service {
            metadata: self.owned_by_job(job_uid),
            spec: Some(ServiceSpec {
                cluster_ip: Some("None".into()),
                selector: Some(BTreeMap::from([(
                    JOB_LABEL.to_string(),
                    self.name.to_string(),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// The Secret with the runner's token, owned by the Job `job_uid` (deleted with it).
    pub(crate) fn secret(&self, token: &str, job_uid: &str) -> Secret {
        Secret {
            metadata: self.owned_by_job(job_uid),
            type_: Some("Opaque".into()),
            string_data: Some(BTreeMap::from([(TOKEN_KEY.to_string(), token.to_string())])),
            ..Default::default()
        }
    }
}

/// The label that names a deployment's objects and selects its pods.
pub(crate) const DEPLOYMENT_LABEL: &str = "tarn.io/deployment";
/// The label with the revision of the spec a pod runs (and the Deployment was last given).
pub(crate) const REVISION_LABEL: &str = "tarn.io/revision";
/// The annotation that carries the Tarn deployment id (`<workspace id>/<endpoint>/<name>`).
pub(crate) const DEPLOYMENT_ID: &str = "tarn.io/deployment-id";
/// The port a replica's scoring server listens on, as Azure ML's inference server does.
pub(crate) const SCORING_PORT: i32 = 5001;
/// Seconds a stopping replica keeps serving past its longest request, so that every router
/// has taken it out of rotation before it stops (Kubernetes tells routers and the pod at once).
const DRAIN_MARGIN_S: u64 = 2;

/// What Tarn makes for one online deployment: a `Deployment` whose pods run `tarn replica`
/// (rolled one at a time, none unavailable, when the revision changes), a `Service` in front
/// of them for clients in the cluster, and a `Secret` with the replicas' token, both owned by
/// the Deployment.
pub(crate) struct ServeObjects<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub serve: &'a super::super::Serve,
    pub image: &'a str,
    /// The replica script (`sh -c`).
    pub script: &'a str,
    /// The replica's environment, without its token.
    pub env: &'a [(String, String)],
    pub instance_type: Option<&'a InstanceType>,
    pub service_account: Option<&'a str>,
    pub work_dir: &'a str,
}

impl ServeObjects<'_> {
    fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
            (DEPLOYMENT_LABEL.to_string(), self.name.to_string()),
        ])
    }

    fn meta(&self) -> ObjectMeta {
        let s = self.serve;
        ObjectMeta {
            name: Some(self.name.to_string()),
            namespace: Some(self.namespace.to_string()),
            labels: Some(self.labels()),
            annotations: Some(BTreeMap::from([
                (DEPLOYMENT_ID.to_string(), s.id.clone()),
                ("tarn.io/workspace".to_string(), s.workspace.clone()),
                ("tarn.io/endpoint".to_string(), s.endpoint.clone()),
                ("tarn.io/deployment-name".to_string(), s.deployment.clone()),
            ])),
            ..Default::default()
        }
    }

    fn owned_by(&self, deployment_uid: &str) -> ObjectMeta {
        ObjectMeta {
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: self.name.to_string(),
                uid: deployment_uid.to_string(),
                ..Default::default()
            }]),
            ..self.meta()
        }
    }

    /// The instance type's requests and limits, with the deployment's own `resources` over them.
    fn resources(&self) -> Option<ResourceRequirements> {
        let mut it = self.instance_type.cloned().unwrap_or_default();
        if let Some(own) = &self.serve.resources {
            for (field, pairs) in [("requests", &mut it.requests), ("limits", &mut it.limits)] {
                for (k, v) in own
                    .get(field)
                    .and_then(|v| v.as_object())
                    .into_iter()
                    .flatten()
                {
                    let v = match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    pairs.retain(|(have, _)| have != k);
                    pairs.push((k.clone(), v));
                }
            }
        }
        resources(&it)
    }

    pub(crate) fn deployment(&self) -> Deployment {
        let s = self.serve;
        let http = |p: &ProbeSettings| Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/".into()),
                port: IntOrString::Int(SCORING_PORT),
                ..Default::default()
            }),
            timeout_seconds: Some(p.timeout.max(1) as i32),
            ..Default::default()
        };
        // Until the scoring server first answers (which may take an environment build), it is
        // probed every second within the readiness probe's whole budget, as Tarn's own replicas
        // are; then readiness and liveness probes as the deployment sets them.
        let budget = s.readiness.period.max(1) * s.readiness.failure_threshold.max(1);
        let startup = Probe {
            initial_delay_seconds: Some(s.readiness.initial_delay as i32),
            period_seconds: Some(1),
            failure_threshold: Some(budget as i32),
            ..http(&s.readiness)
        };
        let readiness = Probe {
            period_seconds: Some(s.readiness.period.max(1) as i32),
            success_threshold: Some(s.readiness.success_threshold.max(1) as i32),
            failure_threshold: Some(s.readiness.failure_threshold.max(1) as i32),
            ..http(&s.readiness)
        };
        let liveness = Probe {
            period_seconds: Some(s.liveness.period.max(1) as i32),
            failure_threshold: Some(s.liveness.failure_threshold.max(1) as i32),
            ..http(&s.liveness)
        };
        let drain = s.request_timeout.as_secs_f64().ceil() as u64 + DRAIN_MARGIN_S;
        let mut env = values(self.env);
        env.push(field("TARN_POD_IP", "status.podIP"));
        env.push(token_from(self.name));
        env.push(EnvVar {
            name: "TARN_SERVE_PLAN".into(),
            value: Some(s.plan.clone()),
            ..Default::default()
        });
        let container = Container {
            name: "scoring".into(),
            image: Some(self.image.to_string()),
            command: Some(vec!["sh".into(), "-c".into(), self.script.to_string()]),
            env: Some(env),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: SCORING_PORT,
                ..Default::default()
            }]),
            resources: self.resources(),
            startup_probe: Some(startup),
            readiness_probe: Some(readiness),
            liveness_probe: Some(liveness),
            lifecycle: Some(Lifecycle {
                pre_stop: Some(LifecycleHandler {
                    exec: Some(ExecAction {
                        command: Some(vec!["sleep".into(), drain.to_string()]),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            volume_mounts: Some(work_mount(self.work_dir)),
            ..Default::default()
        };
        let it = self.instance_type.cloned().unwrap_or_default();
        let mut pod_labels = self.labels();
        pod_labels.insert(REVISION_LABEL.into(), s.revision.clone());
        let mut meta = self.meta();
        meta.labels
            .get_or_insert_with(Default::default)
            .insert(REVISION_LABEL.into(), s.revision.clone());
        Deployment {
            metadata: meta,
            spec: Some(DeploymentSpec {
                replicas: Some(s.replicas as i32),
                selector: LabelSelector {
                    match_labels: Some(BTreeMap::from([(
                        DEPLOYMENT_LABEL.to_string(),
                        self.name.to_string(),
                    )])),
                    ..Default::default()
                },
                // One new replica at a time, and none of the old ones gone before it is ready.
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(IntOrString::Int(1)),
                        max_unavailable: Some(IntOrString::Int(0)),
                    }),
                }),
                revision_history_limit: Some(2),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(pod_labels),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![container],
                        service_account_name: self.service_account.map(str::to_string),
                        termination_grace_period_seconds: Some(drain as i64 + 30),
                        ..placed_pod(&it)
                    }),
                },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The Service in front of the deployment's ready pods, owned by the Deployment.
    pub(crate) fn service(&self, deployment_uid: &str) -> Service {
        Service {
            metadata: self.owned_by(deployment_uid),
            spec: Some(ServiceSpec {
                selector: Some(BTreeMap::from([(
                    DEPLOYMENT_LABEL.to_string(),
                    self.name.to_string(),
                )])),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: SCORING_PORT,
                    target_port: Some(IntOrString::Int(SCORING_PORT)),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The Secret with the replicas' token, owned by the Deployment.
    pub(crate) fn secret(&self, token: &str, deployment_uid: &str) -> Secret {
        Secret {
            metadata: self.owned_by(deployment_uid),
            type_: Some("Opaque".into()),
            string_data: Some(BTreeMap::from([(TOKEN_KEY.to_string(), token.to_string())])),
            ..Default::default()
        }
    }
}

/// `name=value` environment variables.
fn values(env: &[(String, String)]) -> Vec<EnvVar> {
    env.iter()
        .map(|(k, v)| EnvVar {
            name: k.clone(),
            value: Some(v.clone()),
            ..Default::default()
        })
        .collect()
}

/// A variable from the downward API (`spec.nodeName`, `status.podIP`).
fn field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `TARN_RUNNER_TOKEN`, from the Secret `secret`.
fn token_from(secret: &str) -> EnvVar {
    EnvVar {
        name: "TARN_RUNNER_TOKEN".into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_string(),
                key: TOKEN_KEY.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An instance type's requests and limits, when it has any.
fn resources(it: &InstanceType) -> Option<ResourceRequirements> {
    let quantities = |pairs: &[(String, String)]| -> Option<BTreeMap<String, Quantity>> {
        (!pairs.is_empty()).then(|| {
            pairs
                .iter()
                .map(|(k, v)| (k.clone(), Quantity(v.clone())))
                .collect()
        })
    };
    (!it.requests.is_empty() || !it.limits.is_empty()).then(|| ResourceRequirements {
        requests: quantities(&it.requests),
        limits: quantities(&it.limits),
        ..Default::default()
    })
}

/// The work folder, an `emptyDir` mounted at `work_dir`.
fn work_mount(work_dir: &str) -> Vec<VolumeMount> {
    vec![VolumeMount {
        name: "work".into(),
        mount_path: work_dir.to_string(),
        ..Default::default()
    }]
}

/// A pod placed by its instance type (`nodeSelector`, tolerations), with the work folder.
fn placed_pod(it: &InstanceType) -> PodSpec {
    PodSpec {
        node_selector: (!it.node_selector.is_empty())
            .then(|| it.node_selector.iter().cloned().collect()),
        tolerations: (!it.tolerations.is_empty()).then(|| {
            it.tolerations
                .iter()
                .filter_map(|t| serde_json::from_value::<Toleration>(t.clone()).ok())
                .collect()
        }),
        volumes: Some(vec![Volume {
            name: "work".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use serde::de::DeserializeOwned;
    use std::path::PathBuf;

    fn objects<'a>(
        nodes: u32,
        it: Option<&'a InstanceType>,
        env: &'a [(String, String)],
    ) -> JobObjects<'a> {
        JobObjects {
            name: "tarn-train-0123456789",
            namespace: "ml",
            job_id: "ws0001/train",
            workspace: "default",
            job: "train",
            nodes,
            image: "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04",
            script: "#!/bin/sh\nexec tarn runner\n",
            env,
            instance_type: it,
            timeout_s: Some(600),
            service_account: None,
            work_dir: "/tmp/tarn",
        }
    }

    /// Compares a manifest with its golden file (`TARN_UPDATE_GOLDEN=1` rewrites them), and
    /// reads the file back as the Kubernetes type: nothing in it is unknown to Kubernetes.
    fn golden<T: Serialize + DeserializeOwned>(name: &str, manifest: &T) {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("src/backends/kubernetes/golden")
            .join(format!("{name}.json"));
        let actual = serde_json::to_value(manifest).unwrap();
        if std::env::var_os("TARN_UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, serde_json::to_string_pretty(&actual).unwrap() + "\n").unwrap();
        }
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (TARN_UPDATE_GOLDEN=1 writes it)", path.display()));
        let expected: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(actual, expected, "{name} differs from {}", path.display());
        let typed: T = serde_json::from_value(expected.clone()).unwrap();
        assert_eq!(
            serde_json::to_value(&typed).unwrap(),
            expected,
            "{name}: fields Kubernetes does not have"
        );
    }

    #[test]
    fn a_one_node_job_is_a_job_and_a_secret() {
        let env = [("TARN_ISOLATION".to_string(), "probe".to_string())];
        let gpu = InstanceType::parse(&serde_json::json!({
            "node_selector": {"agentpool": "gpu"},
            "resources": {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"nvidia.com/gpu": 1}},
            "tolerations": [{"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]
        }));
        let o = objects(1, Some(&gpu), &env);
        let job = o.job();
        golden("job", &job);
        assert!(o.service("uid-1").is_none());
        let secret = o.secret("s3cret-token", "uid-1");
        golden("secret", &secret);
        // The token is in the Secret only.
        assert!(
            !serde_json::to_string(&job)
                .unwrap()
                .contains("s3cret-token")
        );
    }

    #[test]
    fn a_job_on_several_nodes_is_an_indexed_job_with_a_headless_service() {
        let o = objects(3, None, &[]);
        golden("indexed_job", &o.job());
        golden("service", &o.service("uid-1").unwrap());
    }

    #[test]
    fn an_online_deployment_is_a_deployment_a_service_and_a_secret() {
        let probe = ProbeSettings {
            initial_delay: 10,
            period: 10,
            timeout: 2,
            success_threshold: 1,
            failure_threshold: 30,
        };
        let serve = crate::backends::Serve {
            id: "ws0001/scoring/blue".into(),
            workspace: "default".into(),
            endpoint: "scoring".into(),
            deployment: "blue".into(),
            revision: "0123456789ab".into(),
            replicas: 2,
            token: "s3cret-token".into(),
            plan: r#"{"workspace":"default","endpoint":"scoring","deployment":"blue"}"#.into(),
            image: None,
            instance_type: Some("gpu".into()),
            // The deployment's own resources win over the instance type's.
            resources: Some(serde_json::json!({"requests": {"cpu": "500m", "memory": "1Gi"}})),
            readiness: probe,
            liveness: probe,
            request_timeout: std::time::Duration::from_millis(5000),
        };
        let gpu = InstanceType::parse(&serde_json::json!({
            "node_selector": {"agentpool": "gpu"},
            "resources": {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"nvidia.com/gpu": 1}},
        }));
        let env = [("TARN_ISOLATION".to_string(), "probe".to_string())];
        let o = ServeObjects {
            name: "tarn-blue-0123456789",
            namespace: "ml",
            serve: &serve,
            image: "python:3.11-slim",
            script: "#!/bin/sh\nexec tarn replica\n",
            env: &env,
            instance_type: Some(&gpu),
            service_account: None,
            work_dir: "/tmp/tarn",
        };
        let deployment = o.deployment();
        golden("deployment", &deployment);
        golden("deployment_service", &o.service("uid-2"));
        golden("deployment_secret", &o.secret("s3cret-token", "uid-2"));
        assert!(
            !serde_json::to_string(&deployment)
                .unwrap()
                .contains("s3cret-token")
        );
    }

    #[test]
    fn names_are_dns_labels_unique_per_job_id() {
        let a = object_name("ws1/My_Job.2");
        assert!(a.starts_with("tarn-my-job-2-"), "{a}");
        assert_ne!(a, object_name("ws2/My_Job.2"));
        let long = object_name(&format!("ws/{}", "x".repeat(200)));
        assert!(long.len() <= 63, "{long}");
        assert!(
            long.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{long}"
        );
    }
}
