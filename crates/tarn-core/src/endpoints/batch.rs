//! Batch endpoints: an invocation is an ordinary job, so queues, clusters, logs, outputs, MLflow
//! runs, cancel and `job download --output-name score` all work as for any job.
//!
//! A `type: model` deployment becomes a command job that runs the batch driver the runner ships
//! (`$AZUREML_BATCH_DRIVER`, see `tarn/src/runner/batch_driver.py`) over the input, with the
//! model as an input, the deployment's code and environment, and its settings in
//! `AZUREML_BATCH_SETTINGS`. A `type: pipeline` deployment becomes a pipeline job of its
//! component. Jobs carry the endpoint and deployment as tags, which is how `list-jobs` finds them.

use super::Endpoints;
use crate::authz::{Action, Principal};
use crate::error::{Error, Result};
use crate::jobs::JobView;
use serde_json::{Value as Json, json};
use tarn_spec::Kind;
use tarn_spec::names::NameRule;
use tarn_spec::refs;
use tarn_store::{ResourceFilter, ResourceKey, ResourceRow, WorkspaceRow};

/// The tags that tie a job to its batch endpoint and deployment (Azure ML's names).
pub const ENDPOINT_TAG: &str = "azureml.batch_endpoint";
pub const DEPLOYMENT_TAG: &str = "azureml.batch_deployment";

/// What `batch-endpoint invoke` asks for.
#[derive(Clone, Debug, Default)]
pub struct BatchInvoke {
    /// The deployment to run; the endpoint's default when `None`.
    pub deployment: Option<String>,
    /// The data to score: a data asset, a datastore URI or a job output.
    pub input: Option<String>,
    /// `uri_folder` (default) or `uri_file`.
    pub input_type: Option<String>,
    /// Where the `score` output goes (a datastore URI); the job's default place when `None`.
    pub output_path: Option<String>,
    pub experiment_name: Option<String>,
    /// Named inputs and outputs (`invoke --file`): a pipeline deployment's component inputs;
    /// for a model deployment, one input is the data and output `score` may have a `path`.
    pub inputs: serde_json::Map<String, Json>,
    pub outputs: serde_json::Map<String, Json>,
}

/// A model deployment's scoring, resolved: checked at create and update, used at invoke.
struct ModelScoring {
    /// The model's files, as a datastore URI.
    model_uri: String,
    model_type: String,
    /// The last segment of the model's path: `AZUREML_MODEL_DIR/<model_name>` is the model.
    model_name: String,
    code: Option<String>,
    scoring_script: Option<String>,
    /// `None` for an MLflow model without code or environment (planned from the model).
    environment: Option<Json>,
}

impl Endpoints {
    /// A batch endpoint; invoking it and listing its jobs are acts on jobs.
    async fn batch_endpoint_row(
        &self,
        p: &Principal,
        workspace: &str,
        endpoint: &str,
        action: Action,
    ) -> Result<(WorkspaceRow, ResourceRow)> {
        self.endpoint_row(
            p,
            workspace,
            Kind::BatchEndpoint,
            Kind::Job,
            endpoint,
            action,
        )
        .await
    }

    async fn batch_deployments(
        &self,
        ws: &WorkspaceRow,
        endpoint: &str,
    ) -> Result<Vec<ResourceRow>> {
        let parent = format!("{}/{endpoint}", Kind::BatchEndpoint.collection());
        let filter = ResourceFilter {
            parent: &parent,
            name: None,
            include_archived: false,
            latest_only: false,
        };
        Ok(self
            .store
            .list_resources(&ws.id, Kind::BatchDeployment.collection(), &filter)
            .await?)
    }

    /// Runs a batch deployment over `req.input`: submits the job and returns it (Queued).
    pub async fn invoke_batch_endpoint(
        &self,
        p: &Principal,
        workspace: &str,
        endpoint: &str,
        req: &BatchInvoke,
    ) -> Result<JobView> {
        let (ws, ep) = self
            .batch_endpoint_row(p, workspace, endpoint, Action::Write)
            .await?;
        let job = self.batch_invocation_job(p, &ws, &ep, req).await?;
        let doc = tarn_spec::validate(&tarn_spec::Node::from_json(&job), Some(Kind::Job))
            .map_err(Error::Invalid)?;
        let row = self.jobs.submit(&ws, &p.name, doc.spec, "").await?;
        Ok(JobView {
            status: crate::jobs::JobStatus::parse(&row.status)
                .unwrap_or(crate::jobs::JobStatus::Queued),
            row,
            warnings: doc.warnings,
            run: None,
        })
    }

    /// The job an invocation of the batch endpoint `ep` runs (not yet checked or submitted):
    /// for `invoke`, and for schedules that invoke an endpoint.
    pub(crate) async fn batch_invocation_job(
        &self,
        p: &Principal,
        ws: &WorkspaceRow,
        ep: &ResourceRow,
        req: &BatchInvoke,
    ) -> Result<Json> {
        let endpoint = ep.key.name.as_str();
        let deployments = self.batch_deployments(ws, endpoint).await?;
        let default = ep
            .spec
            .pointer("/defaults/deployment_name")
            .and_then(Json::as_str)
            .filter(|d| !d.is_empty());
        let wanted = req.deployment.as_deref().or(default);
        let deployment = match wanted {
            Some(name) => deployments
                .iter()
                .find(|d| d.key.name == name)
                .ok_or_else(|| {
                    Error::not_found(format!(
                        "batch deployment {name:?} of endpoint {endpoint:?}"
                    ))
                })?,
            None => match deployments.as_slice() {
                [only] => only,
                [] => {
                    return Err(Error::invalid(
                        "deployment_name",
                        format!("batch endpoint {endpoint:?} has no deployments yet"),
                    ));
                }
                many => {
                    let names: Vec<&str> = many.iter().map(|d| d.key.name.as_str()).collect();
                    return Err(Error::invalid(
                        "deployment_name",
                        format!(
                            "batch endpoint {endpoint:?} has no default deployment; name one of {} with --deployment-name, or make one the default (`tarn batch-deployment create --set-default`, or `tarn batch-endpoint update -n {endpoint} --set defaults.deployment_name=<name>`)",
                            names.join(", ")
                        ),
                    ));
                }
            },
        };
        let spec = &deployment.spec;
        match spec.get("type").and_then(Json::as_str).unwrap_or("model") {
            "pipeline" => self.pipeline_batch_job(ws, endpoint, spec, req).await,
            _ => self.model_batch_job(p, ws, endpoint, spec, req).await,
        }
    }

    /// A batch endpoint of `ws` by name (for schedules, which act for the workspace).
    pub(crate) async fn batch_endpoint_in(
        &self,
        ws: &WorkspaceRow,
        endpoint: &str,
    ) -> Result<ResourceRow> {
        let key = ResourceKey {
            workspace_id: ws.id.clone(),
            kind: Kind::BatchEndpoint.collection().to_string(),
            parent: String::new(),
            name: endpoint.to_string(),
            version: String::new(),
        };
        self.store.get_resource(&key).await?.ok_or_else(|| {
            Error::not_found(format!(
                "batch endpoint {endpoint:?} in workspace {:?}",
                ws.name
            ))
        })
    }

    /// The jobs a batch endpoint (or one of its deployments) ran, newest first.
    pub async fn batch_endpoint_jobs(
        &self,
        p: &Principal,
        workspace: &str,
        endpoint: &str,
        deployment: Option<&str>,
    ) -> Result<Vec<JobView>> {
        self.batch_endpoint_row(p, workspace, endpoint, Action::Read)
            .await?;
        let all = self
            .jobs
            .list_jobs(p, workspace, &crate::jobs::JobQuery::default())
            .await?;
        Ok(all
            .into_iter()
            .filter(|j| j.row.parent.is_empty())
            .filter(|j| {
                let tag = |t: &str| {
                    j.row
                        .spec
                        .pointer(&format!("/tags/{}", t.replace('/', "~1")))
                };
                tag(ENDPOINT_TAG).and_then(Json::as_str) == Some(endpoint)
                    && deployment
                        .is_none_or(|d| tag(DEPLOYMENT_TAG).and_then(Json::as_str) == Some(d))
            })
            .collect())
    }

    /// The check, at create and update, that a batch deployment can run.
    pub(crate) async fn check_batch_deployment(
        &self,
        ws: &WorkspaceRow,
        spec: &Json,
    ) -> Result<()> {
        match spec.get("type").and_then(Json::as_str).unwrap_or("model") {
            "pipeline" => {
                // The job an invocation would submit must be a valid pipeline job.
                let job = self
                    .pipeline_batch_job(ws, "endpoint", spec, &BatchInvoke::default())
                    .await?;
                tarn_spec::validate(&tarn_spec::Node::from_json(&job), Some(Kind::Job))
                    .map(|_| ())
                    .map_err(Error::Invalid)
            }
            _ => self.model_scoring(ws, spec).await.map(|_| ()),
        }
    }

    async fn model_scoring(&self, ws: &WorkspaceRow, spec: &Json) -> Result<ModelScoring> {
        let model = match spec.get("model") {
            Some(Json::String(text)) => {
                let parsed = refs::parse_asset_ref(text, NameRule::Asset)
                    .map_err(|e| Error::invalid("model", e.to_string()))?;
                self.jobs
                    .find_asset(ws, Kind::Model, &parsed)
                    .await?
                    .ok_or_else(|| {
                        Error::invalid("model", format!("model {text:?} does not exist"))
                    })?
                    .spec
            }
            Some(inline) if inline.is_object() => inline.clone(),
            _ => return Err(Error::invalid("model", "a model deployment needs a model")),
        };
        let path = model
            .get("path")
            .and_then(Json::as_str)
            .ok_or_else(|| Error::invalid("model.path", "the model has no path"))?;
        let (model_uri, _) = self.jobs.data_location(ws, path, "model.path").await?;
        let model_type = model
            .get("type")
            .and_then(Json::as_str)
            .unwrap_or("custom_model")
            .to_string();
        let model_name = model_uri
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .filter(|s| !s.is_empty())
            .unwrap_or("model")
            .to_string();
        let (code, scoring_script) = match self.code_configuration(ws, spec).await? {
            Some(((uri, _), script)) => (Some(uri), Some(script)),
            None => (None, None),
        };
        let is_mlflow = model_type == "mlflow_model";
        if !is_mlflow && code.is_none() {
            return Err(Error::invalid(
                "code_configuration",
                "a batch deployment of a model that is not an mlflow_model needs code_configuration (code and scoring_script)",
            ));
        }
        let environment = match spec.get("environment") {
            Some(env) if !env.is_null() => {
                // Checked (and planned) now, so a bad environment is found at create.
                self.jobs.plan_environment(ws, Some(env)).await?;
                Some(env.clone())
            }
            _ if is_mlflow && code.is_none() => None,
            _ => {
                return Err(Error::invalid(
                    "environment",
                    "a batch deployment with a scoring script needs an environment (an mlflow_model without code needs none)",
                ));
            }
        };
        Ok(ModelScoring {
            model_uri,
            model_type,
            model_name,
            code,
            scoring_script,
            environment,
        })
    }

    /// The command job that scores `req.input` with a model deployment.
    async fn model_batch_job(
        &self,
        p: &Principal,
        ws: &WorkspaceRow,
        endpoint: &str,
        spec: &Json,
        req: &BatchInvoke,
    ) -> Result<Json> {
        let scoring = self.model_scoring(ws, spec).await?;
        let mut data = match &req.input {
            Some(path) => json!({
                "type": req.input_type.as_deref().unwrap_or("uri_folder"),
                "path": path,
            }),
            None => match req.inputs.values().collect::<Vec<_>>().as_slice() {
                [only] => (*only).clone(),
                [] => {
                    return Err(Error::invalid(
                        "input",
                        "a model deployment scores an --input",
                    ));
                }
                _ => {
                    return Err(Error::invalid(
                        "inputs",
                        "a model deployment scores one input; give one",
                    ));
                }
            },
        };
        if let Some(obj) = data.as_object_mut() {
            obj.entry("type").or_insert(json!("uri_folder"));
        }
        let environment = match scoring.environment {
            Some(env) => env,
            None => self.mlflow_environment(p, ws, &scoring.model_uri).await?,
        };
        // Settings: the `settings` block, or the legacy schema's root fields.
        let setting = |name: &str| {
            spec.pointer(&format!("/settings/{name}"))
                .or_else(|| spec.get(name))
                .filter(|v| !v.is_null())
                .cloned()
        };
        let retry = setting("retry_settings").unwrap_or(Json::Null);
        let settings = json!({
            "mini_batch_size": setting("mini_batch_size").unwrap_or(json!(10)),
            "max_concurrency_per_instance": setting("max_concurrency_per_instance").unwrap_or(json!(1)),
            "error_threshold": setting("error_threshold").unwrap_or(json!(-1)),
            "max_retries": retry.get("max_retries").cloned().unwrap_or(json!(3)),
            "timeout": retry.get("timeout").cloned().unwrap_or(json!(30)),
            "output_action": setting("output_action").unwrap_or(json!("append_row")),
            "output_file_name": setting("output_file_name").unwrap_or(json!("predictions.csv")),
            "logging_level": setting("logging_level").unwrap_or(json!("info")),
            "scoring_script": scoring.scoring_script,
            "model_name": scoring.model_name,
        });
        let mut variables = serde_json::Map::new();
        for source in [
            spec.get("environment_variables"),
            setting("environment_variables").as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            if let Some(obj) = source.as_object() {
                variables.extend(obj.clone());
            }
        }
        variables.insert(
            "AZUREML_BATCH_SETTINGS".into(),
            Json::String(settings.to_string()),
        );
        let deployment = spec.get("name").and_then(Json::as_str).unwrap_or_default();
        let mut outputs = json!({ "score": { "type": "uri_folder" } });
        if let Some(path) = req
            .output_path
            .as_deref()
            .or_else(|| req.outputs.get("score")?.get("path")?.as_str())
        {
            outputs["score"]["path"] = json!(path);
        }
        let mut job = json!({
            "type": "command",
            "display_name": format!("{endpoint}-{deployment}"),
            "experiment_name": req.experiment_name.as_deref().unwrap_or(endpoint),
            "tags": { ENDPOINT_TAG: endpoint, DEPLOYMENT_TAG: deployment },
            "command": "python \"$AZUREML_BATCH_DRIVER\" --data ${{inputs.data}} --model ${{inputs.model}} --output ${{outputs.score}}",
            "environment": environment,
            "environment_variables": variables,
            "inputs": {
                "data": data,
                "model": { "type": scoring.model_type, "path": scoring.model_uri },
            },
            "outputs": outputs,
            "resources": {
                "instance_count": spec.pointer("/resources/instance_count").cloned().unwrap_or(json!(1)),
            },
        });
        if let Some(code) = scoring.code {
            job["code"] = json!(code);
        }
        if let Some(compute) = spec.get("compute").filter(|c| !c.is_null()) {
            job["compute"] = compute.clone();
        }
        Ok(job)
    }

    /// An MLflow model's own environment, read from its `requirements.txt` and `python_env.yaml`.
    async fn mlflow_environment(
        &self,
        p: &Principal,
        ws: &WorkspaceRow,
        model_uri: &str,
    ) -> Result<Json> {
        let (_, location) = self.jobs.data_location(ws, model_uri, "model.path").await?;
        let base = location.path.trim_end_matches('/');
        let read = async |name: &str| {
            self.storage
                .download_many(
                    p,
                    &ws.name,
                    &location.datastore,
                    &[format!("{base}/{name}")],
                )
                .await
                .ok()
                .and_then(|mut files| files.pop())
                .map(|(_, _, bytes)| String::from_utf8_lossy(&bytes).into_owned())
        };
        let Some(mlmodel) = read("MLmodel").await else {
            return Err(Error::invalid(
                "model",
                format!(
                    "the model is registered as an mlflow_model but {model_uri} has no MLmodel file"
                ),
            ));
        };
        let requirements = read("requirements.txt").await;
        let python_env = read("python_env.yaml").await;
        let conda = read("conda.yaml").await;
        Ok(tarn_spec::envplan::mlflow_model_environment(
            &tarn_spec::envplan::MlflowModelFiles {
                requirements: requirements.as_deref(),
                python_env: python_env.as_deref(),
                conda: conda.as_deref(),
                mlmodel: Some(&mlmodel),
            },
        ))
    }

    /// A pipeline deployment's component: registered (`azureml:name:version`) or inline.
    async fn batch_component(&self, ws: &WorkspaceRow, spec: &Json) -> Result<Json> {
        let component = match spec.get("component") {
            Some(Json::String(text)) => {
                let parsed = refs::parse_asset_ref(text, NameRule::Component)
                    .map_err(|e| Error::invalid("component", e.to_string()))?;
                self.jobs
                    .find_asset(ws, Kind::Component, &parsed)
                    .await?
                    .ok_or_else(|| {
                        Error::invalid("component", format!("component {text:?} does not exist"))
                    })?
                    .spec
            }
            Some(inline) if inline.is_object() => inline.clone(),
            _ => {
                return Err(Error::invalid(
                    "component",
                    "a pipeline deployment needs a component (job_definition is not supported: register the pipeline as a component)",
                ));
            }
        };
        if component.get("type").and_then(Json::as_str) != Some("pipeline") {
            return Err(Error::invalid(
                "component",
                "a pipeline deployment's component must be a pipeline component (type: pipeline)",
            ));
        }
        Ok(component)
    }

    /// The pipeline job that runs a pipeline deployment's component. `--input` binds the
    /// component's only data input (or its input named `input_data`, as in Azure's samples).
    async fn pipeline_batch_job(
        &self,
        ws: &WorkspaceRow,
        endpoint: &str,
        spec: &Json,
        req: &BatchInvoke,
    ) -> Result<Json> {
        let component = self.batch_component(ws, spec).await?;
        let declared = component.get("inputs").and_then(Json::as_object);
        // The component's inputs, with their defaults, then what the caller gave.
        let mut inputs: serde_json::Map<String, Json> = declared
            .into_iter()
            .flatten()
            .map(|(name, d)| {
                let mut d = d.clone();
                if let Some(o) = d.as_object_mut() {
                    o.remove("description");
                    o.remove("optional");
                }
                (name.clone(), d)
            })
            .collect();
        inputs.extend(req.inputs.clone());
        if let Some(input) = &req.input {
            let data_inputs: Vec<&String> = declared
                .into_iter()
                .flatten()
                .filter(|(_, d)| {
                    d.get("type").and_then(Json::as_str).is_some_and(|t| {
                        t.starts_with("uri_") || t.ends_with("_model") || t == "mltable"
                    })
                })
                .map(|(name, _)| name)
                .collect();
            let target = match data_inputs.as_slice() {
                [only] => (*only).clone(),
                many if many.iter().any(|n| *n == "input_data") => "input_data".to_string(),
                _ => {
                    return Err(Error::invalid(
                        "input",
                        "the pipeline component has no single data input for --input to bind",
                    ));
                }
            };
            inputs.insert(
                target,
                json!({
                    "type": req.input_type.as_deref().unwrap_or("uri_folder"),
                    "path": input,
                }),
            );
        }
        let deployment = spec.get("name").and_then(Json::as_str).unwrap_or_default();
        let mut settings = spec.get("settings").cloned().unwrap_or(json!({}));
        if let (Some(obj), Some(compute)) = (settings.as_object_mut(), spec.get("compute")) {
            obj.entry("default_compute").or_insert(compute.clone());
        }
        let mut job = json!({
            "type": "pipeline",
            "display_name": format!("{endpoint}-{deployment}"),
            "experiment_name": req.experiment_name.as_deref().unwrap_or(endpoint),
            "tags": { ENDPOINT_TAG: endpoint, DEPLOYMENT_TAG: deployment },
            "inputs": inputs,
            "outputs": component.get("outputs").cloned().unwrap_or(json!({})),
            "jobs": component.get("jobs").cloned().unwrap_or(json!({})),
            "settings": settings,
        });
        // The pipeline's own outputs: the component's declarations, with the paths asked for.
        if let Some(outputs) = job["outputs"].as_object_mut() {
            for (name, out) in outputs.iter_mut() {
                if let Some(o) = out.as_object_mut() {
                    o.remove("description");
                    if let Some(asked) = req.outputs.get(name).and_then(Json::as_object) {
                        o.extend(asked.clone());
                    }
                }
            }
        }
        Ok(job)
    }
}
