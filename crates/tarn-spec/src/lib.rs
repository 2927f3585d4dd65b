//! `tarn-spec`: what Tarn's YAML and JSON documents mean. Pure: no IO, no async.
//!
//! Entry points: [`validate`] turns a document into a normalised [`Document`] or every error
//! found, with file positions; [`apply_set`] applies `--set a.b=c` overrides; the `names`,
//! `refs` and `expr` modules are the one place for name rules, references and expressions.

mod checks;
pub mod compute;
pub mod cron;
pub mod curated;
pub mod diag;
pub mod digest;
pub mod envplan;
pub mod expr;
pub mod kind;
pub mod mlflow_search;
pub mod names;
pub mod node;
pub mod refs;
pub mod runplan;
pub mod schema;
mod tables;
pub mod timezones;
pub mod trigger;
pub mod uri;

pub use checks::spark_size_mb;
pub use diag::{Diagnostic, Severity};
pub use kind::Kind;
pub use node::{Node, Pos, Value};
pub use schema::SECRET_PLACEHOLDER;

use serde_json::Value as Json;

/// A valid document, normalised: documented defaults filled, enum spellings canonical,
/// `$schema` dropped, secrets replaced by [`SECRET_PLACEHOLDER`] and returned apart.
#[derive(Debug, Clone)]
pub struct Document {
    pub kind: Kind,
    /// The `type` the document resolved to, for kinds that have one.
    pub variant: Option<String>,
    pub spec: Json,
    /// `(dotted path, value)` of every secret field.
    pub secrets: Vec<(String, Json)>,
    /// Fields accepted and stored but not honoured here.
    pub warnings: Vec<Diagnostic>,
}

impl Document {
    pub fn name(&self) -> Option<&str> {
        self.spec.get("name").and_then(Json::as_str)
    }

    pub fn version(&self) -> Option<&str> {
        self.spec.get("version").and_then(Json::as_str)
    }
}

/// The schema of each kind.
pub fn schema(kind: Kind) -> &'static schema::Ty {
    match kind {
        Kind::Workspace => &tables::WORKSPACE,
        Kind::Compute => &tables::COMPUTE,
        Kind::Datastore => &tables::DATASTORE,
        Kind::Data => &tables::DATA,
        Kind::Environment => &tables::ENVIRONMENT,
        Kind::Component => &tables::COMPONENT,
        Kind::Model => &tables::MODEL,
        Kind::Job => &tables::JOB,
        Kind::OnlineEndpoint => &tables::ONLINE_ENDPOINT,
        Kind::OnlineDeployment => &tables::ONLINE_DEPLOYMENT,
        Kind::BatchEndpoint => &tables::BATCH_ENDPOINT,
        Kind::BatchDeployment => &tables::BATCH_DEPLOYMENT,
        Kind::Schedule => &tables::SCHEDULE,
        Kind::Connection => &tables::CONNECTION,
        Kind::Registry => &tables::REGISTRY,
    }
}

/// Parses YAML text, applies `--set` overrides, and validates. `expected` is the kind the caller
/// wants (`tarn compute create` expects a compute); without it the kind comes from `$schema`
/// or an unambiguous `type`.
pub fn validate_yaml(
    text: &str,
    expected: Option<Kind>,
    sets: &[String],
) -> Result<Document, Vec<Diagnostic>> {
    let mut node = Node::from_yaml(text).map_err(|e| {
        vec![Diagnostic::error(
            "",
            e.pos,
            format!("invalid YAML: {}", e.message),
        )]
    })?;
    for set in sets {
        apply_set(&mut node, set).map_err(|d| vec![d])?;
    }
    validate(&node, expected)
}

/// Validates a document tree. Returns every error found, or the normalised document.
pub fn validate(node: &Node, expected: Option<Kind>) -> Result<Document, Vec<Diagnostic>> {
    if !matches!(node.value, Value::Map(_)) {
        let found = if node.is_null() {
            "an empty document"
        } else {
            node.type_name()
        };
        return Err(vec![Diagnostic::error(
            "",
            node.pos,
            format!("expected a mapping of fields, found {found}"),
        )]);
    }
    let (kind, implied_type) = detect_kind(node, expected)?;
    let mut owned;
    let mut root = node;
    if let Some(t) = implied_type {
        match node.get("type") {
            None => {
                owned = node.clone();
                if let Value::Map(entries) = &mut owned.value {
                    entries.push((
                        node::Key {
                            name: "type".into(),
                            pos: None,
                        },
                        Node::new(Value::Str(t.into())),
                    ));
                }
                root = &owned;
            }
            Some(given) => {
                if given.as_str().is_some_and(|g| !g.eq_ignore_ascii_case(t)) {
                    return Err(vec![Diagnostic::error(
                        "type",
                        given.pos,
                        format!(
                            "`$schema` says this is `{t}` but `type` says {:?}",
                            given.as_str().unwrap_or_default()
                        ),
                    )]);
                }
            }
        }
    }
    let mut walk = schema::Walk::default();
    let spec = walk.check(schema(kind), root, "");
    let variant = spec.get("type").and_then(Json::as_str).map(str::to_string);
    checks::run(kind, variant.as_deref(), root, &mut walk.diagnostics);
    // Report in file order, as a reader scans the file.
    walk.diagnostics
        .sort_by_key(|d| d.pos.map(|p| (p.line, p.col)).unwrap_or((usize::MAX, 0)));
    let (errors, warnings): (Vec<_>, Vec<_>) =
        walk.diagnostics.into_iter().partition(Diagnostic::is_error);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Document {
        kind,
        variant,
        spec,
        secrets: walk.secrets,
        warnings,
    })
}

fn detect_kind(
    node: &Node,
    expected: Option<Kind>,
) -> Result<(Kind, Option<&'static str>), Vec<Diagnostic>> {
    let from_schema = match node.get("$schema") {
        Some(s) => match s.as_str().and_then(kind::from_schema_url) {
            Some(hit) => Some(hit),
            None if expected.is_some() => None,
            None => {
                return Err(vec![Diagnostic::error(
                    "$schema",
                    s.pos,
                    "unknown `$schema`: Tarn reads the Azure ML CLI v2 schemas (e.g. `https://azuremlschemas.azureedge.net/latest/commandJob.schema.json`)",
                )]);
            }
        },
        None => None,
    };
    match (expected, from_schema) {
        (Some(want), Some((got, _))) if want != got => {
            let pos = node.get("$schema").and_then(|n| n.pos);
            Err(vec![Diagnostic::error(
                "$schema",
                pos,
                format!(
                    "this file is a {} (by its `$schema`), not a {}",
                    got.noun(),
                    want.noun()
                ),
            )])
        }
        (_, Some(hit)) => Ok(hit),
        (Some(want), None) => Ok((want, None)),
        (None, None) => {
            let by_type = node.str_at("type").and_then(|t| {
                if t.eq_ignore_ascii_case("kubernetes") && node.get("endpoint_name").is_some() {
                    Some(Kind::OnlineDeployment)
                } else {
                    kind::from_type(t)
                }
            });
            // A schedule has no `type`: its trigger and what it fires say what it is.
            let by_fields = (node.get("trigger").is_some()
                && ["create_job", "import_data", "create_monitor"]
                    .iter()
                    .any(|f| node.get(f).is_some()))
            .then_some(Kind::Schedule);
            by_type.or(by_fields).map(|k| (k, None)).ok_or_else(|| vec![Diagnostic::error("", node.pos, "cannot tell what resource this file describes: add `$schema` or pass `--kind <group>`")])
        }
    }
}

/// Applies one `--set a.b.c=value` override; the value is read as a YAML scalar or flow value.
pub fn apply_set(root: &mut Node, assignment: &str) -> Result<(), Diagnostic> {
    let at = format!("--set {assignment}");
    let Some((path, raw)) = assignment.split_once('=') else {
        return Err(Diagnostic::error(
            "",
            None,
            format!("{at}: expected `field.path=value`"),
        ));
    };
    let keys: Vec<&str> = path.split('.').collect();
    if keys.iter().any(|k| k.is_empty()) {
        return Err(Diagnostic::error(
            path,
            None,
            format!("{at}: empty segment in field path"),
        ));
    }
    let mut value = Node::from_yaml(raw)
        .map_err(|e| Diagnostic::error(path, None, format!("{at}: {}", e.message)))?;
    strip_positions(&mut value);
    let mut current = root;
    for (i, key) in keys.iter().enumerate() {
        if current.is_null() {
            current.value = Value::Map(Vec::new());
        }
        let Value::Map(entries) = &mut current.value else {
            return Err(Diagnostic::error(
                &keys[..i].join("."),
                current.pos,
                format!("{at}: `{}` is not a mapping", keys[..i].join(".")),
            ));
        };
        let idx = match entries.iter().position(|(k, _)| k.name == *key) {
            Some(idx) => idx,
            None => {
                entries.push((
                    node::Key {
                        name: key.to_string(),
                        pos: None,
                    },
                    Node::new(Value::Null),
                ));
                entries.len() - 1
            }
        };
        if i + 1 == keys.len() {
            entries[idx].1 = value;
            return Ok(());
        }
        current = &mut entries[idx].1;
    }
    Ok(())
}

fn strip_positions(node: &mut Node) {
    node.pos = None;
    match &mut node.value {
        Value::List(items) => items.iter_mut().for_each(strip_positions),
        Value::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
            k.pos = None;
            strip_positions(v);
        }),
        _ => {}
    }
}
