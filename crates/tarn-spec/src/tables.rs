//! The Azure ML CLI v2 YAML schemas (plus Tarn's own datastore types), as data for the
//! validator in `schema.rs`. Field names, defaults and enums follow
//! `shared/reference/azureml-cli-v2.md`; where Azure's docs and SDK disagree on a default
//! (amlcompute `max_instances`: 1 in the YAML docs, 4 in the SDK) we follow the YAML docs.

use crate::names::NameRule;
use crate::schema::{Field, Lit, PathKind, Tagged, Ty, f};

// Why some fields are stored but not acted on. One sentence each, shown as warnings.
const NO_CONTAINERS: &str = "there is no container runtime here; Tarn runs jobs in Python environments built from `conda_file` and otherwise on the host Python";
/// An environment's image: a Kubernetes compute's pods run it; nothing else does.
const IMAGE_ON_KUBERNETES_ONLY: &str = "only Kubernetes computes run images (as the pod's image); elsewhere Tarn runs jobs in Python environments built from `conda_file` and otherwise on the host Python";
const NO_AZURE_NETWORK: &str = "Azure network settings have no local meaning";
const NO_AZURE_IDENTITY: &str =
    "Azure managed identities do not exist here; Tarn authorizes with its own tokens and roles";
const NO_ARM: &str = "Azure resource ids are recorded for reference only";
const NO_VM_SIZES: &str = "VM sizes are recorded; local nodes share this machine's CPUs and memory";
const NO_SSH: &str = "SSH access to nodes is not offered";
const NO_APP_INSIGHTS: &str = "Application Insights is not available; use the /metrics endpoint";
const NO_AZURE_RESOURCES: &str = "Tarn keeps the workspace's storage, secrets and images itself; the Azure resource is recorded only";

const TAGS: Ty = Ty::Map(&Ty::Scalar);
const PROPERTIES: Ty = Ty::Map(&Ty::Any);

static IDENTITY: Ty = Ty::Obj(&[
    f(
        "type",
        Ty::Enum(&[
            "system_assigned",
            "user_assigned",
            "system_assigned,user_assigned",
            "managed",
            "managed_identity",
            "user_identity",
            "aml_token",
            "none",
        ]),
    ),
    f("user_assigned_identities", Ty::List(&Ty::Map(&Ty::Str))),
    f("client_id", Ty::Str),
    f("resource_id", Ty::Str),
]);

static SSH_SETTINGS: Ty = Ty::Obj(&[
    f("admin_username", Ty::Str),
    f("admin_password", Ty::Secret(&Ty::Str)),
    f("ssh_key_value", Ty::Str),
    f("ssh_private_key_file", Ty::Str),
    f("ssh_port", Ty::Int),
]);

static NETWORK_SETTINGS: Ty = Ty::Obj(&[
    f("vnet_name", Ty::Str),
    f("subnet", Ty::Str),
    f("public_ip_address", Ty::Str),
]);

// ---------------------------------------------------------------------------------------------
// Workspace

pub static WORKSPACE: Ty = Ty::Obj(&[
    f("name", Ty::Name(NameRule::Workspace)).req(),
    f("display_name", Ty::Str),
    f("description", Ty::Str),
    f("tags", TAGS),
    f("location", Ty::Str).warn("workspaces live on this Tarn server"),
    f("resource_group", Ty::Str).warn(NO_ARM),
    f("hbi_workspace", Ty::Bool).warn("high-business-impact mode is an Azure service setting"),
    f("storage_account", Ty::Str).warn(NO_AZURE_RESOURCES),
    f("key_vault", Ty::Str).warn(NO_AZURE_RESOURCES),
    f("container_registry", Ty::Str).warn(NO_AZURE_RESOURCES),
    f("application_insights", Ty::Str).warn(NO_AZURE_RESOURCES),
    f(
        "customer_managed_key",
        Ty::Obj(&[f("key_vault", Ty::Str), f("key_uri", Ty::Str)]),
    )
    .warn("the vault is encrypted with Tarn's own master key"),
    f("image_build_compute", Ty::Str).warn(NO_CONTAINERS),
    f("public_network_access", Ty::Enum(&["enabled", "disabled"])).warn(NO_AZURE_NETWORK),
    f("managed_network", Ty::Any).warn(NO_AZURE_NETWORK),
    f("identity", IDENTITY_REF).warn(NO_AZURE_IDENTITY),
    f("primary_user_assigned_identity", Ty::Str).warn(NO_AZURE_IDENTITY),
    f("enable_data_isolation", Ty::Bool).warn("workspaces are always isolated from each other"),
    f("kind", Ty::Enum(&["default", "hub", "project"])).warn("hubs and projects are not modelled"),
    f("storage", Ty::Tagged(&WORKSPACE_STORAGE)),
    // Where MLflow's artifacts go (`mlflow server --artifacts-destination`): a folder
    // (`type: local`) or a bucket; may change later.
    f("artifact_store", Ty::Tagged(&WORKSPACE_STORAGE)),
    // How long MLflow traces are kept, in days (unset: for ever); older ones are deleted.
    f("trace_retention_days", Ty::Int),
]);

const IDENTITY_REF: Ty = Ty::StrOr(&IDENTITY);

// ---------------------------------------------------------------------------------------------
// Compute

/// A number, or a list of them (`hours: 4` or `hours: [4, 5]`).
const ONE_OR_MORE: Ty = Ty::ScalarOr(&Ty::List(&Ty::Scalar));

const RECURRENCE_PATTERN: Ty = Ty::Obj(&[
    f("hours", ONE_OR_MORE),
    f("minutes", ONE_OR_MORE),
    f("week_days", ONE_OR_MORE),
    f("month_days", ONE_OR_MORE),
]);

/// When a schedule fires (a schedule's, or a compute instance's start/stop); what the
/// fields mean together is `trigger::Trigger`'s, checked in `checks.rs`.
static SCHEDULE_TRIGGER: Ty = Ty::Obj(&[
    f("type", Ty::Enum(&["cron", "recurrence"])).req(),
    f("expression", Ty::Str),
    f("start_time", Ty::Str),
    f("end_time", Ty::Str),
    f("time_zone", Ty::Str),
    f(
        "frequency",
        Ty::Enum(&["minute", "hour", "day", "week", "month"]),
    ),
    f("interval", Ty::Int),
    f("schedule", RECURRENCE_PATTERN),
]);

static SETUP_SCRIPT: Ty = Ty::Obj(&[
    f("path", Ty::Str),
    f("command", Ty::Str),
    f("timeout_minutes", Ty::Int),
]);

pub static COMPUTE: Ty = Ty::Tagged(&Tagged {
    tag: "type",
    default: None,
    common: &[
        f("name", Ty::Name(NameRule::Compute)).req(),
        f("description", Ty::Str),
        f("tags", TAGS),
        f("location", Ty::Str).warn("computes run where this Tarn server runs them"),
        f("identity", IDENTITY_REF).warn(NO_AZURE_IDENTITY),
    ],
    variants: &[
        (
            "amlcompute",
            &[
                f("size", Ty::Str)
                    .def(Lit::Str("Standard_DS3_v2"))
                    .warn(NO_VM_SIZES),
                f("tier", Ty::Enum(&["dedicated", "low_priority"])).def(Lit::Str("dedicated")),
                f("min_instances", Ty::Int).def(Lit::Int(0)),
                f("max_instances", Ty::Int).def(Lit::Int(1)),
                f("idle_time_before_scale_down", Ty::Int).def(Lit::Int(120)),
                f("ssh_public_access_enabled", Ty::Bool).warn(NO_SSH),
                f("ssh_settings", SSH_REF).warn(NO_SSH),
                f("network_settings", NETWORK_REF).warn(NO_AZURE_NETWORK),
                f("enable_node_public_ip", Ty::Bool).warn(NO_AZURE_NETWORK),
            ],
        ),
        (
            "computeinstance",
            &[
                f("size", Ty::Str)
                    .def(Lit::Str("Standard_DS3_v2"))
                    .warn(NO_VM_SIZES),
                f(
                    "create_on_behalf_of",
                    Ty::Obj(&[
                        f("user_tenant_id", Ty::Str),
                        f("user_object_id", Ty::Str).req(),
                    ]),
                ),
                f("idle_time_before_shutdown_minutes", Ty::Int),
                f("idle_time_before_shutdown", Ty::Str),
                f(
                    "setup_scripts",
                    Ty::Obj(&[
                        f("startup_script", SETUP_REF),
                        f("creation_script", SETUP_REF),
                    ]),
                ),
                f(
                    "schedules",
                    Ty::Obj(&[f(
                        "compute_start_stop",
                        Ty::List(&Ty::Obj(&[
                            f("action", Ty::Enum(&["start", "stop"])).req(),
                            f("trigger", TRIGGER_REF).req(),
                            f("state", Ty::Enum(&["enabled", "disabled"])).def(Lit::Str("enabled")),
                        ])),
                    )]),
                ),
                f("ssh_public_access_enabled", Ty::Bool).warn(NO_SSH),
                f("ssh_settings", SSH_REF).warn(NO_SSH),
                f("network_settings", NETWORK_REF).warn(NO_AZURE_NETWORK),
                f("enable_node_public_ip", Ty::Bool).warn(NO_AZURE_NETWORK),
                f("enable_sso", Ty::Bool).warn("single sign-on is Tarn's own token login"),
                f("enable_root_access", Ty::Bool).warn("instances run as the server's user"),
                f("custom_applications", Ty::Any).warn(NO_CONTAINERS),
            ],
        ),
        (
            "kubernetes",
            &[
                f("resource_id", Ty::Str).warn(NO_ARM),
                f("namespace", Ty::Str).def(Lit::Str("default")),
                // Tarn's own: how the API server is reached. A kubeconfig file (the CLI sends
                // its text, which goes to the vault and never shows), or the service account
                // of the pod Tarn runs in.
                f("kubeconfig", Ty::Secret(&Ty::Path(PathKind::Text))),
                f("context", Ty::Str),
                f("in_cluster", Ty::Bool).def(Lit::Bool(false)),
                // Azure ML's instance types, written in the compute (also read from the
                // cluster's `InstanceType` resources).
                f("instance_types", Ty::Map(&INSTANCE_TYPE)),
                f("default_instance_type", Ty::Str),
                // The image of a job whose environment has no `image:` (a conda-only one).
                f("image", Ty::Str).def(Lit::Str("python:3.11-slim")),
                f("service_account", Ty::Str),
                f("max_instances", Ty::Int),
                f("work_dir", Ty::Str).def(Lit::Str("/tmp/tarn")),
            ],
        ),
        (
            "virtualmachine",
            &[
                f("resource_id", Ty::Str).warn(NO_ARM),
                f("ssh_settings", SSH_REF),
            ],
        ),
        (
            "synapsespark",
            &[
                f("resource_id", Ty::Str).warn(NO_ARM),
                f("auto_scale_settings", Ty::Any),
                f("identity", IDENTITY_REF).warn(NO_AZURE_IDENTITY),
                // Tarn's own: the Spark standalone cluster's master (`spark://host:7077`) and
                // its web UI (`http://host:8080` unless given), which lists the workers.
                f("master", Ty::Str),
                f("web_ui", Ty::Str),
            ],
        ),
        // Tarn's own: a Slurm cluster reached through the Slurm CLI on the server's host.
        (
            "slurm",
            &[
                f("partition", Ty::Str),
                f("account", Ty::Str),
                f("qos", Ty::Str),
                f("max_instances", Ty::Int),
                f("sbatch_options", Ty::List(&Ty::Str)),
                f("slurm_conf", Ty::Str),
                f("work_dir", Ty::Str).def(Lit::Str("/var/tmp/tarn")),
            ],
        ),
        // Tarn's own: an existing Ray cluster, reached through its Jobs REST API.
        (
            "ray",
            &[
                f("address", Ty::Str).req(),
                f("headers", Ty::Secret(&Ty::Map(&Ty::Str))),
                f("max_instances", Ty::Int),
                f("entrypoint_num_cpus", Ty::Num).def(Lit::Int(1)),
                f("work_dir", Ty::Str).def(Lit::Str("/var/tmp/tarn")),
            ],
        ),
    ],
});

/// An instance type, as Azure ML's `InstanceType` resource has it: where its pods go and what
/// each may use.
static INSTANCE_TYPE: Ty = Ty::Obj(&[
    f("node_selector", Ty::Map(&Ty::Str)),
    f(
        "resources",
        Ty::Obj(&[
            f("requests", Ty::Map(&Ty::Scalar)),
            f("limits", Ty::Map(&Ty::Scalar)),
        ]),
    ),
    f("tolerations", Ty::List(&Ty::Map(&Ty::Any))),
]);

const SSH_REF: Ty = Ty::StrOr(&SSH_SETTINGS);
const NETWORK_REF: Ty = Ty::StrOr(&NETWORK_SETTINGS);
const SETUP_REF: Ty = Ty::StrOr(&SETUP_SCRIPT);
const TRIGGER_REF: Ty = Ty::StrOr(&SCHEDULE_TRIGGER);

// ---------------------------------------------------------------------------------------------
// Datastores

static SERVICE_PRINCIPAL: Ty = Ty::Secret(&Ty::Obj(&[
    f("tenant_id", Ty::Str),
    f("client_id", Ty::Str),
    f("client_secret", Ty::Str),
    f("authority_url", Ty::Str),
    f("resource_url", Ty::Str),
    f("thumbprint", Ty::Str),
    f("certificate", Ty::Str),
]));

static ACCOUNT_KEY_OR_SAS: Ty = Ty::Secret(&Ty::Obj(&[
    f("account_key", Ty::Str),
    f("sas_token", Ty::Str),
]));

const SP_REF: Ty = Ty::StrOr(&SERVICE_PRINCIPAL);
const KEY_REF: Ty = Ty::StrOr(&ACCOUNT_KEY_OR_SAS);

/// Tarn's extension: a folder inside the container or bucket that the datastore is rooted at.
const PREFIX: Field = f("prefix", Ty::Str);

/// The datastore types and their fields, shared by datastores and a workspace's `storage`.
const DATASTORE_VARIANTS: &[(&str, &[Field])] = &[
    (
        "azure_blob",
        &[
            f("account_name", Ty::Str).req(),
            f("container_name", Ty::Str).req(),
            PREFIX,
            f("endpoint", Ty::Str).def(Lit::Str("core.windows.net")),
            f("protocol", Ty::Enum(&["https", "wasbs"])).def(Lit::Str("https")),
            f("credentials", KEY_REF),
            f("service_data_access_auth_identity", Ty::Str).warn(NO_AZURE_IDENTITY),
        ],
    ),
    (
        "azure_file",
        &[
            f("account_name", Ty::Str).req(),
            f("file_share_name", Ty::Str).req(),
            // Tarn reaches a file share through a mount of it on this machine.
            f("path", Ty::Str),
            f("endpoint", Ty::Str).def(Lit::Str("core.windows.net")),
            f("protocol", Ty::Enum(&["https", "wasbs"])).def(Lit::Str("https")),
            f("credentials", KEY_REF),
        ],
    ),
    (
        "azure_data_lake_gen2",
        &[
            f("account_name", Ty::Str).req(),
            f("filesystem", Ty::Str).req(),
            PREFIX,
            f("endpoint", Ty::Str).def(Lit::Str("core.windows.net")),
            f("protocol", Ty::Enum(&["https", "abfss"])).def(Lit::Str("https")),
            f("credentials", SP_REF),
        ],
    ),
    (
        "azure_data_lake_gen1",
        &[f("store_name", Ty::Str).req(), f("credentials", SP_REF)],
    ),
    (
        "one_lake",
        &[
            f("one_lake_workspace_name", Ty::Str).req(),
            f(
                "artifact",
                Ty::Obj(&[
                    f("name", Ty::Str).req(),
                    f("type", Ty::Enum(&["lake_house"])).def(Lit::Str("lake_house")),
                ]),
            )
            .req(),
            f("endpoint", Ty::Str),
            f("credentials", SP_REF),
        ],
    ),
    ("local", &[f("path", Ty::Path(PathKind::LocalDir)).req()]),
    (
        "s3",
        &[
            f("bucket", Ty::Str).req(),
            PREFIX,
            f("endpoint_url", Ty::Str),
            f("region", Ty::Str),
            f(
                "credentials",
                Ty::Secret(&Ty::Obj(&[
                    f("access_key_id", Ty::Str).req(),
                    f("secret_access_key", Ty::Str).req(),
                    f("session_token", Ty::Str),
                ])),
            ),
        ],
    ),
    (
        "gcs",
        &[
            f("bucket", Ty::Str).req(),
            PREFIX,
            f(
                "credentials",
                Ty::Secret(&Ty::Obj(&[f("service_account_key", Ty::Any).req()])),
            ),
        ],
    ),
];

pub static DATASTORE: Ty = Ty::Tagged(&Tagged {
    tag: "type",
    default: None,
    common: &[
        f("name", Ty::Name(NameRule::Datastore)).req(),
        f("description", Ty::Str),
        f("tags", TAGS),
        f("properties", PROPERTIES),
    ],
    variants: DATASTORE_VARIANTS,
});

/// A workspace's `storage`: where its blob-type default datastores live (Tarn's extension).
static WORKSPACE_STORAGE: Tagged = Tagged {
    tag: "type",
    default: None,
    common: &[
        f("name", Ty::Name(NameRule::Datastore)),
        f("description", Ty::Str),
        f("tags", TAGS),
        f("properties", PROPERTIES),
    ],
    variants: DATASTORE_VARIANTS,
};

// ---------------------------------------------------------------------------------------------
// Assets: data, environments, models

pub static DATA: Ty = Ty::Tagged(&Tagged {
    tag: "type",
    default: Some("uri_folder"),
    common: &[
        f("name", Ty::Name(NameRule::Asset)).req(),
        f("version", Ty::Version),
        f("description", Ty::Str),
        f("tags", TAGS),
        f("properties", PROPERTIES),
        f("path", Ty::Path(PathKind::Data)).req(),
    ],
    variants: &[("uri_file", &[]), ("uri_folder", &[]), ("mltable", &[])],
});

/// Environment fields shared by registered and inline environments.
macro_rules! environment_fields {
    ($($name_field:expr),*) => {
        &[
            $($name_field,)*
            f("description", Ty::Str),
            f("tags", TAGS),
            f("properties", PROPERTIES),
            f("image", Ty::Str).warn(IMAGE_ON_KUBERNETES_ONLY),
            f("conda_file", Ty::PathOr(PathKind::Conda, &Ty::Any)),
            f(
                "build",
                Ty::Obj(&[
                    f("path", Ty::Path(PathKind::BuildContext)).req(),
                    f("dockerfile_path", Ty::Str).def(Lit::Str("Dockerfile")),
                ]),
            )
            .warn(NO_CONTAINERS),
            f("os_type", Ty::Enum(&["linux", "windows"])).def(Lit::Str("linux")),
            f("inference_config", Ty::Any).warn(NO_CONTAINERS),
        ]
    };
}

pub static ENVIRONMENT: Ty = Ty::Obj(environment_fields!(
    f("name", Ty::Name(NameRule::Asset)).req(),
    f("version", Ty::Version)
));

static INLINE_ENVIRONMENT: Ty = Ty::Obj(environment_fields!(
    f("name", Ty::Name(NameRule::Asset)),
    f("version", Ty::Version)
));

/// An environment reference (`azureml:name:version`, a registry URI) or an inline environment.
const ENVIRONMENT_REF: Ty = Ty::StrOr(&INLINE_ENVIRONMENT);

pub static MODEL: Ty = Ty::Tagged(&Tagged {
    tag: "type",
    default: Some("custom_model"),
    common: &[
        f("name", Ty::Name(NameRule::Asset)).req(),
        f("version", Ty::Version),
        f("description", Ty::Str),
        f("tags", TAGS),
        f("properties", PROPERTIES),
        f("path", Ty::Path(PathKind::Model)).req(),
        f("flavors", Ty::Map(&Ty::Any)),
        f("stage", Ty::Str),
    ],
    variants: &[
        ("custom_model", &[]),
        ("mlflow_model", &[]),
        ("triton_model", &[]),
    ],
});

// ---------------------------------------------------------------------------------------------
// Components and jobs

const IO_TYPES: &[&str] = &[
    "number",
    "integer",
    "boolean",
    "string",
    "uri_file",
    "uri_folder",
    "mltable",
    "mlflow_model",
    "custom_model",
    "triton_model",
];
const OUTPUT_TYPES: &[&str] = &[
    "uri_file",
    "uri_folder",
    "mltable",
    "mlflow_model",
    "custom_model",
    "triton_model",
];
const INPUT_MODES: &[&str] = &[
    "ro_mount",
    "download",
    "direct",
    "eval_mount",
    "eval_download",
];
const OUTPUT_MODES: &[&str] = &["rw_mount", "upload", "direct"];

static COMPONENT_INPUT: Ty = Ty::Obj(&[
    f("type", Ty::Enum(IO_TYPES)).req(),
    f("description", Ty::Str),
    f("default", Ty::Scalar),
    f("optional", Ty::Bool).def(Lit::Bool(false)),
    f("min", Ty::Num),
    f("max", Ty::Num),
    f("enum", Ty::List(&Ty::Scalar)),
    f("mode", Ty::Enum(INPUT_MODES)),
]);

static COMPONENT_OUTPUT: Ty = Ty::Obj(&[
    f("type", Ty::Enum(OUTPUT_TYPES)).req(),
    f("description", Ty::Str),
    f("mode", Ty::Enum(OUTPUT_MODES)),
    f("is_control", Ty::Bool),
]);

static JOB_INPUT: Ty = Ty::ScalarOr(&Ty::Obj(&[
    f("type", Ty::Enum(IO_TYPES)),
    f("path", Ty::Path(PathKind::Data)),
    f("mode", Ty::Enum(INPUT_MODES)),
    f("value", Ty::Scalar),
    f("default", Ty::Scalar),
    f("optional", Ty::Bool),
    f("description", Ty::Str),
    f("datastore", Ty::Str),
]));

static JOB_OUTPUT: Ty = Ty::StrOr(&Ty::Obj(&[
    f("type", Ty::Enum(OUTPUT_TYPES)),
    f("path", Ty::Str),
    f("mode", Ty::Enum(OUTPUT_MODES)),
    f("name", Ty::Name(NameRule::Asset)),
    f("version", Ty::Version),
    f("description", Ty::Str),
    f("datastore", Ty::Str),
]));

static DISTRIBUTION: Ty = Ty::Tagged(&Tagged {
    tag: "type",
    default: None,
    common: &[],
    variants: &[
        (
            "mpi",
            &[f("process_count_per_instance", Ty::Int).def(Lit::Int(1))],
        ),
        (
            "pytorch",
            &[f("process_count_per_instance", Ty::Int).def(Lit::Int(1))],
        ),
        (
            "tensorflow",
            &[
                f("worker_count", Ty::Int),
                f("parameter_server_count", Ty::Int).def(Lit::Int(0)),
            ],
        ),
        (
            "ray",
            &[
                f("address", Ty::Str),
                f("port", Ty::Int),
                f("dashboard_port", Ty::Int),
                f("include_dashboard", Ty::Bool),
                f("head_node_additional_args", Ty::Str),
                f("worker_node_additional_args", Ty::Str),
            ],
        ),
    ],
});

static RESOURCES: Ty = Ty::Obj(&[
    f("instance_count", Ty::Int).def(Lit::Int(1)),
    f("instance_type", Ty::Str).warn(NO_VM_SIZES),
    f("shm_size", Ty::Str),
    f("docker_args", Ty::Str).warn(NO_CONTAINERS),
    f("locations", Ty::List(&Ty::Str)).warn("jobs run where this Tarn server runs them"),
    f("max_instance_count", Ty::Int),
    f("properties", PROPERTIES),
]);

static LIMITS: Ty = Ty::Obj(&[f("timeout", Ty::Int)]);

static QUEUE_SETTINGS: Ty = Ty::Obj(&[
    f(
        "job_tier",
        Ty::Enum(&["spot", "basic", "standard", "premium", "null"]),
    ),
    f("priority", Ty::Enum(&["low", "medium", "high"])),
]);

static SEARCH_EXPRESSION: Ty = Ty::Tagged(&Tagged {
    tag: "type",
    default: None,
    common: &[],
    variants: &[
        ("choice", &[f("values", Ty::List(&Ty::Any)).req()]),
        ("randint", &[f("upper", Ty::Int).req()]),
        (
            "uniform",
            &[f("min_value", Ty::Num).req(), f("max_value", Ty::Num).req()],
        ),
        (
            "quniform",
            &[
                f("min_value", Ty::Num).req(),
                f("max_value", Ty::Num).req(),
                f("q", Ty::Num).req(),
            ],
        ),
        (
            "loguniform",
            &[f("min_value", Ty::Num).req(), f("max_value", Ty::Num).req()],
        ),
        (
            "qloguniform",
            &[
                f("min_value", Ty::Num).req(),
                f("max_value", Ty::Num).req(),
                f("q", Ty::Num).req(),
            ],
        ),
        (
            "normal",
            &[f("mu", Ty::Num).req(), f("sigma", Ty::Num).req()],
        ),
        (
            "qnormal",
            &[
                f("mu", Ty::Num).req(),
                f("sigma", Ty::Num).req(),
                f("q", Ty::Num).req(),
            ],
        ),
        (
            "lognormal",
            &[f("mu", Ty::Num).req(), f("sigma", Ty::Num).req()],
        ),
        (
            "qlognormal",
            &[
                f("mu", Ty::Num).req(),
                f("sigma", Ty::Num).req(),
                f("q", Ty::Num).req(),
            ],
        ),
    ],
});

static SAMPLING_ALGORITHM: Ty = Ty::Obj(&[
    f("type", Ty::Enum(&["random", "grid", "bayesian"])).req(),
    f("seed", Ty::Int),
    f("rule", Ty::Enum(&["random", "sobol"])),
]);

static EARLY_TERMINATION: Ty = Ty::Tagged(&Tagged {
    tag: "type",
    default: None,
    common: &[
        f("evaluation_interval", Ty::Int).def(Lit::Int(1)),
        f("delay_evaluation", Ty::Int).def(Lit::Int(0)),
    ],
    variants: &[
        (
            "bandit",
            &[f("slack_factor", Ty::Num), f("slack_amount", Ty::Num)],
        ),
        ("median_stopping", &[]),
        (
            "truncation_selection",
            &[f("truncation_percentage", Ty::Int).req()],
        ),
    ],
});

static OBJECTIVE: Ty = Ty::Obj(&[
    f("primary_metric", Ty::Str).req(),
    f("goal", Ty::Enum(&["maximize", "minimize"])).req(),
]);

static SWEEP_LIMITS: Ty = Ty::Obj(&[
    f("max_total_trials", Ty::Int).def(Lit::Int(1000)),
    f("max_concurrent_trials", Ty::Int),
    f("timeout", Ty::Int).def(Lit::Int(5_184_000)),
    f("trial_timeout", Ty::Int),
]);

/// A sweep's trial: a component file, or the trial's command inline.
const TRIAL: Ty = Ty::PathOr(
    PathKind::Trial,
    &Ty::Obj(&[
        f("command", Ty::Str).req(),
        f("code", Ty::Path(PathKind::Code)),
        f("environment", ENVIRONMENT_REF).req(),
        f("environment_variables", Ty::Map(&Ty::Scalar)),
        f("distribution", DISTRIBUTION_REF),
        f("resources", RESOURCES_REF),
    ]),
);

const DISTRIBUTION_REF: Ty = Ty::StrOr(&DISTRIBUTION);
const RESOURCES_REF: Ty = Ty::StrOr(&RESOURCES);

static PIPELINE_SETTINGS: Ty = Ty::Obj(&[
    f("default_compute", Ty::Str),
    f("default_datastore", Ty::Str),
    f("default_environment", Ty::Str),
    f("continue_on_step_failure", Ty::Bool).def(Lit::Bool(true)),
    f("force_rerun", Ty::Bool).def(Lit::Bool(false)),
]);

/// One step of a pipeline: inline command or sweep fields, or a `component` to run.
static STEP: Ty = Ty::Obj(&[
    f("type", Ty::Enum(&["command", "sweep", "pipeline", "spark"])).def(Lit::Str("command")),
    f(
        "component",
        Ty::PathOr(PathKind::Component, &INLINE_COMPONENT),
    ),
    f("display_name", Ty::Str),
    f("description", Ty::Str),
    f("tags", TAGS),
    f("experiment_name", Ty::Str),
    f("compute", Ty::Str),
    f("inputs", Ty::Map(&JOB_INPUT)),
    f("outputs", Ty::Map(&JOB_OUTPUT)),
    f("command", Ty::Str),
    f("code", Ty::Path(PathKind::Code)),
    f("environment", ENVIRONMENT_REF),
    f("environment_variables", Ty::Map(&Ty::Scalar)),
    f("distribution", DISTRIBUTION_REF),
    f("resources", Ty::StrOr(&STEP_RESOURCES)),
    f("limits", Ty::StrOr(&SWEEP_OR_COMMAND_LIMITS)),
    f("identity", IDENTITY_REF),
    // A Spark step's (see `SPARK_FIELDS`).
    f("entry", SPARK_ENTRY),
    f("py_files", Ty::List(&Ty::Str)),
    f("jars", Ty::List(&Ty::Str)),
    f("files", Ty::List(&Ty::Str)),
    f("archives", Ty::List(&Ty::Str)),
    f("args", Ty::Str),
    f("conf", Ty::Map(&Ty::Scalar)),
    f("queue_settings", Ty::StrOr(&QUEUE_SETTINGS)),
    f("trial", TRIAL),
    f("search_space", Ty::Map(&SEARCH_EXPRESSION)),
    f("sampling_algorithm", Ty::StrOr(&SAMPLING_ALGORITHM)),
    f("objective", Ty::StrOr(&OBJECTIVE)),
    f("early_termination", Ty::StrOr(&EARLY_TERMINATION)),
    f("settings", Ty::StrOr(&PIPELINE_SETTINGS)),
    f("jobs", Ty::Map(&STEP)),
    f("is_deterministic", Ty::Bool),
]);

/// A step's `resources` is a command's or a Spark step's (`runtime_version`).
static STEP_RESOURCES: Ty = Ty::Obj(&[
    f("instance_count", Ty::Int),
    f("instance_type", Ty::Str).warn(NO_VM_SIZES),
    f("shm_size", Ty::Str),
    f("docker_args", Ty::Str).warn(NO_CONTAINERS),
    f("locations", Ty::List(&Ty::Str)).warn("jobs run where this Tarn server runs them"),
    f("max_instance_count", Ty::Int),
    f("properties", PROPERTIES),
    f("runtime_version", Ty::Str),
]);

/// A step's `limits` is a command's (`timeout`) or a sweep's; which depends on its type.
static SWEEP_OR_COMMAND_LIMITS: Ty = Ty::Obj(&[
    f("timeout", Ty::Int),
    f("max_total_trials", Ty::Int),
    f("max_concurrent_trials", Ty::Int),
    f("trial_timeout", Ty::Int),
]);

/// Component fields; a registered component needs a name, an inline one does not.
macro_rules! component {
    ($name_field:expr) => {
        Ty::Tagged(&Tagged {
            tag: "type",
            default: Some("command"),
            common: &[
                $name_field,
                f("version", Ty::Version),
                f("display_name", Ty::Str),
                f("description", Ty::Str),
                f("tags", TAGS),
                f("inputs", Ty::Map(&COMPONENT_INPUT)),
                f("outputs", Ty::Map(&COMPONENT_OUTPUT)),
                f("is_deterministic", Ty::Bool).def(Lit::Bool(true)),
            ],
            variants: &[
                (
                    "command",
                    &[
                        f("command", Ty::Str).req(),
                        f("code", Ty::Path(PathKind::Code)),
                        f("environment", ENVIRONMENT_REF).req(),
                        f("environment_variables", Ty::Map(&Ty::Scalar)),
                        f("distribution", DISTRIBUTION_REF),
                        f("resources", RESOURCES_REF),
                        f(
                            "additional_includes",
                            Ty::List(&Ty::Path(PathKind::Include)),
                        ),
                    ],
                ),
                ("pipeline", &[f("jobs", Ty::Map(&STEP)).req()]),
                ("spark", SPARK_FIELDS),
            ],
        })
    };
}

pub static COMPONENT: Ty = component!(f("name", Ty::Name(NameRule::Component)).req());

/// A step's or batch deployment's component: a reference (`azureml:name:version`), a component
/// file, or inline.
static INLINE_COMPONENT: Ty = component!(f("name", Ty::Name(NameRule::Component)));

pub static JOB: Ty = Ty::Tagged(&Tagged {
    tag: "type",
    default: Some("command"),
    common: &[
        f("name", Ty::Name(NameRule::Job)),
        f("display_name", Ty::Str),
        f("experiment_name", Ty::Str),
        f("description", Ty::Str),
        f("tags", TAGS),
        f("properties", PROPERTIES),
        f("compute", Ty::Str),
        f("identity", IDENTITY_REF),
        f("services", Ty::Map(&Ty::Any)).warn("interactive job services are not offered yet"),
        f("inputs", Ty::Map(&JOB_INPUT)),
        f("outputs", Ty::Map(&JOB_OUTPUT)),
        f("queue_settings", Ty::StrOr(&QUEUE_SETTINGS)),
    ],
    variants: &[
        (
            "command",
            &[
                f("command", Ty::Str).req(),
                f("code", Ty::Path(PathKind::Code)),
                f("environment", ENVIRONMENT_REF).req(),
                f("environment_variables", Ty::Map(&Ty::Scalar)),
                f("distribution", DISTRIBUTION_REF),
                f("resources", RESOURCES_REF),
                f("limits", Ty::StrOr(&LIMITS)),
            ],
        ),
        (
            "sweep",
            &[
                f("trial", TRIAL).req(),
                f("search_space", Ty::Map(&SEARCH_EXPRESSION)).req(),
                f("sampling_algorithm", Ty::StrOr(&SAMPLING_ALGORITHM)).req(),
                f("objective", Ty::StrOr(&OBJECTIVE)).req(),
                f("early_termination", Ty::StrOr(&EARLY_TERMINATION)),
                f("limits", Ty::StrOr(&SWEEP_LIMITS)),
            ],
        ),
        (
            "pipeline",
            &[
                f("jobs", Ty::Map(&STEP)).req(),
                f("settings", Ty::StrOr(&PIPELINE_SETTINGS)),
            ],
        ),
        ("spark", SPARK_FIELDS),
    ],
});

/// A Spark application's entry: a Python file in `code`, or a JVM class in `jars`.
const SPARK_ENTRY: Ty = Ty::Obj(&[
    f("file", Ty::Str),
    f("class_name", Ty::Str),
    f(
        "spark_job_entry_type",
        Ty::Enum(&["SparkJobPythonEntry", "SparkJobJavaEntry"]),
    ),
]);

/// A Spark application (`type: spark`): its entry (a Python file, or a JVM class in `jars`),
/// the files it ships, its arguments and Spark configuration.
static SPARK_FIELDS: &[Field] = &[
    f("code", Ty::Path(PathKind::Code)),
    f("entry", SPARK_ENTRY).req(),
    f("py_files", Ty::List(&Ty::Str)),
    f("jars", Ty::List(&Ty::Str)),
    f("files", Ty::List(&Ty::Str)),
    f("archives", Ty::List(&Ty::Str)),
    f("args", Ty::Str),
    f("conf", Ty::Map(&Ty::Scalar)),
    f("environment", ENVIRONMENT_REF),
    f("environment_variables", Ty::Map(&Ty::Scalar)),
    f(
        "resources",
        Ty::Obj(&[
            // Serverless Spark's machine size: Tarn sizes the application from `conf`.
            f("instance_type", Ty::Str).warn(NO_VM_SIZES),
            f("runtime_version", Ty::Str),
        ]),
    ),
    f("limits", Ty::StrOr(&LIMITS)),
];

// ---------------------------------------------------------------------------------------------
// Endpoints and deployments

static PROBE: Ty = Ty::Obj(&[
    f("initial_delay", Ty::Int).def(Lit::Int(10)),
    f("period", Ty::Int).def(Lit::Int(10)),
    f("timeout", Ty::Int).def(Lit::Int(2)),
    f("success_threshold", Ty::Int).def(Lit::Int(1)),
    f("failure_threshold", Ty::Int).def(Lit::Int(30)),
]);

static INLINE_MODEL: Ty = Ty::Obj(&[
    f("path", Ty::Path(PathKind::Model)).req(),
    f("name", Ty::Name(NameRule::Asset)),
    f("version", Ty::Version),
    f(
        "type",
        Ty::Enum(&["custom_model", "mlflow_model", "triton_model"]),
    ),
    f("description", Ty::Str),
]);

static CODE_CONFIGURATION: Ty = Ty::Obj(&[
    f("code", Ty::Path(PathKind::Code)).req(),
    f("scoring_script", Ty::Str).req(),
]);

pub static ONLINE_ENDPOINT: Ty = Ty::Obj(&[
    f("name", Ty::Name(NameRule::Endpoint)).req(),
    f("description", Ty::Str),
    f("tags", TAGS),
    f("auth_mode", Ty::Enum(&["key", "aml_token", "aad_token"])).def(Lit::Str("key")),
    f("compute", Ty::Str),
    f("traffic", Ty::Map(&Ty::Int)),
    f("mirror_traffic", Ty::Map(&Ty::Int)),
    f("identity", IDENTITY_REF).warn(NO_AZURE_IDENTITY),
    f("public_network_access", Ty::Enum(&["enabled", "disabled"])).warn(NO_AZURE_NETWORK),
    f("kind", Ty::Str),
]);

pub static ONLINE_DEPLOYMENT: Ty = Ty::Tagged(&Tagged {
    tag: "type",
    default: Some("managed"),
    common: &[
        f("name", Ty::Name(NameRule::Deployment)).req(),
        f("endpoint_name", Ty::Name(NameRule::Endpoint)),
        f("description", Ty::Str),
        f("tags", TAGS),
        f("model", Ty::StrOr(&INLINE_MODEL)),
        f("code_configuration", Ty::StrOr(&CODE_CONFIGURATION)),
        f("environment", ENVIRONMENT_REF),
        f("instance_count", Ty::Int).def(Lit::Int(1)),
        f("environment_variables", Ty::Map(&Ty::Scalar)),
        f(
            "request_settings",
            Ty::Obj(&[
                f("request_timeout_ms", Ty::Int).def(Lit::Int(5000)),
                f("max_concurrent_requests_per_instance", Ty::Int).def(Lit::Int(1)),
                f("max_queue_wait_ms", Ty::Int).def(Lit::Int(500)),
            ]),
        ),
        f("liveness_probe", Ty::StrOr(&PROBE)),
        f("readiness_probe", Ty::StrOr(&PROBE)),
        f("scale_settings", Ty::Any),
        f("app_insights_enabled", Ty::Bool).warn(NO_APP_INSIGHTS),
        f(
            "egress_public_network_access",
            Ty::Enum(&["enabled", "disabled"]),
        )
        .warn(NO_AZURE_NETWORK),
        f("data_collector", Ty::Any).warn("model data collection is not offered yet"),
        f("model_mount_path", Ty::Str),
    ],
    variants: &[
        ("managed", &[f("instance_type", Ty::Str).warn(NO_VM_SIZES)]),
        (
            "kubernetes",
            &[
                // One of the cluster's instance types (else its default one).
                f("instance_type", Ty::Str),
                f(
                    "resources",
                    Ty::Obj(&[
                        f("requests", Ty::Map(&Ty::Scalar)),
                        f("limits", Ty::Map(&Ty::Scalar)),
                    ]),
                ),
            ],
        ),
    ],
});

pub static BATCH_ENDPOINT: Ty = Ty::Obj(&[
    f("name", Ty::Name(NameRule::Endpoint)).req(),
    f("description", Ty::Str),
    f("tags", TAGS),
    f("auth_mode", Ty::Enum(&["aad_token"])).def(Lit::Str("aad_token")),
    f("defaults", Ty::Obj(&[f("deployment_name", Ty::Str)])),
]);

static RETRY_SETTINGS: Ty = Ty::Obj(&[
    f("max_retries", Ty::Int).def(Lit::Int(3)),
    f("timeout", Ty::Int).def(Lit::Int(30)),
]);

static BATCH_SETTINGS: Ty = Ty::Obj(&[
    f("max_concurrency_per_instance", Ty::Int).def(Lit::Int(1)),
    f("mini_batch_size", Ty::Int).def(Lit::Int(10)),
    f("error_threshold", Ty::Int).def(Lit::Int(-1)),
    f("logging_level", Ty::Enum(&["debug", "info", "warning"])).def(Lit::Str("info")),
    f("retry_settings", Ty::StrOr(&RETRY_SETTINGS)),
    f("output_action", Ty::Enum(&["append_row", "summary_only"])).def(Lit::Str("append_row")),
    f("output_file_name", Ty::Str).def(Lit::Str("predictions.csv")),
    f("environment_variables", Ty::Map(&Ty::Scalar)),
]);

pub static BATCH_DEPLOYMENT: Ty = Ty::Tagged(&Tagged {
    tag: "type",
    // The legacy schema has no `type` and is a model deployment.
    default: Some("model"),
    common: &[
        f("name", Ty::Name(NameRule::Deployment)).req(),
        f("endpoint_name", Ty::Name(NameRule::Endpoint)),
        f("description", Ty::Str),
        f("tags", TAGS),
        f("compute", Ty::Str),
        f("resources", Ty::StrOr(&RESOURCES)),
        f("environment_variables", Ty::Map(&Ty::Scalar)),
    ],
    variants: &[
        (
            "model",
            &[
                f("model", Ty::StrOr(&INLINE_MODEL)).req(),
                f("code_configuration", Ty::StrOr(&CODE_CONFIGURATION)),
                f("environment", ENVIRONMENT_REF),
                f("settings", Ty::StrOr(&BATCH_SETTINGS)),
                // Legacy deployments put the settings at the root.
                f("max_concurrency_per_instance", Ty::Int),
                f("mini_batch_size", Ty::Int),
                f("error_threshold", Ty::Int),
                f("logging_level", Ty::Enum(&["debug", "info", "warning"])),
                f("retry_settings", Ty::StrOr(&RETRY_SETTINGS)),
                f("output_action", Ty::Enum(&["append_row", "summary_only"])),
                f("output_file_name", Ty::Str),
            ],
        ),
        (
            "pipeline",
            &[
                f(
                    "component",
                    Ty::PathOr(PathKind::Component, &INLINE_COMPONENT),
                ),
                f("job_definition", Ty::StrOr(&Ty::Any)),
                f("settings", Ty::StrOr(&PIPELINE_SETTINGS)),
            ],
        ),
    ],
});

// ---------------------------------------------------------------------------------------------
// Schedules

/// `create_job` given as changes to a job (`job`: a job file, or `azureml:<job name>` for a
/// job already submitted, or a batch endpoint's id to invoke it), as Azure ML's schedules
/// write it.
static JOB_OVERRIDES: Ty = Ty::Obj(&[
    f("job", Ty::PathOr(PathKind::Job, &JOB)).req(),
    f("type", Ty::Enum(&["command", "sweep", "pipeline", "spark"])),
    f("display_name", Ty::Str),
    f("experiment_name", Ty::Str),
    f("description", Ty::Str),
    f("tags", TAGS),
    f("properties", PROPERTIES),
    f("compute", Ty::Str),
    f("inputs", Ty::Map(&JOB_INPUT)),
    f("outputs", Ty::Map(&JOB_OUTPUT)),
    f("settings", Ty::StrOr(&PIPELINE_SETTINGS)),
    f("environment_variables", Ty::Map(&Ty::Scalar)),
    f("resources", RESOURCES_REF),
    f("limits", Ty::Map(&Ty::Any)),
]);

pub static SCHEDULE: Ty = Ty::Obj(&[
    f("name", Ty::Name(NameRule::Schedule)).req(),
    f("display_name", Ty::Str),
    f("description", Ty::Str),
    f("tags", TAGS),
    f("properties", PROPERTIES),
    f("version", Ty::Version),
    f("is_enabled", Ty::Bool).def(Lit::Bool(true)),
    f("trigger", TRIGGER_REF).req(),
    f(
        "create_job",
        Ty::PathOr(PathKind::Job, &Ty::WhenField("job", &JOB_OVERRIDES, &JOB)),
    ),
    f("import_data", Ty::Any),
    f("create_monitor", Ty::Any),
    // Tarn's: what becomes of fires that were due while no server ran (`trigger::MissedFires`).
    f("missed_fires", Ty::Enum(&["none", "latest", "all"])).def(Lit::Str("latest")),
]);

// ---------------------------------------------------------------------------------------------
// Connections

/// A connection's credentials: all of it goes to the vault (the username too, as Azure ML
/// keeps it), `show` says `<stored in vault>`.
const CONNECTION_CREDENTIALS: Ty = Ty::Secret(&Ty::Tagged(&Tagged {
    tag: "type",
    default: None,
    common: &[],
    variants: &[
        ("pat", &[f("pat", Ty::Str).req()]),
        (
            "username_password",
            &[f("username", Ty::Str).req(), f("password", Ty::Str).req()],
        ),
        (
            "sql_auth",
            &[f("username", Ty::Str).req(), f("password", Ty::Str).req()],
        ),
        (
            "access_key",
            &[
                f("access_key_id", Ty::Str).req(),
                f("secret_access_key", Ty::Str).req(),
            ],
        ),
        ("account_key", &[f("account_key", Ty::Str).req()]),
        ("sas", &[f("sas_token", Ty::Str).req()]),
        ("api_key", &[f("key", Ty::Str).req()]),
        ("custom_keys", &[f("keys", Ty::Map(&Ty::Scalar)).req()]),
        (
            "service_principal",
            &[
                f("tenant_id", Ty::Str).req(),
                f("client_id", Ty::Str).req(),
                f("client_secret", Ty::Str).req(),
            ],
        ),
        ("none", &[]),
    ],
}));

const TARGET: Field = f("target", Ty::Str);

/// Workspace connections (`az ml connection`): where an outside service is and the
/// credentials for it, which go to the vault.
pub static CONNECTION: Ty = Ty::Tagged(&Tagged {
    tag: "type",
    default: None,
    common: &[
        f("name", Ty::Name(NameRule::Connection)).req(),
        f("description", Ty::Str),
        f("tags", TAGS),
        f("metadata", Ty::Map(&Ty::Scalar)),
        f("is_shared", Ty::Bool),
        f("credentials", CONNECTION_CREDENTIALS),
    ],
    variants: &[
        ("git", &[TARGET.req()]),
        ("python_feed", &[TARGET.req()]),
        ("container_registry", &[TARGET.req()]),
        ("snowflake", &[TARGET.req()]),
        ("azure_sql_db", &[TARGET.req()]),
        ("s3", &[TARGET]),
        (
            "azure_blob",
            &[
                TARGET,
                f("url", Ty::Str),
                f("account_name", Ty::Str),
                f("container_name", Ty::Str),
            ],
        ),
        (
            "azure_open_ai",
            &[
                f("azure_endpoint", Ty::Str).req(),
                f("api_key", Ty::Secret(&Ty::Str)),
                f("api_version", Ty::Str),
                f("open_ai_resource_id", Ty::Str),
            ],
        ),
        (
            "api_key",
            &[
                f("api_base", Ty::Str).req(),
                f("api_key", Ty::Secret(&Ty::Str)).req(),
            ],
        ),
        ("custom", &[TARGET]),
    ],
});

// ---------------------------------------------------------------------------------------------
// Registries

const ONE_COPY: &str = "a registry here keeps one copy, in this Tarn's storage";

/// A registry (`az ml registry`): models, components, environments and data shared by every
/// workspace.
pub static REGISTRY: Ty = Ty::Obj(&[
    f("name", Ty::Name(NameRule::Workspace)).req(),
    f("description", Ty::Str),
    f("tags", TAGS),
    f("location", Ty::Str).warn(ONE_COPY),
    f(
        "replication_locations",
        Ty::List(&Ty::Obj(&[
            f("location", Ty::Str),
            f("storage_config", Ty::Map(&Ty::Any)),
            f("acr_config", Ty::Any),
        ])),
    )
    .warn(ONE_COPY),
    f("identity", IDENTITY_REF).warn(NO_AZURE_IDENTITY),
    f("public_network_access", Ty::Str).warn(NO_AZURE_NETWORK),
    f("intellectual_property", Ty::Map(&Ty::Any)),
    f("container_registry", Ty::Str).warn(NO_AZURE_RESOURCES),
    f("managed_resource_group", Ty::Any).warn(NO_ARM),
]);
