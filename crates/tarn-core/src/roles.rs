//! Role definitions: the five built-in roles and the custom roles administrators add
//! (`tarn role create -f role.yml`) in Azure's role-definition form — `Name`, `Description`,
//! `Actions`, `NotActions` (JSON as `az role definition create` takes it, or the same in YAML,
//! in any case, `not_actions` too). A workspace's role assignments name either; the one
//! policy (`authz`) matches both the same way.

use crate::authz::{Principal, Role, RoleDefinition};
use crate::error::{Error, Result};
use crate::users::{Users, admin_only};
use crate::{Core, now_ms};
use serde_json::{Value as Json, json};
use tarn_spec::Diagnostic;
use tarn_spec::names::{self, NameRule};
use tarn_store::StoreError;

impl Core {
    /// The role named `name`: built-in (named loosely, "data-scientist"), else custom.
    pub(crate) async fn role_definition(&self, name: &str) -> Result<Option<RoleDefinition>> {
        if let Some(role) = Role::parse(name) {
            return Ok(Some(role.definition()));
        }
        match self.store.get_role_definition(name).await? {
            Some(text) => Ok(Some(from_stored(name, &text)?)),
            None => Ok(None),
        }
    }

    /// The role named `name`, or an error listing the roles there are.
    pub(crate) async fn known_role(&self, name: &str) -> Result<RoleDefinition> {
        if let Some(role) = self.role_definition(name).await? {
            return Ok(role);
        }
        let mut known: Vec<String> = Role::ALL.iter().map(|r| r.as_str().to_string()).collect();
        known.extend(
            self.store
                .list_role_definitions()
                .await?
                .into_iter()
                .map(|(n, _)| n),
        );
        Err(Error::invalid(
            "role",
            format!("unknown role {name:?}: use one of {}", known.join(", ")),
        ))
    }
}

fn from_stored(name: &str, text: &str) -> Result<RoleDefinition> {
    let v: Json = serde_json::from_str(text).map_err(|e| Error::Store(StoreError::Corrupt(e)))?;
    let list = |k: &str| -> Vec<String> {
        v[k].as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect()
    };
    Ok(RoleDefinition {
        name: name.to_string(),
        description: v["description"].as_str().unwrap_or_default().to_string(),
        actions: list("actions"),
        not_actions: list("not_actions"),
        custom: true,
    })
}

/// A definition's fields by their key without case or underscores (`NotActions`,
/// `not_actions`, `notActions` alike).
fn squash(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_')
        .collect::<String>()
        .to_ascii_lowercase()
}

/// Reads a role definition; warnings for what Tarn does not use.
fn parse(spec: &Json) -> Result<(RoleDefinition, Vec<Diagnostic>)> {
    let obj = spec
        .as_object()
        .ok_or_else(|| Error::invalid("", "a role definition is a mapping (Name, Actions, …)"))?;
    let mut name = None;
    let mut description = String::new();
    let (mut actions, mut not_actions) = (None, Vec::new());
    // Findings name the fields as the file spells them.
    let (mut actions_key, mut not_actions_key) = ("Actions".to_string(), "NotActions".to_string());
    let mut warnings = vec![];
    let strings = |field: &str, v: &Json| -> Result<Vec<String>> {
        let items = v
            .as_array()
            .ok_or_else(|| Error::invalid(field, "must be a list of action strings"))?;
        items
            .iter()
            .enumerate()
            .map(|(i, a)| {
                a.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| Error::invalid(&format!("{field}[{i}]"), "must be a string"))
            })
            .collect()
    };
    for (key, v) in obj {
        match squash(key).as_str() {
            "name" | "rolename" => {
                name = Some(
                    v.as_str()
                        .ok_or_else(|| Error::invalid(key, "must be a string"))?
                        .to_string(),
                )
            }
            "description" => description = v.as_str().unwrap_or_default().to_string(),
            "actions" => {
                actions = Some(strings(key, v)?);
                actions_key = key.clone();
            }
            "notactions" => {
                not_actions = strings(key, v)?;
                not_actions_key = key.clone();
            }
            // Kept by Azure, meaningless here: a Tarn server is one scope.
            "iscustom" | "id" | "assignablescopes" | "roletype" | "$schema" => {}
            "dataactions" | "notdataactions" => {
                if !strings(key, v)?.is_empty() {
                    warnings.push(Diagnostic::warning(
                        key,
                        None,
                        "Tarn has no data actions: ignored",
                    ));
                }
            }
            _ => {
                return Err(Error::invalid(
                    key,
                    "unknown field: a role definition has Name, Description, Actions, NotActions \
                     (and Azure's IsCustom, AssignableScopes, DataActions, NotDataActions)",
                ));
            }
        }
    }
    let name = name.ok_or_else(|| Error::invalid("Name", "required"))?;
    names::check(NameRule::Role, &name).map_err(|e| Error::invalid("Name", e.to_string()))?;
    if let Some(builtin) = Role::parse(&name) {
        return Err(Error::invalid(
            "Name",
            format!("{name:?} is the built-in role {:?}", builtin.as_str()),
        ));
    }
    let actions = actions.ok_or_else(|| Error::invalid("Actions", "required"))?;
    if actions.is_empty() {
        return Err(Error::invalid(
            "Actions",
            "a role allows at least one action",
        ));
    }
    // A pattern no action Tarn checks matches is most likely a typo (or an Azure action Tarn
    // has no counterpart for): said, not refused, so Azure's own files load.
    let known = crate::authz::all_actions();
    for (field, list) in [(&actions_key, &actions), (&not_actions_key, &not_actions)] {
        for (i, pattern) in list.iter().enumerate() {
            if !known
                .iter()
                .any(|a| crate::authz::wildcard_match(pattern, a))
            {
                warnings.push(Diagnostic::warning(
                    &format!("{field}[{i}]"),
                    None,
                    format!("{pattern:?} matches no action Tarn checks"),
                ));
            }
        }
    }
    Ok((
        RoleDefinition {
            name,
            description,
            actions,
            not_actions,
            custom: true,
        },
        warnings,
    ))
}

impl Users {
    /// Adds a custom role (administrators only).
    pub async fn create_role(
        &self,
        p: &Principal,
        spec: &Json,
    ) -> Result<(RoleDefinition, Vec<Diagnostic>)> {
        admin_only(p, "define roles")?;
        let (role, warnings) = parse(spec)?;
        let stored = json!({
            "description": role.description,
            "actions": role.actions,
            "not_actions": role.not_actions,
        });
        self.store
            .create_role_definition(&role.name, &stored.to_string(), now_ms())
            .await
            .map_err(|e| match e {
                StoreError::Conflict => Error::AlreadyExists {
                    what: format!("role {:?}", role.name),
                },
                e => e.into(),
            })?;
        Ok((role, warnings))
    }

    /// The built-in roles, then the custom ones.
    pub async fn list_role_definitions(&self, p: &Principal) -> Result<Vec<RoleDefinition>> {
        if p.job.is_some() {
            return Err(Error::Forbidden("a job's token cannot list roles".into()));
        }
        let mut out: Vec<RoleDefinition> = Role::ALL.iter().map(|r| r.definition()).collect();
        for (name, text) in self.store.list_role_definitions().await? {
            out.push(from_stored(&name, &text)?);
        }
        Ok(out)
    }

    pub async fn show_role(&self, _p: &Principal, name: &str) -> Result<RoleDefinition> {
        self.role_definition(name)
            .await?
            .ok_or_else(|| Error::not_found(format!("role {name:?}")))
    }

    /// Removes a custom role that no workspace assigns (administrators only).
    pub async fn delete_role(&self, p: &Principal, name: &str) -> Result<()> {
        admin_only(p, "delete roles")?;
        if Role::parse(name).is_some() {
            return Err(Error::invalid(
                "name",
                format!("{name:?} is a built-in role"),
            ));
        }
        if self.store.role_in_use(name).await? {
            return Err(Error::Conflict(format!(
                "role {name:?} is assigned in a workspace: take those assignments away first"
            )));
        }
        if !self.store.delete_role_definition(name).await? {
            return Err(Error::not_found(format!("role {name:?}")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_role_definitions_parse_with_warnings_for_what_tarn_lacks() {
        let spec = json!({
            "Name": "Data Scientist Custom",
            "IsCustom": true,
            "Description": "Can run experiments but can't create or delete compute.",
            "Actions": ["*"],
            "NotActions": [
                "Microsoft.MachineLearningServices/workspaces/*/delete",
                "Microsoft.MachineLearningServices/workspaces/write",
                "Microsoft.MachineLearningServices/workspaces/computes/*/write",
                "Microsoft.MachineLearningServices/workspaces/hubs/write",
                "Microsoft.Authorization/*/write"
            ],
            "AssignableScopes": ["/subscriptions/x/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w"]
        });
        let (role, warnings) = parse(&spec).unwrap();
        assert_eq!(role.name, "Data Scientist Custom");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].path, "NotActions[3]");
        assert!(role.allows("Microsoft.MachineLearningServices/workspaces/jobs/write"));
        assert!(!role.allows("Microsoft.MachineLearningServices/workspaces/jobs/delete"));
        assert!(!role.allows("Microsoft.MachineLearningServices/workspaces/computes/write"));
        assert!(role.allows("Microsoft.MachineLearningServices/workspaces/computes/start/action"));
        let snake = json!({"name": "ops", "actions": ["*/read"], "not_actions": []});
        assert!(parse(&snake).is_ok());
        for (bad, field) in [
            (json!({"Actions": ["*"]}), "Name"),
            (json!({"Name": "Reader", "Actions": ["*"]}), "Name"),
            (json!({"Name": "x", "Actions": []}), "Actions"),
            (json!({"Name": "x", "Actions": [3]}), "Actions[0]"),
            (
                json!({"Name": "x", "Actions": ["*"], "Colour": "red"}),
                "Colour",
            ),
            (json!({"Name": "../x", "Actions": ["*"]}), "Name"),
        ] {
            match parse(&bad) {
                Err(Error::Invalid(d)) => assert_eq!(d[0].path, field, "{bad}"),
                other => panic!("{bad}: {:?}", other.map(|r| r.0.name)),
            }
        }
    }

    #[test]
    fn built_in_roles_are_definitions_in_the_same_form() {
        for role in Role::ALL {
            let d = role.definition();
            assert!(!d.actions.is_empty() && !d.custom, "{role:?}");
        }
    }
}
