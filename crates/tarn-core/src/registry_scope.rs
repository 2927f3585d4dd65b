//! What a registry is as a place (see `registries.rs`): the workspace it is kept as
//! (`registry:<name>`), what may be reached there, its assets' paths pinned to it, and the
//! check that a caller may read every registry a document names. Kept apart from the
//! `Registries` service so that `resources` and `workspaces`, which it builds on, can ask.

use crate::Core;
use crate::authz::{Action, Principal, Target};
use crate::error::{Error, Result};
use serde_json::Value as Json;
use tarn_spec::Kind;
use tarn_spec::uri::{DataUri, StorePath};
use tarn_store::WorkspaceRow;

/// Registries' own workspaces are named `registry:<name>`.
pub const PREFIX: &str = "registry:";

/// The workspace a registry is kept as.
pub fn workspace_of(registry: &str) -> String {
    format!("{PREFIX}{registry}")
}

pub fn is_registry(workspace: &str) -> bool {
    workspace.starts_with(PREFIX)
}

/// A workspace's or registry's name as users write it.
pub fn shown_name(workspace: &str) -> &str {
    workspace.strip_prefix(PREFIX).unwrap_or(workspace)
}

/// What may be reached in a registry: its assets, their files (its datastores), itself and
/// its roles. Jobs, computes, endpoints, MLflow and the rest belong to workspaces.
pub(crate) fn registry_allows(target: Target) -> bool {
    match target {
        Target::Workspace | Target::RoleAssignments => true,
        Target::Resource(kind) => kind.is_asset() || kind == Kind::Datastore,
    }
}

/// The path a datastore URI of a registry's has when stored there: the long form, naming
/// the registry's workspace, which resolves there from any workspace.
fn long_form(registry_ws: &str, datastore: &str, path: &StorePath) -> String {
    format!(
        "azureml://subscriptions/tarn/resourcegroups/tarn/workspaces/{registry_ws}/datastores/{datastore}/paths/{}",
        path.as_str()
    )
}

/// Rewrites the short datastore URIs at a registry asset's path fields (a model's or data's
/// `path`, a component's `code`, at any depth) to the long form naming the registry.
pub(crate) fn pin_paths(kind: Kind, registry_ws: &str, spec: &mut Json) {
    for slot in tarn_spec::schema::path_slots(tarn_spec::schema(kind), spec) {
        if let Ok(DataUri::Datastore {
            workspace: None,
            datastore,
            path,
        }) = tarn_spec::uri::parse(&slot.value)
            && let Some(at) = spec.pointer_mut(&slot.pointer)
        {
            *at = Json::String(long_form(registry_ws, &datastore, &path));
        }
    }
}

/// The registries a document names: `azureml://registries/<r>/<collection>/…` references and
/// long-form datastore URIs of registries' workspaces (not the curated `azureml` one), with
/// the kind of asset each reads.
fn named_registries(v: &Json, out: &mut Vec<(String, Kind)>) {
    match v {
        Json::String(s) => {
            if let Some(rest) = s.strip_prefix("azureml://registries/") {
                let mut parts = rest.split('/');
                let registry = parts.next().unwrap_or_default();
                let kind = parts
                    .next()
                    .and_then(Kind::from_collection)
                    .filter(|k| k.is_asset())
                    .unwrap_or(Kind::Model);
                if registry != "azureml" && !registry.is_empty() {
                    out.push((registry.to_string(), kind));
                }
            } else if let Some((_, rest)) = s.split_once(&format!("/workspaces/{PREFIX}")) {
                let registry = rest.split('/').next().unwrap_or_default();
                out.push((registry.to_string(), Kind::Datastore));
            }
        }
        Json::Array(items) => items.iter().for_each(|x| named_registries(x, out)),
        Json::Object(map) => map.values().for_each(|x| named_registries(x, out)),
        _ => {}
    }
}

impl Core {
    /// A registry the caller may act on so, or "no registry" (as for workspaces, one the
    /// caller has no role in does not exist as far as they can tell).
    pub(crate) async fn registry(
        &self,
        p: &Principal,
        name: &str,
        target: Target,
        action: Action,
    ) -> Result<WorkspaceRow> {
        self.authorized_workspace(p, &workspace_of(name), target, action)
            .await
            .map_err(|e| match e {
                Error::NotFound { .. } => Error::not_found(format!("registry {name:?}")),
                e => e,
            })
    }

    /// Refuses a document that names a registry asset the caller may not read (by its
    /// `azureml://registries/…` reference or a path in the registry's storage).
    pub(crate) async fn check_registry_references(&self, p: &Principal, spec: &Json) -> Result<()> {
        let mut named = vec![];
        named_registries(spec, &mut named);
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named.dedup_by(|a, b| a.0 == b.0);
        for (registry, kind) in named {
            self.registry(p, &registry, Target::Resource(kind), Action::Read)
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn registry_references_are_found_in_either_form() {
        let spec = json!({
            "environment": "azureml://registries/azureml/environments/sklearn-1.5/labels/latest",
            "model": "azureml://registries/shared/models/churn/versions/1",
            "jobs": {"a": {"component": "azureml://registries/team/components/prep/labels/latest"}},
            "inputs": {"d": {"path": "azureml://subscriptions/tarn/resourcegroups/tarn/workspaces/registry:other/datastores/workspaceblobstore/paths/x"}},
        });
        let mut found = vec![];
        named_registries(&spec, &mut found);
        found.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            found,
            vec![
                ("other".into(), Kind::Datastore),
                ("shared".into(), Kind::Model),
                ("team".into(), Kind::Component),
            ]
        );
    }

    #[test]
    fn registry_paths_are_pinned_to_the_registry() {
        let mut spec = json!({"name": "m", "version": "1", "type": "custom_model",
            "path": "azureml://datastores/workspaceblobstore/paths/LocalUpload/abc/model/"});
        pin_paths(Kind::Model, "registry:shared", &mut spec);
        assert_eq!(
            spec["path"],
            "azureml://subscriptions/tarn/resourcegroups/tarn/workspaces/registry:shared/datastores/workspaceblobstore/paths/LocalUpload/abc/model/"
        );
        match tarn_spec::uri::parse(spec["path"].as_str().unwrap()).unwrap() {
            DataUri::Datastore { workspace, .. } => {
                assert_eq!(workspace.as_deref(), Some("registry:shared"))
            }
            other => panic!("{other:?}"),
        }
    }
}
