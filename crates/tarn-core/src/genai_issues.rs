//! MLflow 3's GenAI issues (`/api/3.0/mlflow/issues`): a problem found in an experiment's
//! traces — by a person or a judge — with its status (`pending`, `rejected`, `resolved`),
//! severity, root causes and the run that found it; searched by experiment and by status,
//! source run, severity or name, the most severe first. The wire forms are in `tarn-api`'s
//! `mlflow::issues`.

use crate::Core;
use crate::authz::{Action, Principal};
use crate::error::{Error, Result};
use crate::now_ms;
use crate::tracking::Tracking;
use serde_json::{Value as Json, json};
use std::sync::Arc;
use tarn_spec::mlflow_search::{self, Entity, Subject};
pub use tarn_store::IssueRow;

/// MLflow's page of issues unless asked (`SEARCH_ISSUES_DEFAULT_MAX_RESULTS`), and the most.
pub const DEFAULT_MAX_RESULTS: i64 = 100;
pub const MAX_RESULTS: i64 = 1000;

const STATUSES: &[&str] = &["pending", "rejected", "resolved"];
const SEVERITIES: &[&str] = &["not_an_issue", "low", "medium", "high"];

fn invalid(message: impl Into<String>) -> Error {
    Error::invalid("", message)
}

fn one_of(field: &str, value: &str, allowed: &[&str]) -> Result<()> {
    if allowed.contains(&value) {
        return Ok(());
    }
    Err(invalid(format!(
        "Invalid {field} '{value}': one of {}",
        allowed.join(", ")
    )))
}

/// A new issue, as the client describes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewIssue {
    pub experiment_id: String,
    pub name: String,
    pub description: String,
    pub status: Option<String>,
    pub severity: Option<String>,
    pub root_causes: Vec<String>,
    pub categories: Vec<String>,
    pub source_run_id: Option<String>,
    pub created_by: Option<String>,
}

/// What an update changes (`None`: kept).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IssueChange {
    pub name: Option<String>,
    pub description: Option<String>,
    pub status: Option<String>,
    pub severity: Option<String>,
}

pub struct Issues {
    core: Arc<Core>,
    tracking: Arc<Tracking>,
}

crate::service_on_core!(Issues);

impl Issues {
    pub(crate) fn new(core: Arc<Core>, tracking: Arc<Tracking>) -> Self {
        Issues { core, tracking }
    }

    pub async fn create(&self, p: &Principal, workspace: &str, new: NewIssue) -> Result<IssueRow> {
        let status = new.status.unwrap_or_else(|| "pending".into());
        one_of("status", &status, STATUSES)?;
        if let Some(s) = &new.severity {
            one_of("severity", s, SEVERITIES)?;
        }
        let ws = self
            .tracking
            .tracking_workspace(p, workspace, Action::Write)
            .await?;
        let exp = self.tracking.experiment(&ws, &new.experiment_id).await?;
        Tracking::ensure_active(&exp)?;
        let now = now_ms();
        let row = IssueRow {
            workspace_id: ws.id,
            issue_id: format!("iss-{}", uuid::Uuid::new_v4().simple()),
            experiment_id: exp.experiment_id,
            status,
            severity: new.severity,
            source_run_id: new.source_run_id.filter(|r| !r.is_empty()),
            created: now,
            trace_count: None,
            content: json!({
                "name": new.name,
                "description": new.description,
                "root_causes": new.root_causes,
                "categories": new.categories,
                "created_by": new.created_by,
                "last_updated_timestamp": now,
            }),
        };
        self.store.put_issue(&row).await?;
        Ok(row)
    }

    pub async fn get(&self, p: &Principal, workspace: &str, issue_id: &str) -> Result<IssueRow> {
        let ws = self
            .tracking
            .tracking_workspace(p, workspace, Action::Read)
            .await?;
        self.store
            .get_issue(&ws.id, issue_id)
            .await?
            .ok_or_else(|| Error::not_found(format!("Issue with ID '{issue_id}'")))
    }

    pub async fn update(
        &self,
        p: &Principal,
        workspace: &str,
        issue_id: &str,
        change: IssueChange,
    ) -> Result<IssueRow> {
        if let Some(s) = &change.status {
            one_of("status", s, STATUSES)?;
        }
        if let Some(s) = &change.severity {
            one_of("severity", s, SEVERITIES)?;
        }
        let ws = self
            .tracking
            .tracking_workspace(p, workspace, Action::Write)
            .await?;
        let mut row = self
            .store
            .get_issue(&ws.id, issue_id)
            .await?
            .ok_or_else(|| Error::not_found(format!("Issue with ID '{issue_id}'")))?;
        if let Some(s) = change.status {
            row.status = s;
        }
        if let Some(s) = change.severity {
            row.severity = Some(s);
        }
        for (key, value) in [("name", change.name), ("description", change.description)] {
            if let Some(v) = value {
                row.content[key] = Json::String(v);
            }
        }
        row.content["last_updated_timestamp"] = json!(now_ms());
        self.store.put_issue(&row).await?;
        Ok(row)
    }

    /// A page of issues (of `experiment_id`, or the workspace's) matching MLflow's issue
    /// filter, and the offset of the next page if there may be one.
    pub async fn search(
        &self,
        p: &Principal,
        workspace: &str,
        experiment_id: Option<&str>,
        filter: &str,
        (max_results, offset): (i64, i64),
        count_traces: bool,
    ) -> Result<(Vec<IssueRow>, Option<i64>)> {
        if !(1..=MAX_RESULTS).contains(&max_results) {
            return Err(invalid(format!(
                "Invalid value {max_results} for parameter 'max_results' supplied. It must be between 1 and {MAX_RESULTS}."
            )));
        }
        let clauses = mlflow_search::parse_filter_of(Subject::Issues, filter).map_err(invalid)?;
        if let Some(c) = clauses.iter().find(|c| c.entity != Entity::Attribute) {
            return Err(invalid(format!(
                "Invalid filter on '{}': issues are filtered by status, source_run_id, severity or name",
                c.key
            )));
        }
        let ws = self
            .tracking
            .tracking_workspace(p, workspace, Action::Read)
            .await?;
        let experiment = match experiment_id.filter(|e| !e.is_empty()) {
            Some(id) => Some(self.tracking.experiment(&ws, id).await?.experiment_id),
            None => None,
        };
        let rows = self
            .store
            .search_issues(
                &ws.id,
                experiment,
                &clauses,
                (offset, max_results + 1),
                count_traces,
            )
            .await?;
        Ok(page(rows, max_results, offset))
    }
}

/// A search's page of `rows` (read with one more than `max_results`, to see whether there
/// is a next page), and the offset of the next page if there is one.
fn page<T>(mut rows: Vec<T>, max_results: i64, offset: i64) -> (Vec<T>, Option<i64>) {
    let next = (rows.len() as i64 > max_results).then_some(offset + max_results);
    rows.truncate(max_results.max(0) as usize);
    (rows, next)
}
