//! The Kubernetes objects Tarn makes for a job, built as the Kubernetes API's own types
//! (`k8s-openapi`), so that a field Kubernetes does not have cannot be written. Pure: the
//! golden tests below pin every manifest.
//!
//! A job is a `batch/v1` `Job` whose pods run the shared node script (`backends::node_script`)
//! in the environment's image; a job on several nodes is an Indexed Job (one pod per node,
//! `JOB_COMPLETION_INDEX` its rank) with a headless `Service` that gives its pods DNS names
//! (the ranks meet through the server, which tells them rank 0's address, as on every engine).
//! The runner's token is in a `Secret` that the Job owns (deleted with it), never in the pod
//! spec.

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, ObjectFieldSelector, PodSpec,
    PodTemplateSpec, ResourceRequirements, Secret, SecretKeySelector, Service, ServiceSpec,
    Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
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
        let mut env: Vec<EnvVar> = self
            .env
            .iter()
            .map(|(k, v)| EnvVar {
                name: k.clone(),
                value: Some(v.clone()),
                ..Default::default()
            })
            .collect();
        // The node the pod runs on, as the runner names it.
        env.push(EnvVar {
            name: "TARN_POD_NODE".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "spec.nodeName".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        env.push(EnvVar {
            name: "TARN_RUNNER_TOKEN".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: self.name.to_string(),
                    key: TOKEN_KEY.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        if self.multi() {
            env.push(EnvVar {
                name: "TARN_NODE_COUNT".into(),
                value: Some(self.nodes.to_string()),
                ..Default::default()
            });
        }
        let quantities = |pairs: &[(String, String)]| -> Option<BTreeMap<String, Quantity>> {
            (!pairs.is_empty()).then(|| {
                pairs
                    .iter()
                    .map(|(k, v)| (k.clone(), Quantity(v.clone())))
                    .collect()
            })
        };
        let it = self.instance_type.cloned().unwrap_or_default();
        let resources =
            (!it.requests.is_empty() || !it.limits.is_empty()).then(|| ResourceRequirements {
                requests: quantities(&it.requests),
                limits: quantities(&it.limits),
                ..Default::default()
            });
        let tolerations: Option<Vec<Toleration>> = (!it.tolerations.is_empty()).then(|| {
            it.tolerations
                .iter()
                .filter_map(|t| serde_json::from_value(t.clone()).ok())
                .collect()
        });
        let container = Container {
            name: "runner".into(),
            image: Some(self.image.to_string()),
            command: Some(vec!["sh".into(), "-c".into(), self.script.to_string()]),
            env: Some(env),
            resources,
            volume_mounts: Some(vec![VolumeMount {
                name: "work".into(),
                mount_path: self.work_dir.to_string(),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let pod = PodSpec {
            restart_policy: Some("Never".into()),
            containers: vec![container],
            node_selector: (!it.node_selector.is_empty())
                .then(|| it.node_selector.iter().cloned().collect()),
            tolerations,
            service_account_name: self.service_account.map(str::to_string),
            subdomain: self.multi().then(|| self.name.to_string()),
            volumes: Some(vec![Volume {
                name: "work".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            }]),
            ..Default::default()
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
