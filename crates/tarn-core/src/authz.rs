//! The one authorization policy, in Azure's form: every check is an action
//! (`Microsoft.MachineLearningServices/workspaces/computes/write`, …) that a role definition's
//! `Actions` allow and its `NotActions` do not take back. The five built-in roles are
//! definitions like any custom role (`tarn role create -f role.yml`), with Azure ML's
//! meanings. Every service function calls [`check`] before touching anything.

use crate::error::{Error, Result};
use tarn_spec::Kind;

/// The built-in workspace roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Owner,
    Contributor,
    Reader,
    DataScientist,
    ComputeOperator,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Owner,
        Role::Contributor,
        Role::Reader,
        Role::DataScientist,
        Role::ComputeOperator,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "Owner",
            Role::Contributor => "Contributor",
            Role::Reader => "Reader",
            Role::DataScientist => "Data Scientist",
            Role::ComputeOperator => "Compute Operator",
        }
    }

    /// Accepts "Data Scientist", "data-scientist", "AzureML Data Scientist", "datascientist".
    pub fn parse(text: &str) -> Option<Role> {
        let squash = |s: &str| {
            s.to_ascii_lowercase()
                .replace("azureml", "")
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .collect::<String>()
        };
        let wanted = squash(text);
        Role::ALL.into_iter().find(|r| squash(r.as_str()) == wanted)
    }

    /// The role's definition, as Azure writes its built-in roles.
    pub fn definition(self) -> RoleDefinition {
        const ML: &str = "Microsoft.MachineLearningServices/workspaces";
        let list = |items: &[&str]| items.iter().map(|i| i.replace("{ML}", ML)).collect();
        let (description, actions, not_actions): (&str, Vec<String>, Vec<String>) = match self {
            Role::Owner => (
                "Everything, including role assignments.",
                list(&["*"]),
                vec![],
            ),
            Role::Contributor => (
                "Everything but role assignments.",
                list(&["*"]),
                list(&[
                    "Microsoft.Authorization/*/write",
                    "Microsoft.Authorization/*/delete",
                ]),
            ),
            Role::Reader => (
                "Read everything; change nothing.",
                list(&["*/read"]),
                vec![],
            ),
            Role::DataScientist => (
                "Everything in a workspace except changing the workspace itself, creating or \
                 deleting compute, and managing access.",
                list(&[
                    "{ML}/*/read",
                    "{ML}/*/action",
                    "{ML}/*/write",
                    "{ML}/*/delete",
                    "Microsoft.Authorization/*/read",
                ]),
                list(&[
                    "{ML}/write",
                    "{ML}/delete",
                    "{ML}/computes/*/write",
                    "{ML}/computes/*/delete",
                ]),
            ),
            Role::ComputeOperator => (
                "Create, manage and operate compute; nothing else.",
                list(&["{ML}/computes/*"]),
                vec![],
            ),
        };
        RoleDefinition {
            name: self.as_str().to_string(),
            description: description.to_string(),
            actions,
            not_actions,
            custom: false,
        }
    }
}

/// A role: the actions it allows (`*` matches any text), less those its `not_actions` take
/// back; matched without regard to case, as Azure does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleDefinition {
    pub name: String,
    pub description: String,
    pub actions: Vec<String>,
    pub not_actions: Vec<String>,
    pub custom: bool,
}

impl RoleDefinition {
    pub fn allows(&self, action: &str) -> bool {
        let any = |patterns: &[String]| patterns.iter().any(|p| wildcard_match(p, action));
        any(&self.actions) && !any(&self.not_actions)
    }
}

/// Whether `action` matches `pattern`, ignoring case: `*` is any text (slashes too), and a
/// `/*/` segment may also be empty — which is why Azure's Data Scientist, allowed
/// `workspaces/*/write`, must be denied `workspaces/write` in its `NotActions`.
pub fn wildcard_match(pattern: &str, action: &str) -> bool {
    let action = action.to_ascii_lowercase();
    variants(&pattern.to_ascii_lowercase())
        .iter()
        .any(|p| glob(p, &action))
}

/// The pattern with each `/*/` either kept or made `/`.
fn variants(p: &str) -> Vec<String> {
    match p.find("/*/") {
        None => vec![p.to_string()],
        Some(at) => {
            let head = &p[..at];
            variants(&p[at + 3..])
                .into_iter()
                .flat_map(|tail| [format!("{head}/*/{tail}"), format!("{head}/{tail}")])
                .collect()
        }
    }
}

/// `*` as any text, on lower-cased text.
fn glob(p: &str, a: &str) -> bool {
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return p == a;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !a.starts_with(first) || a.len() < first.len() + last.len() || !a.ends_with(last) {
        return false;
    }
    let mut rest = &a[first.len()..a.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

/// What is being acted on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Workspace,
    /// Users' role assignments in the workspace.
    RoleAssignments,
    Resource(Kind),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Read,
    Write,
    Delete,
    /// Read stored secrets (datastore credentials, endpoint keys): Azure's `listsecrets`.
    ListSecrets,
    /// Start, stop or restart a compute instance (Azure's `computes/start/action` …): what
    /// Data Scientists and Compute Operators may do to computes they may not create.
    Operate(&'static str),
}

/// Azure's name of an action on a target, which role definitions match.
pub fn action_name(target: Target, action: Action) -> String {
    const ML: &str = "Microsoft.MachineLearningServices/workspaces";
    let base = match target {
        Target::Workspace => ML.to_string(),
        Target::RoleAssignments => "Microsoft.Authorization/roleAssignments".to_string(),
        Target::Resource(kind) => format!("{ML}/{}", azure_collection(kind)),
    };
    let verb = match action {
        Action::Read => "read".to_string(),
        Action::Write => "write".to_string(),
        Action::Delete => "delete".to_string(),
        Action::ListSecrets => match target {
            Target::Resource(Kind::OnlineEndpoint | Kind::BatchEndpoint) => "listkeys/action",
            _ => "listsecrets/action",
        }
        .to_string(),
        Action::Operate(verb) => format!("{verb}/action"),
    };
    format!("{base}/{verb}")
}

/// A kind's collection in Azure's action names.
fn azure_collection(kind: Kind) -> &'static str {
    match kind {
        Kind::Workspace => "workspaces",
        Kind::Compute => "computes",
        Kind::Datastore => "datastores",
        Kind::Data => "data",
        Kind::Environment => "environments",
        Kind::Component => "components",
        Kind::Model => "models",
        Kind::Job => "jobs",
        Kind::OnlineEndpoint => "onlineEndpoints",
        Kind::OnlineDeployment => "onlineEndpoints/deployments",
        Kind::BatchEndpoint => "batchEndpoints",
        Kind::BatchDeployment => "batchEndpoints/deployments",
        Kind::Schedule => "schedules",
        Kind::Connection => "connections",
        Kind::Registry => "registries",
    }
}

/// Every action Tarn checks (what a custom role's patterns are checked against).
pub fn all_actions() -> Vec<String> {
    let mut targets = vec![Target::Workspace, Target::RoleAssignments];
    targets.extend(
        Kind::ALL
            .into_iter()
            .filter(|k| *k != Kind::Workspace)
            .map(Target::Resource),
    );
    let mut out = vec![];
    for target in targets {
        for action in [
            Action::Read,
            Action::Write,
            Action::Delete,
            Action::ListSecrets,
            Action::Operate("start"),
            Action::Operate("stop"),
            Action::Operate("restart"),
        ] {
            out.push(action_name(target, action));
        }
    }
    out
}

/// Whether built-in `role` may perform `action` on `target`.
pub fn allows(role: Role, target: Target, action: Action) -> bool {
    role.definition().allows(&action_name(target, action))
}

/// Who is calling.
#[derive(Clone, Debug)]
pub struct Principal {
    pub user_id: String,
    pub name: String,
    /// Administrators manage users and workspaces and act as Owner everywhere.
    pub is_admin: bool,
    /// Set for a job's runner token: it acts as Data Scientist in that job's workspace only
    /// (whoever submitted the job), and only it may report the job's status.
    pub job: Option<JobScope>,
    /// Set for a token narrowed to one workspace and role (`tarn token create --workspace W
    /// --role R`): it acts there only, and only as far as both its user's role and R allow.
    pub limit: Option<TokenLimit>,
    /// The groups the user's last single sign-on claimed (roles may be given to groups).
    pub groups: Vec<String>,
    /// The token the call came with (empty for Tarn's own calls): what an endpoint token
    /// fetched with it is bound to.
    pub token_id: String,
    /// `user`, `service_principal`, or `job` for a runner's (or instance's, or replica's)
    /// token: how the audit log tells them apart.
    pub kind: String,
}

impl Principal {
    /// Tarn itself, acting as an administrator for a background task named `name` (the
    /// scheduled backups).
    pub fn system(name: &str) -> Principal {
        Principal {
            user_id: String::new(),
            name: format!("tarn:{name}"),
            is_admin: true,
            job: None,
            limit: None,
            groups: vec![],
            token_id: String::new(),
            kind: "system".into(),
        }
    }
}

/// What a narrowed token may do: act in one workspace, within one role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenLimit {
    pub workspace_id: String,
    pub role: Role,
    /// Its user is an administrator (who is Owner everywhere without an assignment).
    pub user_is_admin: bool,
}

impl TokenLimit {
    /// The token scope string stored with the token.
    pub fn token_scope(workspace_id: &str, role: Role) -> String {
        format!("ws:{workspace_id}:{}", role.as_str())
    }

    pub fn parse(scope: &str, user_is_admin: bool) -> Option<TokenLimit> {
        let (workspace_id, role) = scope.strip_prefix("ws:")?.split_once(':')?;
        Some(TokenLimit {
            workspace_id: workspace_id.to_string(),
            role: Role::parse(role)?,
            user_is_admin,
        })
    }
}

/// The job a runner token belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobScope {
    pub workspace_id: String,
    pub job: String,
}

impl JobScope {
    /// The token scope string stored with the token.
    pub fn token_scope(&self) -> String {
        format!("job:{}:{}", self.workspace_id, self.job)
    }

    pub fn parse(scope: &str) -> Option<JobScope> {
        let (workspace_id, job) = scope.strip_prefix("job:")?.split_once(':')?;
        Some(JobScope {
            workspace_id: workspace_id.to_string(),
            job: job.to_string(),
        })
    }
}

/// The role a job token has in its own workspace.
pub const JOB_TOKEN_ROLE: Role = Role::DataScientist;

/// Fails with a message naming the role (the user's, or the token's it is narrowed to) and
/// what it lacks.
/// `roles` are those the caller has in the workspace (their own, their groups'): any of them
/// may allow the action.
pub fn check(
    principal: &Principal,
    roles: &[RoleDefinition],
    workspace: &str,
    target: Target,
    action: Action,
) -> Result<()> {
    if principal.is_admin {
        return Ok(());
    }
    if roles.is_empty() {
        // No role at all: the workspace does not exist as far as this caller can tell.
        return Err(Error::not_found(format!("workspace {workspace:?}")));
    }
    let name = action_name(target, action);
    let (role, whose) = match &principal.limit {
        Some(limit) if !limit.role.definition().allows(&name) => {
            (limit.role.as_str().to_string(), "a token limited to")
        }
        _ if roles.iter().any(|r| r.allows(&name)) => return Ok(()),
        _ => (
            roles
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(" and "),
            if roles.len() == 1 { "role" } else { "roles" },
        ),
    };
    let what = match target {
        Target::Workspace => "the workspace".to_string(),
        Target::RoleAssignments => "role assignments".to_string(),
        Target::Resource(kind) => format!("{}s", kind.noun()),
    };
    let verb = match action {
        Action::Read => "read",
        Action::Write => "create or change",
        Action::Delete => "delete",
        Action::ListSecrets => "read the secrets of",
        Action::Operate(_) => "start or stop",
    };
    Err(Error::Forbidden(format!(
        "user {:?} has {whose} {role} in workspace {workspace:?}, which may not {verb} {what} ({name})",
        principal.name,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_have_azure_meanings() {
        use Action::*;
        let compute = Target::Resource(Kind::Compute);
        let model = Target::Resource(Kind::Model);
        let store = Target::Resource(Kind::Datastore);
        let cases: &[(Role, Target, Action, bool)] = &[
            (Role::Reader, model, Read, true),
            (Role::Reader, model, Write, false),
            (Role::Reader, store, ListSecrets, false),
            (Role::DataScientist, model, Write, true),
            (Role::DataScientist, store, ListSecrets, true),
            (Role::DataScientist, compute, Read, true),
            (Role::DataScientist, compute, Write, false),
            (Role::DataScientist, compute, Delete, false),
            (Role::DataScientist, Target::Workspace, Write, false),
            (Role::DataScientist, Target::Workspace, Delete, false),
            (Role::ComputeOperator, compute, Write, true),
            (Role::ComputeOperator, compute, Delete, true),
            (Role::ComputeOperator, compute, Operate("start"), true),
            (Role::DataScientist, compute, Operate("stop"), true),
            (Role::Reader, compute, Operate("restart"), false),
            (Role::ComputeOperator, model, Read, false),
            (Role::ComputeOperator, Target::Workspace, Read, false),
            (Role::Contributor, Target::Workspace, Delete, true),
            (Role::Contributor, Target::RoleAssignments, Write, false),
            (Role::Owner, Target::RoleAssignments, Write, true),
            (Role::DataScientist, Target::RoleAssignments, Read, true),
            (Role::DataScientist, Target::RoleAssignments, Write, false),
            (Role::DataScientist, Target::Workspace, Read, true),
            (Role::ComputeOperator, compute, ListSecrets, true),
            (Role::ComputeOperator, store, ListSecrets, false),
            (Role::Reader, Target::RoleAssignments, Read, true),
        ];
        for (role, target, action, expected) in cases {
            assert_eq!(
                allows(*role, *target, *action),
                *expected,
                "{role:?} {target:?} {action:?}"
            );
        }
    }

    #[test]
    fn actions_match_azure_wildcards() {
        assert!(wildcard_match("*", "anything/at/all"));
        assert!(wildcard_match(
            "Microsoft.MachineLearningServices/workspaces/*/read",
            "microsoft.machinelearningservices/workspaces/computes/read"
        ));
        assert!(wildcard_match(
            "Microsoft.MachineLearningServices/workspaces/*/read",
            "Microsoft.MachineLearningServices/workspaces/read"
        ));
        assert!(!wildcard_match(
            "Microsoft.MachineLearningServices/workspaces/*/read",
            "Microsoft.MachineLearningServices/workspacesread"
        ));
        assert!(wildcard_match("a/*/*/b", "a/x/y/b"));
        assert!(wildcard_match(
            "*/read",
            "Microsoft.Authorization/roleAssignments/read"
        ));
        assert!(wildcard_match("a*b*c", "a-b-c"));
        assert!(!wildcard_match("a*b*c", "a-c-b"));
        assert!(!wildcard_match("ab*ba", "aba"));
        assert_eq!(
            action_name(Target::Resource(Kind::Compute), Action::Operate("start")),
            "Microsoft.MachineLearningServices/workspaces/computes/start/action"
        );
        assert_eq!(
            action_name(Target::Resource(Kind::Datastore), Action::ListSecrets),
            "Microsoft.MachineLearningServices/workspaces/datastores/listsecrets/action"
        );
    }

    #[test]
    fn role_names_parse_loosely() {
        assert_eq!(Role::parse("Data Scientist"), Some(Role::DataScientist));
        assert_eq!(
            Role::parse("AzureML Data Scientist"),
            Some(Role::DataScientist)
        );
        assert_eq!(Role::parse("compute-operator"), Some(Role::ComputeOperator));
        assert_eq!(Role::parse("owner"), Some(Role::Owner));
        assert_eq!(Role::parse("janitor"), None);
    }
}
