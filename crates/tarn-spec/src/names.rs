//! The one set of naming rules. Every name a user gives (workspace, compute, asset, version,
//! user…) is checked here before it reaches the store, a path on disk or a URL; the rules only
//! admit characters that cannot form a path separator or `..`, so a checked name is also safe
//! as a single path segment.

use std::fmt;

/// Which rule a name follows. The rules follow Azure ML's where it has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    Workspace,
    Compute,
    Datastore,
    /// Data, environments and models.
    Asset,
    Component,
    Job,
    /// Schedules: a job's rule, shorter, since the jobs they fire are named after them.
    Schedule,
    /// Workspace connections.
    Connection,
    /// Online and batch endpoints.
    Endpoint,
    /// Online and batch deployments.
    Deployment,
    Version,
    User,
    /// Custom role definitions (Azure's allow spaces: "Data Scientist Custom").
    Role,
}

struct Rule {
    min: usize,
    max: usize,
    first: fn(char) -> bool,
    rest: fn(char) -> bool,
    last: fn(char) -> bool,
    describe: &'static str,
}

fn alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}
fn alpha(c: char) -> bool {
    c.is_ascii_alphabetic()
}
fn any(_: char) -> bool {
    true
}

impl NameRule {
    fn rule(self) -> Rule {
        match self {
            NameRule::Workspace => Rule {
                min: 3,
                max: 33,
                first: alnum,
                rest: |c| alnum(c) || c == '-' || c == '_',
                last: any,
                describe: "3-33 letters, digits, '-' or '_', starting with a letter or digit",
            },
            NameRule::Compute => Rule {
                min: 2,
                max: 24,
                first: alpha,
                rest: |c| alnum(c) || c == '-',
                last: alnum,
                describe: "2-24 letters, digits or '-', starting with a letter and not ending with '-'",
            },
            NameRule::Datastore => Rule {
                min: 1,
                max: 255,
                first: |c| alnum(c) || c == '_',
                rest: |c| alnum(c) || c == '_',
                last: any,
                describe: "1-255 letters, digits or '_'",
            },
            NameRule::Asset => Rule {
                min: 1,
                max: 255,
                first: |c| alnum(c) || c == '_',
                rest: |c| alnum(c) || matches!(c, '-' | '_' | '.'),
                last: |c| c != '.',
                describe: "1-255 letters, digits, '-', '_' or '.', starting with a letter, digit or '_'",
            },
            NameRule::Component => Rule {
                min: 1,
                max: 255,
                first: |c| c.is_ascii_lowercase() || c == '_',
                rest: |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_',
                last: any,
                describe: "1-255 lowercase letters, digits or '_', starting with a letter or '_'",
            },
            NameRule::Job => Rule {
                min: 1,
                max: 255,
                first: alnum,
                rest: |c| alnum(c) || c == '-' || c == '_',
                last: any,
                describe: "1-255 letters, digits, '-' or '_', starting with a letter or digit",
            },
            NameRule::Schedule => Rule {
                min: 1,
                max: 200,
                first: alnum,
                rest: |c| alnum(c) || c == '-' || c == '_',
                last: any,
                describe: "1-200 letters, digits, '-' or '_', starting with a letter or digit",
            },
            NameRule::Connection => Rule {
                min: 1,
                max: 128,
                first: alnum,
                rest: |c| alnum(c) || c == '-' || c == '_',
                last: any,
                describe: "1-128 letters, digits, '-' or '_', starting with a letter or digit",
            },
            NameRule::Endpoint | NameRule::Deployment => Rule {
                min: 3,
                max: 32,
                first: alpha,
                rest: |c| alnum(c) || c == '-',
                last: alnum,
                describe: "3-32 letters, digits or '-', starting with a letter and ending with a letter or digit",
            },
            NameRule::Version => Rule {
                min: 1,
                max: 128,
                first: alnum,
                rest: |c| alnum(c) || matches!(c, '-' | '_' | '.'),
                last: |c| c != '.',
                describe: "1-128 letters, digits, '-', '_' or '.', starting with a letter or digit",
            },
            NameRule::Role => Rule {
                min: 1,
                max: 64,
                first: |c| c.is_ascii_alphabetic(),
                rest: |c| alnum(c) || matches!(c, ' ' | '-' | '_' | '.'),
                last: |c| c != ' ',
                describe: "1-64 letters, digits, spaces, '-', '_' or '.', starting with a letter",
            },
            NameRule::User => Rule {
                min: 1,
                max: 128,
                first: alnum,
                rest: |c| alnum(c) || matches!(c, '-' | '_' | '.' | '@'),
                last: |c| c != '.',
                describe: "1-128 letters, digits, '-', '_', '.' or '@', starting with a letter or digit",
            },
        }
    }

    pub fn what(self) -> &'static str {
        match self {
            NameRule::Workspace => "workspace name",
            NameRule::Compute => "compute name",
            NameRule::Datastore => "datastore name",
            NameRule::Asset => "asset name",
            NameRule::Component => "component name",
            NameRule::Job => "job name",
            NameRule::Schedule => "schedule name",
            NameRule::Connection => "connection name",
            NameRule::Endpoint => "endpoint name",
            NameRule::Deployment => "deployment name",
            NameRule::Version => "version",
            NameRule::User => "user name",
            NameRule::Role => "role name",
        }
    }
}

/// A name that breaks its rule, with the rule spelled out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError {
    pub rule: NameRule,
    pub name: String,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a valid {}: use {}",
            self.name,
            self.rule.what(),
            self.rule.rule().describe
        )
    }
}

impl std::error::Error for NameError {}

/// Checks `name` against `rule`.
pub fn check(rule: NameRule, name: &str) -> Result<(), NameError> {
    let r = rule.rule();
    let len = name.chars().count();
    let mut chars = name.chars();
    let ok = (r.min..=r.max).contains(&len)
        && chars.next().is_some_and(r.first)
        && chars.all(r.rest)
        && name.chars().last().is_some_and(r.last)
        // No `..` anywhere: a checked name is safe as a path segment and in a path.
        && !name.contains("..");
    if ok {
        Ok(())
    } else {
        Err(NameError {
            rule,
            name: name.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_their_rules() {
        let cases: &[(NameRule, &str, bool)] = &[
            (NameRule::Workspace, "default", true),
            (NameRule::Workspace, "ab", false),
            (NameRule::Workspace, "my_ws-2", true),
            (NameRule::Compute, "cpu-cluster", true),
            (NameRule::Compute, "cpu-", false),
            (NameRule::Compute, "1cpu", false),
            (NameRule::Datastore, "workspaceblobstore", true),
            (NameRule::Datastore, "my-store", false),
            (NameRule::Asset, "iris.csv", true),
            (NameRule::Asset, "..", false),
            (NameRule::Asset, "0..0", false),
            (NameRule::Asset, "a/b", false),
            (NameRule::Component, "train_model", true),
            (NameRule::Component, "Train", false),
            (NameRule::Endpoint, "my-endpoint", true),
            (NameRule::Endpoint, "ep", false),
            (NameRule::Version, "1", true),
            (NameRule::Version, "1.0.", false),
            (NameRule::User, "alice@example.com", true),
            (NameRule::User, "", false),
            (NameRule::Role, "Data Scientist Custom", true),
            (NameRule::Role, "Ops 2", true),
            (NameRule::Role, "2nd", false),
            (NameRule::Role, "trailing ", false),
        ];
        for (rule, name, ok) in cases {
            assert_eq!(check(*rule, name).is_ok(), *ok, "{rule:?} {name:?}");
        }
    }

    #[test]
    fn no_rule_admits_a_path_separator_or_parent_segment() {
        let rules = [
            NameRule::Workspace,
            NameRule::Compute,
            NameRule::Datastore,
            NameRule::Asset,
            NameRule::Component,
            NameRule::Job,
            NameRule::Schedule,
            NameRule::Connection,
            NameRule::Endpoint,
            NameRule::Version,
            NameRule::User,
            NameRule::Role,
        ];
        for rule in rules {
            for bad in ["..", "a/b", "a\\b", "%2e%2e", "a\0b", "ab/..", " x"] {
                assert!(check(rule, bad).is_err(), "{rule:?} admitted {bad:?}");
            }
        }
    }
}
