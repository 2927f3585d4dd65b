//! Turning a submitted command job into its run plan: every reference resolved and pinned
//! (environments, data and model assets, earlier jobs' outputs), datastore paths checked, the
//! environment planned, outputs placed. Everything a user can get wrong is found here, at
//! submission, with the field named — not minutes later on a node.

use super::Jobs;
use super::sched::PoolSpec;
use crate::DEFAULT_DATASTORE;
use crate::error::{Error, Result};
use crate::process::{machine_cpus, user_memory_mb};
use crate::resources::Scope;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use tarn_spec::Kind;
use tarn_spec::compute::{ComputeSpec, VmSize};
use tarn_spec::names::NameRule;
use tarn_spec::refs::{self, AssetRef, ComputeRef};
use tarn_spec::runplan::{
    Distribution, EnvSpec, GitCode, Input, Location, Output, PackageIndex, RunPlan,
};
use tarn_spec::uri::GitSource;
use tarn_spec::uri::{self, DataUri, StorePath};
use tarn_store::WorkspaceRow;

/// The datastore run artifacts go to, as in Azure ML.
pub const ARTIFACT_DATASTORE: &str = "workspaceartifactstore";

/// Where a job runs: the implicit serverless pool, `local` (starts at once), or a compute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// As shown to users: `serverless`, `local`, or the compute's name.
    pub compute: String,
    pub runs_on: RunsOn,
    /// What one node may use at most (a cluster's VM `size`), besides its share of the machine.
    pub node: Option<VmSize>,
    /// An attached Spark cluster's master, for a compute that is one (its drivers run here).
    pub spark_master: Option<String>,
}

/// Who places a job on nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunsOn {
    /// Node slots on this machine, placed (and scaled) by Tarn's own scheduler.
    Slots(PoolSpec),
    /// An engine (Slurm, Ray) that places the job itself.
    Engine(ComputeSpec),
}

impl Placement {
    /// The most nodes one job may ask for here.
    pub fn max_nodes(&self) -> u32 {
        match &self.runs_on {
            RunsOn::Slots(pool) => pool.max_nodes,
            RunsOn::Engine(spec) => spec.engine_max_instances().unwrap_or(u32::MAX),
        }
    }

    fn slots(compute: &str, min_nodes: u32, max_nodes: u32, idle_ms: i64) -> Placement {
        Placement {
            compute: compute.to_string(),
            runs_on: RunsOn::Slots(PoolSpec {
                min_nodes,
                max_nodes,
                idle_ms,
            }),
            node: None,
            spark_master: None,
        }
    }

    /// CPUs and memory (MiB) one node slot of this machine may use: its share (the machine
    /// divided among the pool's nodes, at most one share per CPU), capped by the VM size.
    fn node_share(&self) -> (u32, u64) {
        let cpus = machine_cpus();
        let nodes = self.max_nodes().clamp(1, 1024);
        let share_cpus = (cpus / nodes).max(1);
        let share_mb = user_memory_mb() / u64::from(nodes.min(cpus).max(1));
        match self.node {
            Some(size) => (share_cpus.min(size.cpus), share_mb.min(size.memory_mb)),
            None => (share_cpus, share_mb),
        }
    }
}

/// `queue_settings.priority` as a number: higher runs first.
pub fn priority(spec: &Json) -> i64 {
    match spec
        .pointer("/queue_settings/priority")
        .and_then(Json::as_str)
    {
        Some("low") => 0,
        Some("high") => 2,
        _ => 1,
    }
}

impl Jobs {
    /// Where a job with this `compute` field runs, with its pool's limits.
    pub(crate) async fn placement(
        &self,
        ws: &WorkspaceRow,
        compute: Option<&str>,
    ) -> Result<Placement> {
        let parsed = match compute {
            None => ComputeRef::Serverless,
            Some(text) => refs::parse_compute_ref(text)
                .map_err(|e| Error::invalid("compute", e.to_string()))?,
        };
        let name = match parsed {
            ComputeRef::Serverless => {
                return Ok(Placement::slots("serverless", 0, machine_cpus(), 0));
            }
            ComputeRef::Local => return Ok(Placement::slots("local", 0, u32::MAX, 0)),
            ComputeRef::Named(name) => name,
        };
        let scope = Scope {
            workspace: &ws.name,
            kind: Kind::Compute,
            parent: None,
        };
        let row = self
            .store
            .get_resource(&scope.key(&ws.id, &name, ""))
            .await?
            .ok_or_else(|| {
                Error::invalid(
                    "compute",
                    format!("compute {name:?} does not exist in workspace {:?}", ws.name),
                )
            })?;
        match self.compute_spec(&ws.id, &row).await? {
            ComputeSpec::Cluster {
                min_instances,
                max_instances,
                idle_ms,
                node,
            } => Ok(Placement {
                node,
                ..Placement::slots(&name, min_instances, max_instances, idle_ms)
            }),
            ComputeSpec::Instance => Ok(Placement::slots(&name, 0, 1, 0)),
            ComputeSpec::Kubernetes(k) if k.kubeconfig.is_none() && !k.in_cluster => {
                Err(Error::invalid(
                    "compute",
                    format!(
                        "compute {name:?} cannot be reached: it has no `kubeconfig` and is not `in_cluster` (give it one with `tarn compute update`)"
                    ),
                ))
            }
            engine @ (ComputeSpec::Slurm(_) | ComputeSpec::Ray(_) | ComputeSpec::Kubernetes(_)) => {
                Ok(Placement {
                    compute: name,
                    runs_on: RunsOn::Engine(engine),
                    node: None,
                    spark_master: None,
                })
            }
            // Spark applications' drivers: one per CPU of this machine at once.
            ComputeSpec::SparkPool(spark) => Ok(Placement {
                spark_master: Some(spark.master),
                ..Placement::slots(&name, 0, machine_cpus(), 0)
            }),
            ComputeSpec::Other(other) => Err(Error::invalid(
                "compute",
                format!(
                    "compute {name:?} is of type {other}; jobs run on amlcompute clusters, compute instances, slurm, ray and kubernetes clusters, serverless or local"
                ),
            )),
        }
    }

    /// Builds the run plan of a validated command job.
    pub(crate) async fn build_plan(
        &self,
        ws: &WorkspaceRow,
        job: &str,
        spec: &Json,
        placement: &Placement,
    ) -> Result<RunPlan> {
        let instance_count = spec
            .pointer("/resources/instance_count")
            .and_then(Json::as_u64)
            .unwrap_or(1)
            .max(1) as u32;
        if instance_count > placement.max_nodes() {
            return Err(Error::invalid(
                "resources.instance_count",
                format!(
                    "the job asks for {instance_count} nodes but compute {:?} has at most {}",
                    placement.compute,
                    placement.max_nodes()
                ),
            ));
        }
        let experiment = spec
            .get("experiment_name")
            .and_then(Json::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| "Default".to_string());
        let (code, git_code) = match spec.get("code").and_then(Json::as_str) {
            Some(code) if code.starts_with("git+") => match uri::parse(code) {
                Ok(DataUri::Git(source)) => (None, Some(self.git_code(ws, source).await?)),
                _ => {
                    return Err(Error::invalid(
                        "code",
                        format!(
                            "{code:?} is not a git URL such as git+https://host/repo.git@main#subdirectory=src"
                        ),
                    ));
                }
            },
            Some(code) => (Some(self.data_location(ws, code, "code").await?.1), None),
            None => (None, None),
        };
        let environment = self.plan_environment(ws, spec.get("environment")).await?;
        let mut inputs = BTreeMap::new();
        for (name, input) in spec
            .get("inputs")
            .and_then(Json::as_object)
            .into_iter()
            .flatten()
        {
            if let Some(plan) = self.plan_input(ws, name, input).await? {
                inputs.insert(name.clone(), plan);
            }
        }
        let mut outputs = BTreeMap::new();
        for (name, output) in spec
            .get("outputs")
            .and_then(Json::as_object)
            .into_iter()
            .flatten()
        {
            outputs.insert(name.clone(), self.plan_output(ws, job, name, output).await?);
        }
        let environment_variables = spec
            .get("environment_variables")
            .and_then(Json::as_object)
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), scalar_text(v)))
            .collect();
        let distribution = spec.get("distribution").and_then(|d| {
            Some(Distribution {
                type_: d.get("type")?.as_str()?.to_string(),
                process_count_per_instance: d
                    .get("process_count_per_instance")
                    .or_else(|| d.get("worker_count"))
                    .and_then(Json::as_u64)
                    .unwrap_or(1)
                    .max(1) as u32,
            })
        });
        let artifacts_path = format!("ExperimentRun/dcid.{job}/");
        Ok(RunPlan {
            workspace: ws.name.clone(),
            job: job.to_string(),
            experiment,
            command: spec
                .get("command")
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_string(),
            code,
            environment,
            inputs,
            outputs,
            artifacts: self
                .location(ws, ARTIFACT_DATASTORE, &artifacts_path)
                .await?,
            environment_variables,
            timeout_s: spec.pointer("/limits/timeout").and_then(Json::as_u64),
            distribution,
            instance_count,
            nodes: vec![],
            master: None,
            // An engine's node: its own CPUs and memory, counted by the runner there.
            cpus_per_node: match placement.runs_on {
                RunsOn::Slots(_) => placement.node_share().0,
                RunsOn::Engine(_) => 0,
            },
            memory_mb_per_node: match placement.runs_on {
                RunsOn::Slots(_) => placement.node_share().1,
                RunsOn::Engine(_) => 0,
            },
            tracking_uri: format!("{}/ws/{}/mlflow", self.config.public_url, ws.name),
            spark_app: None,
            spark_ships_env: false,
            git_code,
        })
    }

    /// A datastore location, with the local directory for `local` datastores.
    pub(crate) async fn location(
        &self,
        ws: &WorkspaceRow,
        datastore: &str,
        path: &str,
    ) -> Result<Location> {
        let scope = Scope {
            workspace: &ws.name,
            kind: Kind::Datastore,
            parent: None,
        };
        let row = self
            .store
            .get_resource(&scope.key(&ws.id, datastore, ""))
            .await?
            .ok_or_else(|| {
                Error::not_found(format!(
                    "datastore {datastore:?} in workspace {:?}",
                    ws.name
                ))
            })?;
        let local_path = match (
            row.spec.get("type").and_then(Json::as_str),
            row.spec.get("path").and_then(Json::as_str),
        ) {
            (Some("local"), Some(root)) => Some(
                std::path::Path::new(root)
                    .join(path.trim_end_matches('/'))
                    .display()
                    .to_string(),
            ),
            _ => None,
        };
        Ok(Location {
            datastore: datastore.to_string(),
            path: path.to_string(),
            local_path,
            // A registry's datastore: the runner reads it there, with the job's token.
            workspace: crate::registry_scope::is_registry(&ws.name).then(|| ws.name.clone()),
        })
    }

    /// Resolves a data reference (datastore URI, data/model asset, job output) to its
    /// datastore location. Returns the URI the job will see and the location.
    pub(crate) async fn data_location(
        &self,
        ws: &WorkspaceRow,
        text: &str,
        field: &str,
    ) -> Result<(String, Location)> {
        let bad = |msg: String| Error::invalid(field, msg);
        let registry_asset = text.starts_with("azureml://registries/");
        if (refs::looks_like_ref(text) && !text.starts_with("azureml://")) || registry_asset {
            // An asset: data first, then model.
            let parsed =
                refs::parse_asset_ref(text, NameRule::Asset).map_err(|e| bad(e.to_string()))?;
            for kind in [Kind::Data, Kind::Model] {
                if let Some(row) = self.find_asset(ws, kind, &parsed).await? {
                    let path = row
                        .spec
                        .get("path")
                        .and_then(Json::as_str)
                        .unwrap_or_default()
                        .to_string();
                    return Box::pin(self.data_location(ws, &path, field)).await;
                }
            }
            return Err(bad(format!(
                "no data asset or model {text:?} in workspace {:?}",
                ws.name
            )));
        }
        match uri::parse(text).map_err(|e| bad(e.to_string()))? {
            DataUri::Datastore {
                workspace,
                datastore,
                path,
            } => {
                // A registry's file (a shared asset's), read where the registry keeps it.
                let registry = match workspace.as_deref() {
                    Some(w) if w != ws.name && crate::registry_scope::is_registry(w) => {
                        Some(self.store.get_workspace(w).await?.ok_or_else(|| {
                            bad(format!(
                                "registry {:?} does not exist",
                                crate::registry_scope::shown_name(w)
                            ))
                        })?)
                    }
                    Some(w) if w != ws.name => {
                        return Err(bad(format!("{text} is in another workspace")));
                    }
                    _ => None,
                };
                let location = self
                    .location(registry.as_ref().unwrap_or(ws), &datastore, path.as_str())
                    .await
                    .map_err(|e| bad(e.to_string()))?;
                Ok((uri::datastore_uri(&datastore, &path), location))
            }
            DataUri::JobOutput { job, output, path } => {
                let row = self
                    .store
                    .get_job(&ws.id, &job)
                    .await?
                    .ok_or_else(|| bad(format!("job {job:?} does not exist")))?;
                let state = super::JobState::of(&row);
                let mut location: Location = if output == "artifacts" {
                    state.plan.map(|p| p.artifacts)
                } else {
                    state
                        .plan
                        .and_then(|p| p.outputs.get(&output).map(|o| o.location.clone()))
                        // A sweep's outputs are its best trial's.
                        .or_else(|| {
                            let best = state.sweep?.best?;
                            best.outputs.get(&output).map(|o| o.location.clone())
                        })
                }
                .ok_or_else(|| bad(format!("job {job:?} has no output {output:?}")))?;
                let joined = StorePath::parse(&location.path)
                    .and_then(|base| base.join(path.as_str()))
                    .map_err(|e| bad(e.to_string()))?;
                location = self
                    .location(ws, &location.datastore, joined.as_str())
                    .await?;
                Ok((uri::datastore_uri(&location.datastore, &joined), location))
            }
            DataUri::Local(p) => Err(bad(format!(
                "{p:?} is a local path: submit with `tarn job create`, which uploads it, or give a datastore URI"
            ))),
            DataUri::Web(_) => Err(bad(
                "web URLs are read by the runner; use them as inputs".into()
            )),
            DataUri::Mlflow(u) => Err(bad(format!("{u}: MLflow URIs are not supported here yet"))),
            DataUri::Service { scheme, .. } => Err(bad(format!(
                "{scheme}:// URIs need a datastore: register one for the container and use azureml://datastores/…"
            ))),
            DataUri::Git(_) => Err(bad(
                "a git repository is only a job's `code`; inputs come from datastores".into(),
            )),
        }
    }

    /// A job's `code: git+…`: the `git` connection whose target the URL starts with (the
    /// longest), and a check now that the repository answers with its credentials, so that a
    /// wrong URL or credential fails the submission rather than the run.
    async fn git_code(&self, ws: &WorkspaceRow, source: GitSource) -> Result<GitCode> {
        let connection = self
            .connections_of_type(ws, "git")
            .await?
            .into_iter()
            .filter_map(|r| {
                let target = r
                    .spec
                    .get("target")?
                    .as_str()?
                    .trim_end_matches('/')
                    .to_string();
                let covers = source.url == target || source.url.starts_with(&format!("{target}/"));
                covers.then_some((target.len(), r.key.name))
            })
            .max()
            .map(|(_, name)| name);
        let mut code = GitCode {
            source,
            connection,
            username: None,
            password: None,
        };
        let mut with_credentials = code.clone();
        self.with_git_credentials(ws, &mut with_credentials).await?;
        // A branch or tag must exist; a commit id is not listed, so only access is checked.
        let reference = code.source.reference.as_deref().unwrap_or("HEAD");
        let commit = reference.len() >= 7 && reference.chars().all(|c| c.is_ascii_hexdigit());
        let mut cmd = tokio::process::Command::new("git");
        cmd.args(["ls-remote", "--exit-code", "--"])
            .arg(&code.source.url)
            .args((!commit).then_some(reference))
            .envs(with_credentials.git_env())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let answered = tokio::time::timeout(std::time::Duration::from_secs(30), cmd.output()).await;
        let why = match answered {
            Ok(Ok(out)) if out.status.success() => None,
            Ok(Ok(out)) if out.status.code() == Some(2) => Some(format!(
                "has no branch, tag or commit {:?}",
                code.source.reference.as_deref().unwrap_or("HEAD")
            )),
            Ok(Ok(out)) => Some(
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .rfind(|l| !l.trim().is_empty())
                    .unwrap_or("git failed")
                    .trim()
                    .to_string(),
            ),
            Ok(Err(e)) => Some(format!("git could not run here: {e}")),
            Err(_) => Some("did not answer in 30 s".into()),
        };
        if let Some(why) = why {
            let hint = match &code.connection {
                Some(c) => format!(" (with the credentials of connection {c:?})"),
                None => "; a `git` connection whose target it starts with gives credentials".into(),
            };
            return Err(Error::invalid(
                "code",
                format!("git repository {}: {why}{hint}", code.source.url),
            ));
        }
        code.username = None;
        code.password = None;
        Ok(code)
    }

    /// Puts the credentials of the code's `git` connection in, from the vault: for the runner
    /// that fetches the plan (and the check at submission), never into the stored plan.
    pub(crate) async fn with_git_credentials(
        &self,
        ws: &WorkspaceRow,
        code: &mut GitCode,
    ) -> Result<()> {
        if let Some(name) = &code.connection {
            // Git hosts take a personal access token as the password of any user name.
            (code.username, code.password) =
                self.basic_credentials(ws, name, "x-access-token").await?;
        }
        Ok(())
    }

    pub(crate) async fn find_asset(
        &self,
        ws: &WorkspaceRow,
        kind: Kind,
        parsed: &AssetRef,
    ) -> Result<Option<tarn_store::ResourceRow>> {
        let scope = Scope {
            workspace: &ws.name,
            kind,
            parent: None,
        };
        Ok(match parsed {
            AssetRef::Version { name, version } => {
                self.store
                    .get_resource(&scope.key(&ws.id, name, version))
                    .await?
            }
            AssetRef::Label { name, .. } => {
                self.store
                    .latest_resource(&scope.key(&ws.id, name, ""))
                    .await?
            }
            AssetRef::Registry {
                registry,
                name,
                selector,
            } if registry != "azureml" => {
                // A shared registry's: found in its own workspace (who may read it is checked
                // where the reference was written: `check_registry_references`).
                let Some(reg) = self
                    .store
                    .get_workspace(&crate::registry_scope::workspace_of(registry))
                    .await?
                else {
                    return Ok(None);
                };
                if selector == "latest" {
                    self.store
                        .latest_resource(&scope.key(&reg.id, name, ""))
                        .await?
                } else {
                    self.store
                        .get_resource(&scope.key(&reg.id, name, selector))
                        .await?
                }
            }
            AssetRef::Registry { .. } => None,
        })
    }

    pub(crate) async fn plan_environment(
        &self,
        ws: &WorkspaceRow,
        env: Option<&Json>,
    ) -> Result<EnvSpec> {
        let bad = |msg: String| Error::invalid("environment", msg);
        let env = env.ok_or_else(|| bad("a command job needs an environment".into()))?;
        let resolved = match env.as_str() {
            Some(text) => {
                let parsed =
                    refs::parse_asset_ref(text, NameRule::Asset).map_err(|e| bad(e.to_string()))?;
                match parsed {
                    AssetRef::Registry { ref registry, .. } if registry == "azureml" => env.clone(),
                    _ => self
                        .find_asset(ws, Kind::Environment, &parsed)
                        .await?
                        .map(|row| row.spec)
                        .ok_or_else(|| {
                            bad(format!(
                                "environment {text:?} does not exist in workspace {:?}",
                                ws.name
                            ))
                        })?,
                }
            }
            None => env.clone(),
        };
        let plan = tarn_spec::envplan::plan(&resolved).map_err(bad)?;
        let mut spec = EnvSpec::of(&plan, &resolved);
        if !spec.requirements.is_empty() {
            spec.indexes = self.python_feeds(ws).await?;
            if !spec.indexes.is_empty() {
                // Another index may resolve other packages: another build.
                let urls: Vec<&str> = spec.indexes.iter().map(|i| i.url.as_str()).collect();
                spec.hash = tarn_spec::digest::sha256_hex(
                    format!("{}\n{}", spec.hash, urls.join("\n")).as_bytes(),
                )[..32]
                    .to_string();
            }
        }
        Ok(spec)
    }

    /// The workspace's `python_feed` connections, as package indexes without credentials.
    async fn python_feeds(&self, ws: &WorkspaceRow) -> Result<Vec<PackageIndex>> {
        Ok(self
            .connections_of_type(ws, "python_feed")
            .await?
            .into_iter()
            .filter_map(|r| {
                Some(PackageIndex {
                    url: r.spec.get("target")?.as_str()?.to_string(),
                    connection: r.key.name,
                    username: None,
                    password: None,
                })
            })
            .collect())
    }

    /// The workspace's connections of one `type`.
    async fn connections_of_type(
        &self,
        ws: &WorkspaceRow,
        type_: &str,
    ) -> Result<Vec<tarn_store::ResourceRow>> {
        let filter = tarn_store::ResourceFilter {
            parent: "",
            name: None,
            include_archived: false,
            latest_only: true,
        };
        Ok(self
            .store
            .list_resources(&ws.id, Kind::Connection.collection(), &filter)
            .await?
            .into_iter()
            .filter(|r| r.spec.get("type").and_then(Json::as_str) == Some(type_))
            .collect())
    }

    /// The user name and password a connection's credentials give for HTTP basic auth (a
    /// personal access token is the password of `pat_user`); none when it has neither, or no
    /// longer exists (then the service is tried without).
    async fn basic_credentials(
        &self,
        ws: &WorkspaceRow,
        connection: &str,
        pat_user: &str,
    ) -> Result<(Option<String>, Option<String>)> {
        let scope = Scope {
            workspace: &ws.name,
            kind: Kind::Connection,
            parent: None,
        };
        let Some(row) = self
            .store
            .get_resource(&scope.key(&ws.id, connection, ""))
            .await?
        else {
            return Ok((None, None));
        };
        let spec = self.resources.with_secrets(&ws.id, &row).await?;
        let creds = spec.get("credentials").unwrap_or(&Json::Null);
        let field = |f: &str| creds.get(f).and_then(Json::as_str).map(str::to_string);
        Ok(match creds.get("type").and_then(Json::as_str) {
            Some("username_password") => (field("username"), field("password")),
            Some("pat") => (Some(pat_user.to_string()), field("pat")),
            _ => (None, None),
        })
    }

    /// Puts the credentials of the plan's package indexes in, from the vault: for the runner
    /// that fetches the plan, never into the stored one.
    pub(crate) async fn with_index_credentials(
        &self,
        ws: &WorkspaceRow,
        env: &mut EnvSpec,
    ) -> Result<()> {
        for index in &mut env.indexes {
            // Feeds ignore the user name that goes with a token.
            (index.username, index.password) = self
                .basic_credentials(ws, &index.connection, "tarn")
                .await?;
        }
        Ok(())
    }

    async fn plan_input(
        &self,
        ws: &WorkspaceRow,
        name: &str,
        input: &Json,
    ) -> Result<Option<Input>> {
        let field = format!("inputs.{name}");
        let Some(obj) = input.as_object() else {
            return Ok(match input {
                Json::Null => None,
                v => Some(Input::Literal {
                    value: scalar_text(v),
                }),
            });
        };
        let Some(path) = obj.get("path").and_then(Json::as_str) else {
            // `{type: number, value: 3}` or `{default: …}`: a literal.
            return Ok(obj
                .get("value")
                .or_else(|| obj.get("default"))
                .filter(|v| !v.is_null())
                .map(|v| Input::Literal {
                    value: scalar_text(v),
                }));
        };
        let type_ = obj
            .get("type")
            .and_then(Json::as_str)
            .unwrap_or("uri_folder")
            .to_string();
        let mode = obj
            .get("mode")
            .and_then(Json::as_str)
            .unwrap_or("ro_mount")
            .to_string();
        // A public blob container: `wasbs://…` always; a blob `https://` URL for folders
        // (a single file is a plain download).
        if let Some(blob) = uri::public_blob(path)
            && (!path.starts_with("http") || type_ != "uri_file")
        {
            return Ok(Some(Input::PublicBlob {
                type_,
                mode,
                uri: path.to_string(),
                account: blob.account,
                container: blob.container,
                endpoint: blob.endpoint,
                path: blob.path.as_str().to_string(),
            }));
        }
        if let Ok(DataUri::Web(url)) = uri::parse(path) {
            if type_ != "uri_file" {
                return Err(Error::invalid(
                    &format!("{field}.type"),
                    "a web URL is a single file: use type uri_file",
                ));
            }
            return Ok(Some(Input::Web { type_, mode, url }));
        }
        let (uri, location) = self
            .data_location(ws, path, &format!("{field}.path"))
            .await?;
        Ok(Some(Input::Data {
            type_,
            mode,
            uri,
            location,
        }))
    }

    async fn plan_output(
        &self,
        ws: &WorkspaceRow,
        job: &str,
        name: &str,
        output: &Json,
    ) -> Result<Output> {
        let field = format!("outputs.{name}.path");
        let type_ = output
            .get("type")
            .and_then(Json::as_str)
            .unwrap_or("uri_folder")
            .to_string();
        let default =
            format!("azureml://datastores/{DEFAULT_DATASTORE}/paths/azureml/{job}/{name}/");
        let raw = output
            .get("path")
            .and_then(Json::as_str)
            .unwrap_or(&default);
        // The two expressions Azure ML allows in output paths, substituted as plain text.
        let text = raw
            .replace("${{name}}", job)
            .replace("${{output_name}}", name);
        match uri::parse(&text).map_err(|e| Error::invalid(&field, e.to_string()))? {
            DataUri::Datastore {
                datastore, path, ..
            } => {
                let location = self
                    .location(ws, &datastore, path.as_str())
                    .await
                    .map_err(|e| Error::invalid(&field, e.to_string()))?;
                Ok(Output {
                    type_,
                    uri: uri::datastore_uri(&datastore, &path),
                    location,
                })
            }
            _ => Err(Error::invalid(
                &field,
                format!(
                    "an output path must be a datastore URI (azureml://datastores/<name>/paths/<path>), not {text:?}"
                ),
            )),
        }
    }
}

/// The marker a finished environment build leaves in its folder (written by the runner).
pub const ENV_READY: &str = ".tarn-ready";

impl Jobs {
    /// An environment document's build: its content hash and whether a finished build of it is
    /// cached on this machine (jobs, deployments and batch jobs share builds by hash); `None`
    /// when it runs on the host's Python.
    pub fn environment_build(&self, spec: &Json) -> Option<(String, bool)> {
        let plan = tarn_spec::envplan::plan(spec).ok()?;
        if plan.requirements.is_empty() && plan.python.is_none() {
            return None; // the host's Python: nothing to build
        }
        let hash = plan.hash();
        let built = self.envs_dir().join(&hash).join(ENV_READY).is_file();
        Some((hash, built))
    }
}

/// A literal's text: strings as they are, booleans as Python prints them (what `az ml` jobs
/// see), numbers as written.
pub fn scalar_text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        Json::Bool(true) => "True".into(),
        Json::Bool(false) => "False".into(),
        Json::Null => String::new(),
        other => other.to_string(),
    }
}
