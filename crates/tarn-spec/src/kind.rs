//! The kinds of resource Tarn knows, and the facts about each that the layers above share:
//! its CLI group, its API collection, whether it is a versioned asset, and its name rule.

use crate::names::NameRule;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Workspace,
    Compute,
    Datastore,
    Data,
    Environment,
    Component,
    Model,
    Job,
    OnlineEndpoint,
    OnlineDeployment,
    BatchEndpoint,
    BatchDeployment,
    Schedule,
    Connection,
    Registry,
}

impl Kind {
    pub const ALL: [Kind; 15] = [
        Kind::Workspace,
        Kind::Compute,
        Kind::Datastore,
        Kind::Data,
        Kind::Environment,
        Kind::Component,
        Kind::Model,
        Kind::Job,
        Kind::OnlineEndpoint,
        Kind::OnlineDeployment,
        Kind::BatchEndpoint,
        Kind::BatchDeployment,
        Kind::Schedule,
        Kind::Connection,
        Kind::Registry,
    ];

    /// Kinds stored through the generic resource API (workspaces and jobs have their own).
    pub const RESOURCES: [Kind; 12] = [
        Kind::Compute,
        Kind::Datastore,
        Kind::Data,
        Kind::Environment,
        Kind::Component,
        Kind::Model,
        Kind::OnlineEndpoint,
        Kind::OnlineDeployment,
        Kind::BatchEndpoint,
        Kind::BatchDeployment,
        Kind::Schedule,
        Kind::Connection,
    ];

    /// The CLI group, as `az ml` spells it.
    pub fn group(self) -> &'static str {
        match self {
            Kind::Workspace => "workspace",
            Kind::Compute => "compute",
            Kind::Datastore => "datastore",
            Kind::Data => "data",
            Kind::Environment => "environment",
            Kind::Component => "component",
            Kind::Model => "model",
            Kind::Job => "job",
            Kind::OnlineEndpoint => "online-endpoint",
            Kind::OnlineDeployment => "online-deployment",
            Kind::BatchEndpoint => "batch-endpoint",
            Kind::BatchDeployment => "batch-deployment",
            Kind::Schedule => "schedule",
            Kind::Connection => "connection",
            Kind::Registry => "registry",
        }
    }

    /// The collection segment in `/api/v1/workspaces/{ws}/{collection}`.
    pub fn collection(self) -> &'static str {
        match self {
            Kind::Workspace => "workspaces",
            Kind::Compute => "computes",
            Kind::Datastore => "datastores",
            Kind::Data => "data",
            Kind::Environment => "environments",
            Kind::Component => "components",
            Kind::Model => "models",
            Kind::Job => "jobs",
            Kind::OnlineEndpoint => "online-endpoints",
            Kind::OnlineDeployment => "online-deployments",
            Kind::BatchEndpoint => "batch-endpoints",
            Kind::BatchDeployment => "batch-deployments",
            Kind::Schedule => "schedules",
            Kind::Connection => "connections",
            Kind::Registry => "registries",
        }
    }

    pub fn from_collection(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.collection() == s)
    }

    pub fn from_group(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.group() == s)
    }

    /// Data, environments, components and models are versioned and immutable.
    pub fn is_asset(self) -> bool {
        matches!(
            self,
            Kind::Data | Kind::Environment | Kind::Component | Kind::Model
        )
    }

    /// The kind a resource of this kind lives under, besides its workspace.
    pub fn parent(self) -> Option<Kind> {
        match self {
            Kind::OnlineDeployment => Some(Kind::OnlineEndpoint),
            Kind::BatchDeployment => Some(Kind::BatchEndpoint),
            _ => None,
        }
    }

    pub fn name_rule(self) -> NameRule {
        match self {
            Kind::Workspace => NameRule::Workspace,
            Kind::Compute => NameRule::Compute,
            Kind::Datastore => NameRule::Datastore,
            Kind::Data | Kind::Environment | Kind::Model => NameRule::Asset,
            Kind::Component => NameRule::Component,
            Kind::Job => NameRule::Job,
            Kind::OnlineEndpoint | Kind::BatchEndpoint => NameRule::Endpoint,
            Kind::OnlineDeployment | Kind::BatchDeployment => NameRule::Deployment,
            Kind::Schedule => NameRule::Schedule,
            Kind::Connection => NameRule::Connection,
            Kind::Registry => NameRule::Workspace,
        }
    }

    /// A human name for messages: "online endpoint".
    pub fn noun(self) -> &'static str {
        match self {
            Kind::OnlineEndpoint => "online endpoint",
            Kind::OnlineDeployment => "online deployment",
            Kind::BatchEndpoint => "batch endpoint",
            Kind::BatchDeployment => "batch deployment",
            other => other.group(),
        }
    }
}

/// What the `$schema` file name says a document is: its kind and, where it implies one, its `type`.
pub fn from_schema_url(url: &str) -> Option<(Kind, Option<&'static str>)> {
    let file = url.rsplit('/').next()?.to_ascii_lowercase();
    let file = file.strip_suffix(".json").unwrap_or(&file);
    let file = file.strip_suffix(".schema").unwrap_or(file);
    let hit = match file {
        "workspace" => (Kind::Workspace, None),
        "amlcompute" => (Kind::Compute, Some("amlcompute")),
        "computeinstance" => (Kind::Compute, Some("computeinstance")),
        "kubernetescompute" => (Kind::Compute, Some("kubernetes")),
        "vmcompute" => (Kind::Compute, Some("virtualmachine")),
        "synapsesparkcompute" | "synapsespark" => (Kind::Compute, Some("synapsespark")),
        "azureblob" => (Kind::Datastore, Some("azure_blob")),
        "azurefile" => (Kind::Datastore, Some("azure_file")),
        "azuredatalakegen1" => (Kind::Datastore, Some("azure_data_lake_gen1")),
        "azuredatalakegen2" => (Kind::Datastore, Some("azure_data_lake_gen2")),
        "onelake" => (Kind::Datastore, Some("one_lake")),
        "data" => (Kind::Data, None),
        "environment" => (Kind::Environment, None),
        "commandcomponent" => (Kind::Component, Some("command")),
        "pipelinecomponent" => (Kind::Component, Some("pipeline")),
        "commandjob" => (Kind::Job, Some("command")),
        "sweepjob" => (Kind::Job, Some("sweep")),
        "pipelinejob" => (Kind::Job, Some("pipeline")),
        "model" => (Kind::Model, None),
        "managedonlineendpoint" | "kubernetesonlineendpoint" => (Kind::OnlineEndpoint, None),
        "managedonlinedeployment" => (Kind::OnlineDeployment, Some("managed")),
        "kubernetesonlinedeployment" => (Kind::OnlineDeployment, Some("kubernetes")),
        "batchendpoint" => (Kind::BatchEndpoint, None),
        "modelbatchdeployment" => (Kind::BatchDeployment, Some("model")),
        "pipelinecomponentbatchdeployment" => (Kind::BatchDeployment, Some("pipeline")),
        "batchdeployment" => (Kind::BatchDeployment, None),
        "schedule" => (Kind::Schedule, None),
        "registry" => (Kind::Registry, None),
        "connection" | "workspaceconnection" => (Kind::Connection, None),
        "gitconnection" => (Kind::Connection, Some("git")),
        "pythonfeedconnection" => (Kind::Connection, Some("python_feed")),
        "containerregistryconnection" => (Kind::Connection, Some("container_registry")),
        _ => return None,
    };
    Some(hit)
}

/// Guesses the kind from a `type:` value that only one kind uses (for files without `$schema`).
pub fn from_type(type_: &str) -> Option<Kind> {
    let t = type_.to_ascii_lowercase();
    let kind = match t.as_str() {
        "amlcompute" | "computeinstance" | "kubernetes" | "virtualmachine" | "synapsespark"
        | "slurm" | "ray" => Kind::Compute,
        "azure_blob"
        | "azure_file"
        | "azure_data_lake_gen1"
        | "azure_data_lake_gen2"
        | "one_lake"
        | "local"
        | "s3"
        | "gcs" => Kind::Datastore,
        "uri_file" | "uri_folder" | "mltable" => Kind::Data,
        "custom_model" | "mlflow_model" | "triton_model" => Kind::Model,
        "sweep" => Kind::Job,
        "git" | "python_feed" | "container_registry" | "snowflake" | "azure_sql_db"
        | "azure_open_ai" | "api_key" => Kind::Connection,
        "managed" => Kind::OnlineDeployment,
        _ => return None,
    };
    Some(kind)
}
