//! MLflow 3's registered scorers (`Scorer.register`, `mlflow.genai.scorers.list_scorers`,
//! `get_scorer`, `delete_scorer`): versioned, named scorers kept with an experiment, so a team
//! evaluates with the same judges. Tarn keeps each version's serialized form as the client
//! sent it and never runs it. Like `mlflow server`, it refuses scorers made with the
//! `@scorer` decorator: loading one runs the code it carries, in whoever loads it. The wire
//! forms are in `tarn-api`'s `mlflow::scorers`.

use crate::Core;
use crate::authz::{Action, Principal};
use crate::error::{Error, Result};
use crate::now_ms;
use crate::tracking::Tracking;
use serde_json::Value as Json;
use std::sync::Arc;
pub use tarn_store::ScorerRow;
use tarn_store::{ExperimentRow, StoreError, WorkspaceRow};

/// MLflow's words (`DECORATOR_SCORER_REGISTRATION_NOT_SUPPORTED_ERROR`) for a decorator scorer.
const DECORATOR_SCORER: &str = "Custom scorer registration (using @scorer decorator) is not \
     supported outside of Databricks tracking environments due to security concerns. Custom \
     scorers require arbitrary code execution during deserialization.\n\nTo use custom \
     scorers:\n1. Configure MLflow to use a Databricks tracking URI, or\n2. Manage your custom \
     scorer code in a source code repository (e.g., GitHub) and import it directly, or\n3. Use \
     built-in scorers or make_judge() scorers instead.";

fn invalid(message: impl Into<String>) -> Error {
    Error::invalid("", message)
}

fn no_scorer(name: &str, version: Option<i64>, experiment: &str) -> Error {
    Error::not_found(match version {
        Some(v) => format!("Scorer with name '{name}' and version {v} for experiment {experiment}"),
        None => format!("Scorer with name '{name}' for experiment {experiment}"),
    })
}

pub struct Scorers {
    core: Arc<Core>,
    tracking: Arc<Tracking>,
}

crate::service_on_core!(Scorers);

impl Scorers {
    pub(crate) fn new(core: Arc<Core>, tracking: Arc<Tracking>) -> Self {
        Scorers { core, tracking }
    }

    /// The workspace and its experiment `experiment_id`, which must be active (as MLflow's
    /// store checks for every scorer call).
    async fn experiment(
        &self,
        p: &Principal,
        workspace: &str,
        experiment_id: &str,
        action: Action,
    ) -> Result<(WorkspaceRow, ExperimentRow)> {
        let ws = self
            .tracking
            .tracking_workspace(p, workspace, action)
            .await?;
        let exp = self.tracking.experiment(&ws, experiment_id).await?;
        Tracking::ensure_active(&exp)?;
        Ok((ws, exp))
    }

    /// Adds the next version of the experiment's scorer `name`.
    pub async fn register(
        &self,
        p: &Principal,
        workspace: &str,
        experiment_id: &str,
        name: &str,
        serialized: &str,
    ) -> Result<ScorerRow> {
        if name.trim().is_empty() {
            return Err(invalid(
                "Scorer name cannot be empty or contain only whitespace.",
            ));
        }
        let Ok(Json::Object(scorer)) = serde_json::from_str::<Json>(serialized) else {
            return Err(invalid("serialized_scorer must be valid JSON"));
        };
        if scorer.get("call_source").is_some_and(|c| !c.is_null()) {
            return Err(invalid(DECORATOR_SCORER));
        }
        let (ws, exp) = self
            .experiment(p, workspace, experiment_id, Action::Write)
            .await?;
        let row = ScorerRow {
            workspace_id: ws.id,
            experiment_id: exp.experiment_id,
            name: name.to_string(),
            version: 0,
            scorer_id: uuid::Uuid::new_v4().to_string(),
            serialized: serialized.to_string(),
            created: now_ms(),
        };
        match self.store.register_scorer(&row).await {
            Err(StoreError::Conflict) => Err(Error::Conflict(format!(
                "another version of scorer '{name}' was registered at the same moment: try again"
            ))),
            done => Ok(done?),
        }
    }

    /// The latest version of each of the experiment's scorers, by name.
    pub async fn list(
        &self,
        p: &Principal,
        workspace: &str,
        experiment_id: &str,
    ) -> Result<Vec<ScorerRow>> {
        let (ws, exp) = self
            .experiment(p, workspace, experiment_id, Action::Read)
            .await?;
        let mut latest: Vec<ScorerRow> = vec![];
        for row in self.store.scorers(&ws.id, exp.experiment_id, None).await? {
            // Rows come by name, then version: a name's last row is its latest.
            match latest.last_mut() {
                Some(last) if last.name == row.name => *last = row,
                _ => latest.push(row),
            }
        }
        Ok(latest)
    }

    /// Every version of the experiment's scorer `name`, oldest first.
    pub async fn versions(
        &self,
        p: &Principal,
        workspace: &str,
        experiment_id: &str,
        name: &str,
    ) -> Result<Vec<ScorerRow>> {
        let (ws, exp) = self
            .experiment(p, workspace, experiment_id, Action::Read)
            .await?;
        Ok(self
            .store
            .scorers(&ws.id, exp.experiment_id, Some(name))
            .await?)
    }

    /// One version of a scorer, or its latest.
    pub async fn get(
        &self,
        p: &Principal,
        workspace: &str,
        experiment_id: &str,
        name: &str,
        version: Option<i64>,
    ) -> Result<ScorerRow> {
        let versions = self.versions(p, workspace, experiment_id, name).await?;
        if versions.is_empty() {
            return Err(no_scorer(name, None, experiment_id));
        }
        match version {
            None => Ok(versions.into_iter().last().expect("not empty")),
            Some(v) => versions
                .into_iter()
                .find(|r| r.version == v)
                .ok_or_else(|| no_scorer(name, Some(v), experiment_id)),
        }
    }

    /// Online scoring (a scorer run on a sample of incoming traces) is not in Tarn: no scorer
    /// has a configuration for it. The client asks for them whenever it lists scorers.
    pub async fn online_configs(&self, p: &Principal, workspace: &str) -> Result<Vec<Json>> {
        self.tracking
            .tracking_workspace(p, workspace, Action::Read)
            .await?;
        Ok(vec![])
    }

    /// Deletes one version of a scorer, or all of them.
    pub async fn delete(
        &self,
        p: &Principal,
        workspace: &str,
        experiment_id: &str,
        name: &str,
        version: Option<i64>,
    ) -> Result<()> {
        let (ws, exp) = self
            .experiment(p, workspace, experiment_id, Action::Write)
            .await?;
        let gone = self
            .store
            .delete_scorer(&ws.id, exp.experiment_id, name, version)
            .await?;
        if gone == 0 {
            return Err(no_scorer(name, version, experiment_id));
        }
        Ok(())
    }
}
