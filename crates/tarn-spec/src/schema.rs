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
            (Ty::StrOr(_), Value::Str(s)) => Json::String(s.clone()),
            (Ty::StrOr(inner), _) => self.check(inner, node, path),
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
        Ty::Int => "an integer".into(),
        Ty::Num => "a number".into(),
        Ty::Bool => "a boolean (true or false)".into(),
        Ty::Scalar => "a string, number or boolean".into(),
        Ty::Any => "any value".into(),
        Ty::Version => "a version (string or integer)".into(),
        Ty::Enum(words) => format!("one of {}", list(words)),
        Ty::List(_) => "a list".into(),
        Ty::Map(_) | Ty::Obj(_) | Ty::Tagged(_) => "a mapping".into(),
        Ty::StrOr(inner) => format!("a string or {}", describe(inner)),
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
