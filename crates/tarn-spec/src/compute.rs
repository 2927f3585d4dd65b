//! A stored compute document read once into a type: what the scheduler, the controllers and
//! the API views dispatch on, so that no file matches on the `type` string itself.

use serde_json::Value as Json;

/// What a compute is, as far as running things on it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ComputeSpec {
    /// `amlcompute`: an autoscaling pool of node slots on the server's machine.
    Cluster {
        min_instances: u32,
        max_instances: u32,
        idle_ms: i64,
        /// What one node may use, from its Azure VM `size` (none for a size Tarn does not know).
        node: Option<VmSize>,
    },
    /// `computeinstance`: one user's JupyterLab; it also runs jobs, one at a time.
    Instance,
    /// `slurm` (Tarn's own type): jobs go to a Slurm cluster, which places them on its nodes.
    Slurm(SlurmSpec),
    /// `ray` (Tarn's own type): jobs go to an existing Ray cluster through its Jobs API.
    Ray(RaySpec),
    /// `kubernetes`: jobs become Kubernetes Jobs in a namespace of a cluster.
    Kubernetes(KubernetesSpec),
    /// `synapsespark` with Tarn's `master`: an attached Spark standalone cluster; `type: spark`
    /// jobs' drivers run on this machine (`spark-submit` in client mode) against it.
    SparkPool(SparkSpec),
    /// A type Tarn stores but does not run jobs on yet (`virtualmachine`, `synapsespark`), by
    /// its name.
    Other(String),
}

/// An attached Spark standalone cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SparkSpec {
    /// `spark://host:port`.
    pub master: String,
    /// The master's web UI (`http://host:8080` unless given), whose `/json/` lists workers.
    pub web_ui: String,
}

#[derive(Clone, PartialEq, Eq)]
pub struct KubernetesSpec {
    pub namespace: String,
    /// A kubeconfig's text: from the vault, never shown.
    pub kubeconfig: Option<String>,
    /// The kubeconfig's context to use (else its current one).
    pub context: Option<String>,
    /// Use the service account of the pod Tarn runs in.
    pub in_cluster: bool,
    /// Instance types written in the compute, by name.
    pub instance_types: Vec<(String, InstanceType)>,
    pub default_instance_type: Option<String>,
    /// The image of a job whose environment names none.
    pub image: String,
    pub service_account: Option<String>,
    /// The most pods Tarn runs there at once (all of its jobs on this compute together).
    pub max_instances: Option<u32>,
    /// The folder in each pod that holds run folders and cached environments.
    pub work_dir: String,
}

impl std::fmt::Debug for KubernetesSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesSpec")
            .field("namespace", &self.namespace)
            .field(
                "kubeconfig",
                &self.kubeconfig.as_ref().map(|_| "<stored in vault>"),
            )
            .field("context", &self.context)
            .field("in_cluster", &self.in_cluster)
            .field("instance_types", &self.instance_types)
            .field("image", &self.image)
            .field("max_instances", &self.max_instances)
            .finish()
    }
}

/// Where a job's pods go and what each may use: Azure ML's `InstanceType` (its `nodeSelector`,
/// `resources` and tolerations).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstanceType {
    pub node_selector: Vec<(String, String)>,
    /// `cpu`, `memory`, `nvidia.com/gpu` as Kubernetes quantities.
    pub requests: Vec<(String, String)>,
    pub limits: Vec<(String, String)>,
    /// Kubernetes tolerations, as written.
    pub tolerations: Vec<Json>,
}

impl InstanceType {
    /// Reads one from the compute's YAML or from an `InstanceType` resource's `spec`
    /// (`nodeSelector`, camel-cased, there).
    pub fn parse(doc: &Json) -> InstanceType {
        let pairs = |v: Option<&Json>| -> Vec<(String, String)> {
            v.and_then(Json::as_object)
                .into_iter()
                .flatten()
                .map(|(k, v)| {
                    let text = match v {
                        Json::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), text)
                })
                .collect()
        };
        let resources = doc.get("resources");
        InstanceType {
            node_selector: pairs(doc.get("node_selector").or_else(|| doc.get("nodeSelector"))),
            requests: pairs(resources.and_then(|r| r.get("requests"))),
            limits: pairs(resources.and_then(|r| r.get("limits"))),
            tolerations: doc
                .get("tolerations")
                .and_then(Json::as_array)
                .cloned()
                .unwrap_or_default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlurmSpec {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    /// The most nodes Tarn asks for at once (all of its jobs on this compute together).
    pub max_instances: Option<u32>,
    /// Extra `sbatch` options, passed as given (`--constraint=fast`, `--mem=8G`).
    pub sbatch_options: Vec<String>,
    /// The `slurm.conf` the Slurm commands read (`SLURM_CONF`), when not the system's.
    pub slurm_conf: Option<String>,
    /// The folder on each node that holds run folders and cached environments.
    pub work_dir: String,
}

#[derive(Clone, PartialEq)]
pub struct RaySpec {
    /// The Ray dashboard's address, where the Jobs API answers (`http://head:8265`).
    pub address: String,
    /// Headers sent with every call (e.g. `Authorization`): from the vault, never shown.
    pub headers: Vec<(String, String)>,
    /// The most jobs Tarn runs there at once.
    pub max_instances: Option<u32>,
    /// CPUs Ray reserves for each job's runner (it places the runner on a node that has them).
    pub entrypoint_num_cpus: f64,
    /// The folder on each node that holds run folders and cached environments.
    pub work_dir: String,
}

impl std::fmt::Debug for RaySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaySpec")
            .field("address", &self.address)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("max_instances", &self.max_instances)
            .field("entrypoint_num_cpus", &self.entrypoint_num_cpus)
            .field("work_dir", &self.work_dir)
            .finish()
    }
}

impl Eq for RaySpec {}

/// What a node of an Azure VM size has: a local cluster's node slot may use no more (nor more
/// than its share of this machine).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmSize {
    pub cpus: u32,
    pub memory_mb: u64,
}

/// vCPUs and memory (GiB) of the Azure VM sizes Azure ML's documentation and examples use.
const VM_SIZES: &[(&str, u32, f64)] = &[
    ("Standard_A1_v2", 1, 2.0),
    ("Standard_A2_v2", 2, 4.0),
    ("Standard_A4_v2", 4, 8.0),
    ("Standard_A8_v2", 8, 16.0),
    ("Standard_D2_v2", 2, 7.0),
    ("Standard_D3_v2", 4, 14.0),
    ("Standard_D4_v2", 8, 28.0),
    ("Standard_D11_v2", 2, 14.0),
    ("Standard_D12_v2", 4, 28.0),
    ("Standard_D13_v2", 8, 56.0),
    ("Standard_DS1_v2", 1, 3.5),
    ("Standard_DS2_v2", 2, 7.0),
    ("Standard_DS3_v2", 4, 14.0),
    ("Standard_DS4_v2", 8, 28.0),
    ("Standard_DS5_v2", 16, 56.0),
    ("Standard_DS11_v2", 2, 14.0),
    ("Standard_DS12_v2", 4, 28.0),
    ("Standard_D2s_v3", 2, 8.0),
    ("Standard_D4s_v3", 4, 16.0),
    ("Standard_D8s_v3", 8, 32.0),
    ("Standard_D16s_v3", 16, 64.0),
    ("Standard_D2as_v4", 2, 8.0),
    ("Standard_D4as_v4", 4, 16.0),
    ("Standard_E4s_v3", 4, 32.0),
    ("Standard_E8s_v3", 8, 64.0),
    ("Standard_F2s_v2", 2, 4.0),
    ("Standard_F4s_v2", 4, 8.0),
    ("Standard_F8s_v2", 8, 16.0),
    ("Standard_NC4as_T4_v3", 4, 28.0),
    ("Standard_NC6s_v3", 6, 112.0),
    ("Standard_NC24ads_A100_v4", 24, 220.0),
];

/// A VM size by name (as Azure, without regard to case).
pub fn vm_size(name: &str) -> Option<VmSize> {
    VM_SIZES
        .iter()
        .find(|(n, ..)| n.eq_ignore_ascii_case(name))
        .map(|&(_, cpus, gib)| VmSize {
            cpus,
            memory_mb: (gib * 1024.0) as u64,
        })
}

impl ComputeSpec {
    /// Reads a normalised compute document (defaults already applied by the validator).
    pub fn parse(doc: &Json) -> ComputeSpec {
        let text = |f: &str| doc.get(f).and_then(Json::as_str).map(str::to_string);
        let int = |f: &str| doc.get(f).and_then(Json::as_i64);
        let count =
            |f: &str, default: i64| int(f).unwrap_or(default).clamp(0, u32::MAX as i64) as u32;
        match doc.get("type").and_then(Json::as_str).unwrap_or("") {
            "amlcompute" => ComputeSpec::Cluster {
                min_instances: count("min_instances", 0),
                max_instances: count("max_instances", 1),
                idle_ms: int("idle_time_before_scale_down").unwrap_or(120).max(0) * 1000,
                node: doc.get("size").and_then(Json::as_str).and_then(vm_size),
            },
            "computeinstance" => ComputeSpec::Instance,
            "slurm" => ComputeSpec::Slurm(SlurmSpec {
                partition: text("partition"),
                account: text("account"),
                qos: text("qos"),
                max_instances: int("max_instances").map(|_| count("max_instances", 0)),
                sbatch_options: doc
                    .get("sbatch_options")
                    .and_then(Json::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|o| o.as_str().map(str::to_string))
                    .collect(),
                slurm_conf: text("slurm_conf"),
                work_dir: text("work_dir").unwrap_or_else(|| "/var/tmp/tarn".into()),
            }),
            "ray" => ComputeSpec::Ray(RaySpec {
                address: text("address")
                    .unwrap_or_default()
                    .trim_end_matches('/')
                    .to_string(),
                headers: doc
                    .get("headers")
                    .and_then(Json::as_object)
                    .into_iter()
                    .flatten()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect(),
                max_instances: int("max_instances").map(|_| count("max_instances", 0)),
                entrypoint_num_cpus: doc
                    .get("entrypoint_num_cpus")
                    .and_then(Json::as_f64)
                    .unwrap_or(1.0)
                    .max(0.0),
                work_dir: text("work_dir").unwrap_or_else(|| "/var/tmp/tarn".into()),
            }),
            "kubernetes" => ComputeSpec::Kubernetes(KubernetesSpec {
                namespace: text("namespace").unwrap_or_else(|| "default".into()),
                kubeconfig: text("kubeconfig"),
                context: text("context"),
                in_cluster: doc.get("in_cluster").and_then(Json::as_bool) == Some(true),
                instance_types: doc
                    .get("instance_types")
                    .and_then(Json::as_object)
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), InstanceType::parse(v)))
                    .collect(),
                default_instance_type: text("default_instance_type"),
                image: text("image").unwrap_or_else(|| "python:3.11-slim".into()),
                service_account: text("service_account"),
                max_instances: int("max_instances").map(|_| count("max_instances", 0)),
                work_dir: text("work_dir").unwrap_or_else(|| "/tmp/tarn".into()),
            }),
            "synapsespark" => match text("master") {
                Some(master) => {
                    let host = master
                        .trim_start_matches("spark://")
                        .split([':', '/'])
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    ComputeSpec::SparkPool(SparkSpec {
                        web_ui: text("web_ui")
                            .unwrap_or_else(|| format!("http://{host}:8080"))
                            .trim_end_matches('/')
                            .to_string(),
                        master,
                    })
                }
                None => ComputeSpec::Other("synapsespark".into()),
            },
            other => ComputeSpec::Other(other.to_string()),
        }
    }

    pub fn is_instance(&self) -> bool {
        matches!(self, ComputeSpec::Instance)
    }

    /// Whether reading it needs its secrets put back (an engine's credentials).
    pub fn needs_secrets(&self) -> bool {
        matches!(self, ComputeSpec::Ray(_) | ComputeSpec::Kubernetes(_))
    }

    /// The most nodes (jobs, for one-node jobs) Tarn asks an engine for at once.
    pub fn engine_max_instances(&self) -> Option<u32> {
        match self {
            ComputeSpec::Slurm(s) => s.max_instances,
            ComputeSpec::Ray(r) => r.max_instances,
            ComputeSpec::Kubernetes(k) => k.max_instances,
            _ => None,
        }
    }

    /// The engine that runs its jobs, as `compute list` shows it.
    pub fn engine(&self) -> &'static str {
        match self {
            ComputeSpec::Cluster { .. } | ComputeSpec::Instance => "local",
            ComputeSpec::Slurm(_) => "slurm",
            ComputeSpec::Ray(_) => "ray",
            ComputeSpec::Kubernetes(_) => "kubernetes",
            ComputeSpec::SparkPool(_) => "spark",
            ComputeSpec::Other(_) => "none",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_each_type() {
        assert_eq!(
            ComputeSpec::parse(&json!({"type": "amlcompute", "max_instances": 3})),
            ComputeSpec::Cluster {
                min_instances: 0,
                max_instances: 3,
                idle_ms: 120_000,
                node: None,
            }
        );
        let ComputeSpec::Cluster { node, .. } =
            ComputeSpec::parse(&json!({"type": "amlcompute", "size": "standard_ds3_v2"}))
        else {
            panic!("a cluster")
        };
        assert_eq!(
            node,
            Some(VmSize {
                cpus: 4,
                memory_mb: 14 * 1024
            }),
            "sizes are matched without regard to case"
        );
        assert!(ComputeSpec::parse(&json!({"type": "computeinstance"})).is_instance());
        let ComputeSpec::Slurm(s) = ComputeSpec::parse(&json!({
            "type": "slurm", "partition": "gpu", "max_instances": 4,
            "sbatch_options": ["--mem=8G"], "work_dir": "/scratch/tarn"
        })) else {
            panic!("not slurm")
        };
        assert_eq!(s.partition.as_deref(), Some("gpu"));
        assert_eq!(s.max_instances, Some(4));
        assert_eq!(s.sbatch_options, vec!["--mem=8G"]);
        assert_eq!(s.work_dir, "/scratch/tarn");
        let ComputeSpec::Ray(r) = ComputeSpec::parse(&json!({
            "type": "ray", "address": "http://head:8265/",
            "headers": {"Authorization": "Bearer s3cret"}
        })) else {
            panic!("not ray")
        };
        assert_eq!(r.address, "http://head:8265");
        assert!(!format!("{r:?}").contains("s3cret"), "headers never show");
        let ComputeSpec::Kubernetes(k) = ComputeSpec::parse(&json!({
            "type": "kubernetes", "namespace": "ml", "kubeconfig": "apiVersion: v1\ntoken: s3cret",
            "instance_types": {"gpu": {
                "node_selector": {"pool": "gpu"},
                "resources": {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"nvidia.com/gpu": 1}}
            }}
        })) else {
            panic!("not kubernetes")
        };
        assert_eq!(k.namespace, "ml");
        assert_eq!(k.image, "python:3.11-slim");
        let gpu = &k.instance_types[0].1;
        assert_eq!(gpu.node_selector, vec![("pool".into(), "gpu".into())]);
        assert_eq!(gpu.limits, vec![("nvidia.com/gpu".into(), "1".into())]);
        assert!(
            !format!("{k:?}").contains("s3cret"),
            "the kubeconfig never shows"
        );
        assert_eq!(
            ComputeSpec::parse(&json!({"type": "virtualmachine"})),
            ComputeSpec::Other("virtualmachine".into())
        );
    }
}
