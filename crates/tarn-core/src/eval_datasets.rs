//! MLflow 3 evaluation datasets (`mlflow.genai.datasets`): named sets of records — inputs,
//! expectations, outputs, their source (a trace, a document, a person) — that
//! `mlflow.genai.evaluate` runs an application over, linked to experiments. A record is named
//! by its inputs: adding one with the same inputs merges into it (expectations and tags
//! updated, outputs replaced), as MLflow's SQL store does. The wire forms are in `tarn-api`'s
//! `mlflow::datasets`.

use crate::Core;
use crate::authz::{Action, Principal};
use crate::error::{Error, Result};
use crate::now_ms;
use crate::tracking::{Tracking, like};
use serde_json::{Map, Value as Json, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tarn_spec::mlflow_search::{self, Entity, Op, Subject, Value};
pub use tarn_store::{DatasetRecordRow, DatasetRow};
use tarn_store::{StoreError, WorkspaceRow};

/// MLflow's limits for datasets.
pub mod limits {
    pub const NAME: usize = 255;
    pub const SEARCH_MAX_RESULTS: i64 = 1000;
    pub const RECORDS_PAGE: i64 = 1000;
}

/// A dataset and the experiments it is linked to.
pub type DatasetView = (DatasetRow, Vec<i64>);

fn invalid(message: impl Into<String>) -> Error {
    Error::invalid("", message)
}

fn no_dataset(id: &str) -> Error {
    Error::not_found(format!("Dataset '{id}'"))
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// MLflow's digest of a dataset's state: its name and last change.
fn digest(name: &str, last_update_time: i64) -> String {
    sha256_hex(&format!("{name}:{last_update_time}"))[..8].to_string()
}

/// JSON with its object keys sorted, as Python's `json.dumps(sort_keys=True)` hashes inputs.
fn sorted(v: &Json) -> Json {
    match v {
        Json::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Json::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&m[k])))
                    .collect(),
            )
        }
        Json::Array(a) => Json::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// The JSON type names a dataset's schema lists.
fn type_name(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Json::Number(_) => "float",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

fn matches_text(actual: Option<&str>, op: Op, value: &Value) -> bool {
    let Some(actual) = actual else {
        return matches!(op, Op::Ne | Op::IsNull | Op::NotIn);
    };
    match (op, value) {
        (Op::Eq, Value::Str(v)) => actual == v,
        (Op::Ne, Value::Str(v)) => actual != v,
        (Op::Like, Value::Str(v)) => like(actual, v, false),
        (Op::ILike, Value::Str(v)) => like(actual, v, true),
        (Op::In, Value::List(items)) => items.iter().any(|i| i == actual),
        (Op::NotIn, Value::List(items)) => !items.iter().any(|i| i == actual),
        (Op::IsNotNull, _) => true,
        _ => false,
    }
}

fn matches_number(actual: i64, op: Op, value: &Value) -> bool {
    let Value::Num(v) = value else { return false };
    let a = actual as f64;
    match op {
        Op::Eq => a == *v,
        Op::Ne => a != *v,
        Op::Gt => a > *v,
        Op::Ge => a >= *v,
        Op::Lt => a < *v,
        Op::Le => a <= *v,
        _ => false,
    }
}

/// MLflow 3 evaluation datasets of a workspace.
pub struct EvalDatasets {
    core: Arc<Core>,
    tracking: Arc<Tracking>,
}

crate::service_on_core!(EvalDatasets);

impl EvalDatasets {
    pub(crate) fn new(core: Arc<Core>, tracking: Arc<Tracking>) -> Self {
        EvalDatasets { core, tracking }
    }

    async fn workspace(
        &self,
        p: &Principal,
        workspace: &str,
        action: Action,
    ) -> Result<WorkspaceRow> {
        self.tracking.tracking_workspace(p, workspace, action).await
    }

    async fn dataset(&self, ws: &WorkspaceRow, id: &str) -> Result<DatasetView> {
        self.store
            .datasets(&ws.id, Some(id))
            .await?
            .pop()
            .ok_or_else(|| no_dataset(id))
    }

    async fn experiment_numbers(&self, ws: &WorkspaceRow, ids: &[String]) -> Result<Vec<i64>> {
        let mut out = vec![];
        for id in ids {
            out.push(self.tracking.experiment(ws, id).await?.experiment_id);
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Makes a dataset. `tags` may carry `mlflow.user`, who made it.
    pub async fn create(
        &self,
        p: &Principal,
        workspace: &str,
        name: &str,
        tags: Map<String, Json>,
        experiment_ids: &[String],
    ) -> Result<DatasetView> {
        let ws = self.workspace(p, workspace, Action::Write).await?;
        if name.trim().is_empty() || name.len() > limits::NAME {
            return Err(invalid(format!(
                "Invalid dataset name '{name}': it must be 1 to {} characters",
                limits::NAME
            )));
        }
        let experiments = self.experiment_numbers(&ws, experiment_ids).await?;
        let now = now_ms();
        let user = tags.get("mlflow.user").cloned().unwrap_or(Json::Null);
        let row = DatasetRow {
            workspace_id: ws.id.clone(),
            dataset_id: format!("d-{}", uuid::Uuid::new_v4().simple()),
            name: name.to_string(),
            created_time: now,
            last_update_time: now,
            content: json!({
                "digest": digest(name, now),
                "tags": tags,
                "created_by": user,
                "last_updated_by": user,
                "schema": null,
                "profile": null,
            }),
        };
        self.store
            .put_dataset(&row, Some(&experiments), true)
            .await
            .map_err(|e| match e {
                StoreError::Conflict => Error::AlreadyExists {
                    what: format!("Dataset '{name}'"),
                },
                e => e.into(),
            })?;
        Ok((row, experiments))
    }

    pub async fn get(&self, p: &Principal, workspace: &str, id: &str) -> Result<DatasetView> {
        let ws = self.workspace(p, workspace, Action::Read).await?;
        self.dataset(&ws, id).await
    }

    pub async fn delete(&self, p: &Principal, workspace: &str, id: &str) -> Result<()> {
        let ws = self.workspace(p, workspace, Action::Write).await?;
        if !self.store.delete_dataset(&ws.id, id).await? {
            return Err(no_dataset(id));
        }
        Ok(())
    }

    /// Datasets linked to any of the experiments (all, when none are named) that match the
    /// filter (`name`, `created_time`, `last_update_time`, `created_by`, `last_updated_by`,
    /// `tags.<key>`), newest first unless `order_by` says otherwise; a page and the next
    /// page's offset.
    pub async fn search(
        &self,
        p: &Principal,
        workspace: &str,
        experiment_ids: &[String],
        filter: &str,
        order_by: &[String],
        page: (i64, i64),
    ) -> Result<(Vec<DatasetView>, Option<i64>)> {
        let (max_results, offset) = page;
        let ws = self.workspace(p, workspace, Action::Read).await?;
        if !(1..=limits::SEARCH_MAX_RESULTS).contains(&max_results) {
            return Err(invalid(format!(
                "Invalid value {max_results} for parameter 'max_results': it must be between 1 and {}",
                limits::SEARCH_MAX_RESULTS
            )));
        }
        let experiments = self.experiment_numbers(&ws, experiment_ids).await?;
        let clauses =
            mlflow_search::parse_filter_of(Subject::EvaluationDatasets, filter).map_err(invalid)?;
        let mut order = vec![];
        for item in order_by {
            let o = mlflow_search::parse_order_by_of(Subject::EvaluationDatasets, item)
                .map_err(invalid)?;
            order.push(o);
        }
        let mut all: Vec<DatasetView> = self
            .store
            .datasets(&ws.id, None)
            .await?
            .into_iter()
            .filter(|(_, linked)| {
                experiments.is_empty() || linked.iter().any(|e| experiments.contains(e))
            })
            .filter(|(d, _)| {
                clauses.iter().all(|c| match (c.entity, c.key.as_str()) {
                    (Entity::Attribute, "created_time") => {
                        matches_number(d.created_time, c.op, &c.value)
                    }
                    (Entity::Attribute, "last_update_time") => {
                        matches_number(d.last_update_time, c.op, &c.value)
                    }
                    (Entity::Attribute, "name") => matches_text(Some(&d.name), c.op, &c.value),
                    (Entity::Attribute, "dataset_id") => {
                        matches_text(Some(&d.dataset_id), c.op, &c.value)
                    }
                    (Entity::Attribute, key) => {
                        matches_text(d.content[key].as_str(), c.op, &c.value)
                    }
                    (Entity::Tag, key) => {
                        let tag = &d.content["tags"][key];
                        let text = tag
                            .as_str()
                            .map(str::to_string)
                            .or_else(|| (!tag.is_null()).then(|| tag.to_string()));
                        matches_text(text.as_deref(), c.op, &c.value)
                    }
                    _ => false,
                })
            })
            .collect();
        all.sort_by(|(a, _), (b, _)| {
            for o in &order {
                let ord = match o.key.as_str() {
                    "name" => a.name.cmp(&b.name),
                    "last_update_time" => a.last_update_time.cmp(&b.last_update_time),
                    _ => a.created_time.cmp(&b.created_time),
                };
                let ord = if o.ascending { ord } else { ord.reverse() };
                if ord.is_ne() {
                    return ord;
                }
            }
            b.created_time
                .cmp(&a.created_time)
                .then_with(|| a.dataset_id.cmp(&b.dataset_id))
        });
        let total = all.len() as i64;
        let page: Vec<DatasetView> = all
            .into_iter()
            .skip(offset.max(0) as usize)
            .take(max_results as usize)
            .collect();
        let next = (offset + max_results < total).then_some(offset + max_results);
        Ok((page, next))
    }

    /// Adds records (each MLflow's record dict: `inputs`, `expectations`, `outputs`,
    /// `source`, `tags`); one whose inputs a record has already is merged into it. Returns
    /// (inserted, updated).
    pub async fn upsert_records(
        &self,
        p: &Principal,
        workspace: &str,
        id: &str,
        records: Vec<Json>,
    ) -> Result<(u64, u64)> {
        let ws = self.workspace(p, workspace, Action::Write).await?;
        let (mut dataset, _) = self.dataset(&ws, id).await?;
        let now = now_ms();
        let mut incoming: Vec<(String, Map<String, Json>)> = vec![];
        for (i, r) in records.into_iter().enumerate() {
            let Json::Object(r) = r else {
                return Err(invalid(format!("Record {i} is not a JSON object")));
            };
            let inputs = r.get("inputs").cloned().unwrap_or_else(|| json!({}));
            if !inputs.is_object() {
                return Err(invalid(format!("Record {i}: 'inputs' must be an object")));
            }
            let hash = sha256_hex(&sorted(&inputs).to_string());
            match incoming.iter_mut().find(|(h, _)| *h == hash) {
                // The same inputs twice in one call: the later one merges into the earlier.
                Some((_, earlier)) => merge(earlier, &r),
                None => incoming.push((hash, r)),
            }
        }
        let hashes: Vec<String> = incoming.iter().map(|(h, _)| h.clone()).collect();
        let existing = self.store.records_by_hash(&ws.id, id, &hashes).await?;
        let (mut inserted, mut updated) = (0usize, 0usize);
        let mut rows = vec![];
        let user =
            |r: &Map<String, Json>| r.get("tags").and_then(|t| t.get("mlflow.user")).cloned();
        for (hash, r) in incoming {
            if let Some(user) = user(&r) {
                dataset.content["last_updated_by"] = user;
            }
            match existing.iter().find(|e| e.input_hash == hash) {
                Some(e) => {
                    let mut row = e.clone();
                    if let Json::Object(content) = &mut row.content {
                        merge(content, &r);
                        content.insert("last_update_time".into(), json!(now));
                        if let Some(user) = user(&r) {
                            content.insert("last_updated_by".into(), user);
                        }
                    }
                    rows.push(row);
                    updated += 1;
                }
                None => {
                    let record_id = format!("dr-{}", uuid::Uuid::new_v4().simple());
                    rows.push(DatasetRecordRow {
                        content: new_record(&dataset.dataset_id, &record_id, r, now),
                        record_id,
                        input_hash: hash,
                        created_time: now,
                    });
                    inserted += 1;
                }
            }
        }
        dataset.last_update_time = now;
        dataset.content["digest"] = json!(digest(&dataset.name, now));
        Self::describe(&mut dataset, &rows, inserted);
        self.store.put_records(&dataset, &rows).await?;
        Ok((inserted as u64, updated as u64))
    }

    /// Brings the dataset's schema (the JSON types of its records' inputs, expectations and
    /// outputs) and profile (its record count) up to date with `changed` records.
    fn describe(dataset: &mut DatasetRow, changed: &[DatasetRecordRow], inserted: usize) {
        let mut schema: Map<String, Json> = dataset.content["schema"]
            .as_str()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        for r in changed {
            for part in ["inputs", "expectations", "outputs"] {
                if let Some(fields) = r.content.get(part).and_then(Json::as_object) {
                    let types = schema
                        .entry(part)
                        .or_insert_with(|| json!({}))
                        .as_object_mut();
                    if let Some(types) = types {
                        for (k, v) in fields {
                            types.insert(k.clone(), json!(type_name(v)));
                        }
                    }
                }
            }
        }
        dataset.content["schema"] = json!(Json::Object(schema).to_string());
        // The count it had, plus the new records (not every record read again to count them).
        dataset.set_record_count(dataset.record_count() + inserted as i64);
    }

    /// A page of records (MLflow's record JSON each) and the next page's offset.
    pub async fn records(
        &self,
        p: &Principal,
        workspace: &str,
        id: &str,
        max_results: Option<i64>,
        offset: i64,
    ) -> Result<(Vec<Json>, Option<i64>)> {
        let ws = self.workspace(p, workspace, Action::Read).await?;
        self.dataset(&ws, id).await?;
        let limit = max_results
            .unwrap_or(limits::RECORDS_PAGE)
            .clamp(1, limits::RECORDS_PAGE);
        let mut rows = self
            .store
            .dataset_records(&ws.id, id, offset, limit + 1)
            .await?;
        let next = (rows.len() as i64 > limit).then_some(offset + limit);
        rows.truncate(limit as usize);
        Ok((rows.into_iter().map(|r| r.content).collect(), next))
    }

    pub async fn delete_records(
        &self,
        p: &Principal,
        workspace: &str,
        id: &str,
        record_ids: &[String],
    ) -> Result<u64> {
        let ws = self.workspace(p, workspace, Action::Write).await?;
        let (mut dataset, _) = self.dataset(&ws, id).await?;
        let now = now_ms();
        dataset.last_update_time = now;
        dataset.content["digest"] = json!(digest(&dataset.name, now));
        // The store lowers the record count by what it deleted.
        self.store
            .delete_records(&dataset, record_ids)
            .await
            .map_err(Error::from)
    }

    /// Sets tags (merged over the dataset's), or deletes one with `delete`.
    pub async fn change_tags(
        &self,
        p: &Principal,
        workspace: &str,
        id: &str,
        set: Map<String, Json>,
        delete: Option<&str>,
    ) -> Result<()> {
        let ws = self.workspace(p, workspace, Action::Write).await?;
        let (mut dataset, _) = self.dataset(&ws, id).await?;
        let tags = dataset.content["tags"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let mut tags = tags;
        tags.extend(set);
        if let Some(key) = delete {
            tags.remove(key);
        }
        dataset.content["tags"] = Json::Object(tags);
        dataset.last_update_time = now_ms();
        self.store.put_dataset(&dataset, None, false).await?;
        Ok(())
    }

    /// Links the dataset to more experiments, or unlinks it from some.
    pub async fn change_experiments(
        &self,
        p: &Principal,
        workspace: &str,
        id: &str,
        experiment_ids: &[String],
        add: bool,
    ) -> Result<DatasetView> {
        let ws = self.workspace(p, workspace, Action::Write).await?;
        let (dataset, mut linked) = self.dataset(&ws, id).await?;
        let named = self.experiment_numbers(&ws, experiment_ids).await?;
        if add {
            linked.extend(named);
            linked.sort();
            linked.dedup();
        } else {
            linked.retain(|e| !named.contains(e));
        }
        self.store
            .put_dataset(&dataset, Some(&linked), false)
            .await?;
        Ok((dataset, linked))
    }
}

/// Merges a record sent again into the one kept: outputs replaced, expectations and tags
/// updated key by key (MLflow's rule).
fn merge(kept: &mut Map<String, Json>, new: &Map<String, Json>) {
    if let Some(outputs) = new.get("outputs") {
        kept.insert("outputs".into(), outputs.clone());
    }
    for part in ["expectations", "tags"] {
        if let Some(Json::Object(items)) = new.get(part) {
            let slot = kept.entry(part).or_insert_with(|| json!({}));
            if !slot.is_object() {
                *slot = json!({});
            }
            if let Some(slot) = slot.as_object_mut() {
                slot.extend(items.clone());
            }
        }
    }
}

/// A new record as MLflow's record JSON.
fn new_record(dataset_id: &str, record_id: &str, r: Map<String, Json>, now: i64) -> Json {
    let mut out = Map::new();
    out.insert("dataset_record_id".into(), json!(record_id));
    out.insert("dataset_id".into(), json!(dataset_id));
    out.insert(
        "inputs".into(),
        r.get("inputs").cloned().unwrap_or_else(|| json!({})),
    );
    for part in ["outputs", "expectations", "tags"] {
        if let Some(v) = r.get(part).filter(|v| !v.is_null()) {
            out.insert(part.into(), v.clone());
        }
    }
    if let Some(source) = r.get("source").filter(|s| s.is_object()) {
        out.insert("source".into(), source.clone());
        if let Some(t) = source.get("source_type") {
            out.insert("source_type".into(), t.clone());
        }
        let data = &source["source_data"];
        if let Some(id) = ["trace_id", "doc_uri", "source_id"]
            .iter()
            .find_map(|k| data.get(*k).filter(|v| v.is_string()))
        {
            out.insert("source_id".into(), id.clone());
        }
    }
    if let Some(user) = r.get("tags").and_then(|t| t.get("mlflow.user")) {
        out.insert("created_by".into(), user.clone());
        out.insert("last_updated_by".into(), user.clone());
    }
    out.insert("created_time".into(), json!(now));
    out.insert("last_update_time".into(), json!(now));
    Json::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_hash_alike_whatever_their_key_order() {
        let a = sha256_hex(&sorted(&json!({"b": 1, "a": {"y": 2, "x": 1}})).to_string());
        let b = sha256_hex(&sorted(&json!({"a": {"x": 1, "y": 2}, "b": 1})).to_string());
        assert_eq!(a, b);
    }

    #[test]
    fn a_record_sent_again_merges_expectations_and_replaces_outputs() {
        let mut kept =
            json!({"inputs": {"q": 1}, "outputs": "old", "expectations": {"a": 1, "b": 2}})
                .as_object()
                .cloned()
                .unwrap();
        let new = json!({"inputs": {"q": 1}, "outputs": "new", "expectations": {"b": 3}, "tags": {"t": "x"}});
        merge(&mut kept, new.as_object().unwrap());
        assert_eq!(
            Json::Object(kept),
            json!({"inputs": {"q": 1}, "outputs": "new", "expectations": {"a": 1, "b": 3}, "tags": {"t": "x"}})
        );
    }
}
