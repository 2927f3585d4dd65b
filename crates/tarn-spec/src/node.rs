//! A YAML/JSON document as one tree that remembers where each value came from.
//!
//! Users write YAML, the API receives JSON, `--set` injects single values: all three become a
//! [`Node`] so that validation, expression checks and normalisation run once, and every error
//! can name the line and column when there is one.

use std::fmt;

/// A position in a source file: 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// One value with the position it was read from (none for JSON and `--set`).
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub value: Value,
    pub pos: Option<Pos>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Node>),
    /// Keys keep their order and their own positions (an unknown key is reported at the key).
    Map(Vec<(Key, Node)>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    pub name: String,
    pub pos: Option<Pos>,
}

/// Why a document could not be read at all.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SyntaxError {
    pub message: String,
    pub pos: Option<Pos>,
}

impl Node {
    pub fn new(value: Value) -> Node {
        Node { value, pos: None }
    }

    /// Parses one YAML document. An empty file is an empty mapping's absence: `Null`.
    pub fn from_yaml(text: &str) -> Result<Node, SyntaxError> {
        use saphyr::{LoadableYamlNode, MarkedYamlOwned};
        check_shape(text)?;
        let docs = MarkedYamlOwned::load_from_str(text).map_err(|e| SyntaxError {
            message: e.info().to_string(),
            pos: Some(Pos {
                line: e.marker().line(),
                col: e.marker().col() + 1,
            }),
        })?;
        if docs.len() > 1 {
            return Err(SyntaxError {
                message: "the file holds several YAML documents; put one resource in each file"
                    .into(),
                pos: docs.get(1).map(|d| marked_pos(&d.span)),
            });
        }
        match docs.into_iter().next() {
            None => Ok(Node::new(Value::Null)),
            Some(doc) => convert_yaml(doc),
        }
    }

    /// Wraps a JSON value (the API's request bodies) without positions.
    pub fn from_json(json: &serde_json::Value) -> Node {
        use serde_json::Value as J;
        let value = match json {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            J::String(s) => Value::Str(s.clone()),
            J::Array(items) => Value::List(items.iter().map(Node::from_json).collect()),
            J::Object(map) => Value::Map(
                map.iter()
                    .map(|(k, v)| {
                        (
                            Key {
                                name: k.clone(),
                                pos: None,
                            },
                            Node::from_json(v),
                        )
                    })
                    .collect(),
            ),
        };
        Node::new(value)
    }

    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(J::Number)
                .unwrap_or_else(|| J::String(f.to_string())),
            Value::Str(s) => J::String(s.clone()),
            Value::List(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.name.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn str_at(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Node::as_str)
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// The entries of a mapping, or nothing for any other value.
    pub fn entries(&self) -> &[(Key, Node)] {
        match &self.value {
            Value::Map(entries) => entries,
            _ => &[],
        }
    }

    /// What a value is, for messages such as "expected an integer, found a string".
    pub fn type_name(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::List(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// The most collections a YAML document may nest: far beyond any Azure ML file, and far below
/// what the recursive reading, checking and dropping of a tree can take on a thread's stack.
pub const MAX_DEPTH: usize = 64;
/// The most values a YAML document may expand to, aliases counted as what they stand for (a
/// few lines of nested aliases can otherwise stand for billions of values).
pub const MAX_VALUES: u64 = 1_000_000;

/// Refuses a document nested deeper than [`MAX_DEPTH`] or expanding to more than
/// [`MAX_VALUES`], from the parser's events (a loop, not a recursion), before it is loaded.
/// Syntax errors are left for the loader to report.
fn check_shape(text: &str) -> Result<(), SyntaxError> {
    use saphyr_parser::{Event, Parser};
    // Each open collection: its anchor and how many values it holds so far.
    let mut open: Vec<(usize, u64)> = vec![];
    let mut anchors: std::collections::HashMap<usize, u64> = Default::default();
    let mut total: u64 = 0;
    for event in Parser::new_from_str(text) {
        let Ok((event, span)) = event else {
            return Ok(());
        };
        let values = match event {
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if open.len() >= MAX_DEPTH {
                    return Err(SyntaxError {
                        message: format!("the document nests deeper than {MAX_DEPTH} levels"),
                        pos: Some(marked_pos(&span)),
                    });
                }
                open.push((anchor, 1));
                total += 1;
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some((anchor, n)) = open.pop() else {
                    continue;
                };
                if anchor > 0 {
                    anchors.insert(anchor, n);
                }
                if let Some(parent) = open.last_mut() {
                    parent.1 = parent.1.saturating_add(n);
                }
                continue;
            }
            Event::Scalar(_, _, anchor, _) => {
                if anchor > 0 {
                    anchors.insert(anchor, 1);
                }
                1
            }
            Event::Alias(id) => anchors.get(&id).copied().unwrap_or(1),
            _ => continue,
        };
        total = total.saturating_add(values);
        if let Some(parent) = open.last_mut() {
            parent.1 = parent.1.saturating_add(values);
        }
        if total > MAX_VALUES {
            return Err(SyntaxError {
                message: format!(
                    "the document stands for more than {MAX_VALUES} values (through its aliases)"
                ),
                pos: Some(marked_pos(&span)),
            });
        }
    }
    Ok(())
}

fn marked_pos(span: &saphyr_parser::Span) -> Pos {
    Pos {
        line: span.start.line(),
        col: span.start.col() + 1,
    }
}

fn convert_yaml(node: saphyr::MarkedYamlOwned) -> Result<Node, SyntaxError> {
    use saphyr::{ScalarOwned, YamlDataOwned};
    let pos = Some(marked_pos(&node.span));
    let value = match node.data {
        YamlDataOwned::Value(scalar) => match scalar {
            ScalarOwned::Null => Value::Null,
            ScalarOwned::Boolean(b) => Value::Bool(b),
            ScalarOwned::Integer(i) => Value::Int(i),
            ScalarOwned::FloatingPoint(f) => Value::Float(f.into_inner()),
            ScalarOwned::String(s) => Value::Str(s),
        },
        YamlDataOwned::Representation(s, _, _) => Value::Str(s),
        YamlDataOwned::Sequence(items) => Value::List(
            items
                .into_iter()
                .map(convert_yaml)
                .collect::<Result<_, _>>()?,
        ),
        YamlDataOwned::Mapping(map) => {
            let mut entries: Vec<(Key, Node)> = Vec::with_capacity(map.len());
            for (k, v) in map {
                let key_pos = Some(marked_pos(&k.span));
                let name = match k.data {
                    YamlDataOwned::Value(ScalarOwned::String(s)) => s,
                    YamlDataOwned::Value(ScalarOwned::Integer(i)) => i.to_string(),
                    YamlDataOwned::Value(ScalarOwned::Boolean(b)) => b.to_string(),
                    _ => {
                        return Err(SyntaxError {
                            message: "mapping keys must be plain strings".into(),
                            pos: key_pos,
                        });
                    }
                };
                entries.push((Key { name, pos: key_pos }, convert_yaml(v)?));
            }
            Value::Map(entries)
        }
        YamlDataOwned::Tagged(_, inner) => return convert_yaml(*inner),
        YamlDataOwned::Alias(_) | YamlDataOwned::BadValue => {
            return Err(SyntaxError {
                message: "YAML aliases and unreadable values are not supported".into(),
                pos,
            });
        }
    };
    Ok(Node { value, pos })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_positions_point_at_keys_and_values() {
        let node = Node::from_yaml("name: a\nresources:\n  instance_count: 2\n").unwrap();
        let (key, value) = &node.get("resources").unwrap().entries()[0];
        assert_eq!(key.pos, Some(Pos { line: 3, col: 3 }));
        assert_eq!(value.value, Value::Int(2));
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let err = Node::from_yaml("name: [a, b\n").unwrap_err();
        assert!(err.pos.is_some(), "{err:?}");
    }
}
