//! A small declarative schema language and the one validator that walks documents with it.
//!
//! Azure ML's YAML has dozens of resource types with hundreds of fields; describing them as data
//! (see `tables.rs`) lets one walker report *every* error with its line, suggest the field the
//! user probably meant, fill documented defaults, canonicalise enum spellings, warn about fields
//! that cannot be honoured locally, and lift secrets out — identically for YAML, JSON and `--set`.

use crate::diag::{Diagnostic, join};
use crate::names::{self, NameRule};
use crate::node::{Node, Value};
use serde_json::{Map, Value as Json};

/// The shape a value must have.
#[derive(Debug)]
pub enum Ty {
    Str,
    Int,
    Num,
    Bool,
    /// A string, number or boolean.
    Scalar,
    /// Anything: kept as written.
    Any,
    Name(NameRule),
    /// A version: a string or an integer, stored as a string.
    Version,
    /// One of these words; matched case-insensitively and stored as written here.
    Enum(&'static [&'static str]),
    List(&'static Ty),
    /// A mapping with user-chosen keys.
    Map(&'static Ty),
    Obj(&'static [Field]),
    /// An object whose `tag` field picks which extra fields are allowed.
    Tagged(&'static Tagged),
    /// A string (a path or reference), or else the inner shape.
    StrOr(&'static Ty),
    /// A literal value, or else the inner shape.
    ScalarOr(&'static Ty),
    /// Like the inner shape, but the value goes to the vault and never into the stored spec.
    Secret(&'static Ty),
    /// A string that may name a local file or folder (else a URI or reference): see
    /// [`path_slots`], which finds every one in a document.
    Path(PathKind),
    /// A [`Ty::Path`] string, or else the inner shape (an inline component, a conda mapping).
    PathOr(PathKind, &'static Ty),
    /// A mapping read as the first shape when it has the named field, else as the second (a
    /// schedule's `create_job`: overrides of a `job`, or a whole job).
    WhenField(&'static str, &'static Ty, &'static Ty),
}

/// What a local path in a document names, which says what the CLI does with it before the
/// document reaches the server: upload it, or read it and put its content in its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// A code folder (a job's, a component's, a deployment's scoring code): uploaded without
    /// what `.amlignore`/`.gitignore` exclude.
    Code,
    /// One of a component's `additional_includes`, copied next to its code.
    Include,
    /// A data path (inputs, data assets): a file or folder as its sibling `type` says.
    Data,
    /// A model's files: a file or a folder.
    Model,
    /// A conda file: read and inlined.
    Conda,
    /// A component file: read, checked as a component and inlined; its own paths are
    /// relative to it.
    Component,
    /// A sweep's trial given as a component file: inlined as the trial command.
    Trial,
    /// A Docker build context, searched for a conda or requirements file.
    BuildContext,
    /// A folder on the server's machine (a local datastore): made absolute, never uploaded.
    LocalDir,
    /// A text file (a kubeconfig): read and inlined as its text. A value of several lines is
    /// the text itself.
    Text,
    /// A job file (a schedule's job): read, checked as a job and inlined; its own paths are
    /// relative to it.
    Job,
}

/// A string in a document at a field the tables declare a [`Ty::Path`].
#[derive(Debug, Clone)]
pub struct PathSlot {
    /// Where it is, as a JSON pointer (`/jobs/train/inputs/data/path`).
    pub pointer: String,
    /// Where it is, as the dotted path errors name (`jobs.train.inputs.data.path`).
    pub dotted: String,
    pub kind: PathKind,
    pub value: String,
    /// The `type` field next to it (an input's `uri_file`, a data asset's `mltable`).
    pub sibling_type: Option<String>,
}

/// Every string at a path-typed field of `value`, read with `ty`, at any depth (pipeline steps,
/// inline components, sweep trials, deployments' environments). Inline objects are walked with
/// their own shape; what a path names is not opened here (this crate does no IO).
pub fn path_slots(ty: &Ty, value: &Json) -> Vec<PathSlot> {
    let mut out = vec![];
    collect_paths(ty, value, "", "", None, &mut out);
    out
}

fn collect_paths(
    ty: &Ty,
    value: &Json,
    pointer: &str,
    dotted: &str,
    sibling_type: Option<&str>,
    out: &mut Vec<PathSlot>,
) {
    let slot = |kind: PathKind, s: &str, out: &mut Vec<PathSlot>| {
        out.push(PathSlot {
            pointer: pointer.to_string(),
            dotted: dotted.to_string(),
            kind,
            value: s.to_string(),
            sibling_type: sibling_type.map(str::to_string),
        })
    };
    match (ty, value) {
        (Ty::Path(kind), Json::String(s)) | (Ty::PathOr(kind, _), Json::String(s)) => {
            slot(*kind, s, out)
        }
        (Ty::PathOr(_, inner) | Ty::StrOr(inner) | Ty::ScalarOr(inner), Json::Object(_)) => {
            collect_paths(inner, value, pointer, dotted, sibling_type, out)
        }
        (Ty::Secret(inner), _) => collect_paths(inner, value, pointer, dotted, sibling_type, out),
        (Ty::WhenField(field, with, without), Json::Object(map)) => {
            let ty = if map.contains_key(*field) {
                with
            } else {
                without
            };
            collect_paths(ty, value, pointer, dotted, sibling_type, out)
        }
        (Ty::List(item), Json::Array(items)) => {
            for (i, v) in items.iter().enumerate() {
                let p = format!("{pointer}/{i}");
                collect_paths(item, v, &p, &format!("{dotted}[{i}]"), sibling_type, out);
            }
        }
        (Ty::Map(item), Json::Object(entries)) => {
            for (k, v) in entries {
                let p = format!("{pointer}/{}", pointer_escape(k));
                collect_paths(item, v, &p, &join(dotted, k), None, out);
            }
        }
        (Ty::Obj(fields), Json::Object(_)) => {
            collect_fields(fields, &[], value, pointer, dotted, out)
        }
        (Ty::Tagged(tagged), Json::Object(map)) => {
            let tag = map
                .get(tagged.tag)
                .and_then(Json::as_str)
                .or(tagged.default);
            let extra = tagged
                .variants
                .iter()
                .find(|(w, _)| Some(*w) == tag)
                .map(|(_, e)| *e)
                .unwrap_or(&[]);
            collect_fields(tagged.common, extra, value, pointer, dotted, out)
        }
        _ => {}
    }
}

fn collect_fields(
    fields: &[Field],
    extra: &[Field],
    value: &Json,
    pointer: &str,
    dotted: &str,
    out: &mut Vec<PathSlot>,
) {
    let sibling_type = value.get("type").and_then(Json::as_str);
    for field in fields.iter().chain(extra) {
        if let Some(v) = value.get(field.name) {
            let p = format!("{pointer}/{}", pointer_escape(field.name));
            collect_paths(
                &field.ty,
                v,
                &p,
                &join(dotted, field.name),
                sibling_type,
                out,
            );
        }
    }
}

/// A key as one JSON pointer segment.
pub fn pointer_escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[derive(Debug)]
pub struct Tagged {
    pub tag: &'static str,
    /// The variant used when the tag is absent; `None` makes the tag required.
    pub default: Option<&'static str>,
    pub common: &'static [Field],
    pub variants: &'static [(&'static str, &'static [Field])],
}

/// A literal default value.
#[derive(Debug, Clone, Copy)]
pub enum Lit {
    Int(i64),
    Str(&'static str),
    Bool(bool),
}

#[derive(Debug)]
pub struct Field {
    pub name: &'static str,
    pub ty: Ty,
    pub required: bool,
    pub default: Option<Lit>,
    /// Set for fields Tarn accepts and stores but cannot act on locally: why not.
    pub unhonoured: Option<&'static str>,
}

/// Shorthand constructor used by the tables.
pub const fn f(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        required: false,
        default: None,
        unhonoured: None,
    }
}

impl Field {
    pub const fn req(mut self) -> Field {
        self.required = true;
        self
    }
    pub const fn def(mut self, lit: Lit) -> Field {
        self.default = Some(lit);
        self
    }
    pub const fn warn(mut self, why: &'static str) -> Field {
        self.unhonoured = Some(why);
        self
    }
}

/// The placeholder that replaces a secret in stored specs and API responses.
pub const SECRET_PLACEHOLDER: &str = "<stored in vault>";

/// What a walk produced: the normalised value, findings, and the secrets lifted out of it.
#[derive(Default)]
pub struct Walk {
    pub diagnostics: Vec<Diagnostic>,
    /// `(dotted path, value)` for every secret; the normalised value holds the placeholder.
    pub secrets: Vec<(String, Json)>,
}

impl Walk {
    /// Checks `node` against `ty` at `path`, returning the normalised value.
    pub fn check(&mut self, ty: &Ty, node: &Node, path: &str) -> Json {
        match (ty, &node.value) {
            (Ty::Any, _) => node.to_json(),
            (Ty::Str, Value::Str(s)) => Json::String(s.clone()),
            (Ty::Int, Value::Int(i)) => Json::from(*i),
            (Ty::Num, Value::Int(i)) => Json::from(*i),
            (Ty::Num, Value::Float(_)) => node.to_json(),
            (Ty::Bool, Value::Bool(b)) => Json::Bool(*b),
            (Ty::Scalar, Value::Str(_) | Value::Int(_) | Value::Float(_) | Value::Bool(_)) => {
                node.to_json()
            }
            (Ty::Name(rule), Value::Str(s)) => {
                if let Err(e) = names::check(*rule, s) {
                    self.error(path, node, e.to_string());
                }
                Json::String(s.clone())
            }
            (Ty::Version, Value::Str(_) | Value::Int(_)) => {
                let text = match &node.value {
                    Value::Int(i) => i.to_string(),
                    Value::Str(s) => s.clone(),
                    _ => unreachable!("matched above"),
                };
                if let Err(e) = names::check(NameRule::Version, &text) {
                    self.error(path, node, e.to_string());
                }
                Json::String(text)
            }
            (Ty::Enum(words), Value::Str(s)) => match canonical(words, s) {
                Some(word) => Json::String(word.to_string()),
                None => {
                    self.error(path, node, format!("{s:?} is not one of {}", list(words)));
                    Json::String(s.clone())
                }
            },
            (Ty::List(item), Value::List(items)) => Json::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, n)| self.check(item, n, &format!("{path}[{i}]")))
                    .collect(),
            ),
            (Ty::Map(item), Value::Map(entries)) => Json::Object(
                entries
                    .iter()
                    .map(|(k, v)| {
                        // `outputs: {model: }` is Azure's way to ask for the defaults.
                        let value = if v.is_null() {
                            Json::Null
                        } else {
                            self.check(item, v, &join(path, &k.name))
                        };
                        (k.name.clone(), value)
                    })
                    .collect(),
            ),
            (Ty::Obj(fields), Value::Map(_)) => {
                Json::Object(self.fields(fields, &[], None, node, path))
            }
            (Ty::Tagged(tagged), Value::Map(_)) => self.tagged(tagged, node, path),
            (Ty::WhenField(field, with, without), Value::Map(_)) => {
                let ty = if node.get(field).is_some() {
                    with
                } else {
                    without
                };
                self.check(ty, node, path)
            }
            (Ty::StrOr(_) | Ty::Path(_) | Ty::PathOr(..), Value::Str(s)) => Json::String(s.clone()),
            (Ty::StrOr(inner) | Ty::PathOr(_, inner), _) => self.check(inner, node, path),
            (Ty::ScalarOr(_), Value::Str(_) | Value::Int(_) | Value::Float(_) | Value::Bool(_)) => {
                node.to_json()
            }
            (Ty::ScalarOr(inner), _) => self.check(inner, node, path),
            // Sent back unchanged (e.g. by `update`): the stored secret stays as it is.
            (Ty::Secret(_), Value::Str(s)) if s == SECRET_PLACEHOLDER => Json::String(s.clone()),
            (Ty::Secret(inner), _) => {
                let value = self.check(inner, node, path);
                self.secrets.push((path.to_string(), value));
                Json::String(SECRET_PLACEHOLDER.into())
            }
            _ => {
                self.error(
                    path,
                    node,
                    format!("expected {}, found {}", describe(ty), node.type_name()),
                );
                node.to_json()
            }
        }
    }

    fn tagged(&mut self, tagged: &Tagged, node: &Node, path: &str) -> Json {
        let tag_node = node.get(tagged.tag);
        let tag = match tag_node.map(|n| &n.value) {
            Some(Value::Str(s)) => s.as_str(),
            Some(_) => {
                let n = tag_node.expect("matched Some");
                self.error(
                    &join(path, tagged.tag),
                    n,
                    format!("expected a string, found {}", n.type_name()),
                );
                return node.to_json();
            }
            None => match tagged.default {
                Some(d) => d,
                None => {
                    let words: Vec<&str> = tagged.variants.iter().map(|(w, _)| *w).collect();
                    self.error(
                        path,
                        node,
                        format!("`{}` is required: one of {}", tagged.tag, list(&words)),
                    );
                    return node.to_json();
                }
            },
        };
        let words: Vec<&str> = tagged.variants.iter().map(|(w, _)| *w).collect();
        let Some((word, extra)) = tagged
            .variants
            .iter()
            .find(|(w, _)| w.eq_ignore_ascii_case(tag))
        else {
            let at = tag_node.unwrap_or(node);
            self.error(
                &join(path, tagged.tag),
                at,
                format!("{tag:?} is not one of {}", list(&words)),
            );
            return node.to_json();
        };
        let mut out = Map::new();
        out.insert(tagged.tag.to_string(), Json::String(word.to_string()));
        out.extend(self.fields(tagged.common, extra, Some(tagged.tag), node, path));
        Json::Object(out)
    }

    /// Checks a mapping against `fields` (and `extra`, for tagged variants).
    /// `tag` names a key already checked by the caller.
    fn fields(
        &mut self,
        fields: &[Field],
        extra: &[Field],
        tag: Option<&str>,
        node: &Node,
        path: &str,
    ) -> Map<String, Json> {
        let all = || fields.iter().chain(extra.iter());
        let mut out = Map::new();
        for (key, value) in node.entries() {
            let key_path = join(path, &key.name);
            if Some(key.name.as_str()) == tag || (key.name == "$schema" && path.is_empty()) {
                continue;
            }
            let Some(field) = all().find(|f| f.name == key.name) else {
                let names: Vec<&str> = all().map(|f| f.name).collect();
                let pos = key.pos.or(value.pos);
                let hint = match suggest(&key.name, &names) {
                    Some(s) => format!(" (did you mean `{s}`?)"),
                    None => format!("; known fields here: {}", names.join(", ")),
                };
                self.diagnostics.push(Diagnostic::error(
                    &key_path,
                    pos,
                    format!("unknown field `{}`{hint}", key.name),
                ));
                continue;
            };
            if let Some(why) = field.unhonoured
                && !value.is_null()
            {
                self.diagnostics.push(Diagnostic::warning(
                    &key_path,
                    key.pos,
                    format!("accepted and stored, but not honoured here: {why}"),
                ));
            }
            let normalised = if value.is_null() && !field.required {
                Json::Null
            } else {
                self.check(&field.ty, value, &key_path)
            };
            out.insert(key.name.clone(), normalised);
        }
        for field in all() {
            if out.contains_key(field.name) {
                if field.required && out[field.name].is_null() {
                    self.error(
                        &join(path, field.name),
                        node,
                        format!("`{}` must have a value", field.name),
                    );
                }
                continue;
            }
            if field.required {
                self.error(
                    &join(path, field.name),
                    node,
                    format!("missing required field `{}`", field.name),
                );
            } else if let Some(lit) = field.default {
                out.insert(field.name.to_string(), lit_json(lit));
            }
        }
        out
    }

    fn error(&mut self, path: &str, node: &Node, message: String) {
        self.diagnostics
            .push(Diagnostic::error(path, node.pos, message));
    }
}

fn lit_json(lit: Lit) -> Json {
    match lit {
        Lit::Int(i) => Json::from(i),
        Lit::Str(s) => Json::String(s.to_string()),
        Lit::Bool(b) => Json::Bool(b),
    }
}

fn canonical(words: &'static [&'static str], given: &str) -> Option<&'static str> {
    words
        .iter()
        .copied()
        .find(|w| w.eq_ignore_ascii_case(given))
}

fn list(words: &[&str]) -> String {
    words
        .iter()
        .map(|w| format!("`{w}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe(ty: &Ty) -> String {
    match ty {
        Ty::Str | Ty::Name(_) => "a string".into(),
        Ty::Path(_) => "a path or URI (a string)".into(),
        Ty::Int => "an integer".into(),
        Ty::Num => "a number".into(),
        Ty::Bool => "a boolean (true or false)".into(),
        Ty::Scalar => "a string, number or boolean".into(),
        Ty::Any => "any value".into(),
        Ty::Version => "a version (string or integer)".into(),
        Ty::Enum(words) => format!("one of {}", list(words)),
        Ty::List(_) => "a list".into(),
        Ty::Map(_) | Ty::Obj(_) | Ty::Tagged(_) | Ty::WhenField(..) => "a mapping".into(),
        Ty::StrOr(inner) | Ty::PathOr(_, inner) => format!("a string or {}", describe(inner)),
        Ty::ScalarOr(inner) => format!("a literal value or {}", describe(inner)),
        Ty::Secret(inner) => describe(inner),
    }
}

/// The closest known name to a misspelt one, if any is close enough to be a plausible typo.
pub fn suggest<'a>(given: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(&given.to_ascii_lowercase(), k), *k))
        .filter(|(score, _)| *score > 0.82)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_catch_typos_but_not_strangers() {
        let known = ["command", "code", "environment", "compute"];
        assert_eq!(suggest("comand", &known), Some("command"));
        assert_eq!(suggest("enviroment", &known), Some("environment"));
        assert_eq!(suggest("zebra", &known), None);
    }
}
