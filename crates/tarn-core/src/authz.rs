//! The one authorization policy: which built-in role may do what, with Azure ML's meanings.
//! Every service function calls [`check`] before touching anything.

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
    Operate,
}

/// Whether `role` may perform `action` on `target`.
pub fn allows(role: Role, target: Target, action: Action) -> bool {
    match role {
        Role::Owner => true,
        Role::Contributor => target != Target::RoleAssignments || action == Action::Read,
        Role::Reader => action == Action::Read,
        // Everything except changing the workspace itself, creating or deleting compute, and
        // managing access.
        Role::DataScientist => match (target, action) {
            (Target::Workspace, Action::Read) => true,
            (Target::Workspace, _) => false,
            (Target::RoleAssignments, action) => action == Action::Read,
            (Target::Resource(Kind::Compute), Action::Write | Action::Delete) => false,
            (Target::Resource(_), _) => true,
        },
        Role::ComputeOperator => matches!(target, Target::Resource(Kind::Compute)),
    }
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
pub fn check(
    principal: &Principal,
    role: Option<Role>,
    workspace: &str,
    target: Target,
    action: Action,
) -> Result<()> {
    if principal.is_admin {
        return Ok(());
    }
    let Some(role) = role else {
        // No role at all: the workspace does not exist as far as this caller can tell.
        return Err(Error::not_found(format!("workspace {workspace:?}")));
    };
    let (role, whose) = match &principal.limit {
        Some(limit) if !allows(limit.role, target, action) => (limit.role, "a token limited to"),
        _ if allows(role, target, action) => return Ok(()),
        _ => (role, "role"),
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
        Action::Operate => "start or stop",
    };
    Err(Error::Forbidden(format!(
        "user {:?} has {whose} {} in workspace {workspace:?}, which may not {verb} {what}",
        principal.name,
        role.as_str()
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
            (Role::ComputeOperator, compute, Operate, true),
            (Role::DataScientist, compute, Operate, true),
            (Role::Reader, compute, Operate, false),
            (Role::ComputeOperator, model, Read, false),
            (Role::ComputeOperator, Target::Workspace, Read, false),
            (Role::Contributor, Target::Workspace, Delete, true),
            (Role::Contributor, Target::RoleAssignments, Write, false),
            (Role::Owner, Target::RoleAssignments, Write, true),
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
