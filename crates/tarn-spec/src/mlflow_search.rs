//! MLflow's search grammar: `filter` strings such as
//! `metrics.acc > 0.9 and params.lr = '0.01' and tags."team name" LIKE 'ml%'` and `order_by`
//! items such as `metrics.acc DESC`, for runs, experiments, registered models, model versions
//! and traces (`trace.status = 'OK' and span.name = 'retrieve' and metadata.`mlflow.sourceRun`
//! IS NOT NULL`). Parsed into clauses the store turns into SQL; the error messages follow
//! MLflow's wording where its tests look for it.

/// What a clause or order key is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entity {
    Metric,
    Param,
    Tag,
    Attribute,
    /// A trace's request metadata (`metadata.<key>`).
    Metadata,
    /// Any span of a trace: `name`, `type`, `status`, `content` (the whole span's text) or
    /// `attributes.<key>` (one attribute's value).
    Span,
    /// A trace's valid feedback of a name (`feedback.<name>`), compared by its value.
    Feedback,
    /// A trace's valid expectation of a name (`expectation.<name>`).
    Expectation,
    /// A GenAI issue a trace is linked to (`issue.id = '<issue id>'`, by an issue reference).
    Issue,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Like,
    ILike,
    /// Traces: the value matches a regular expression anywhere in it (as Python's
    /// `re.search`, which MLflow's SQLite store calls). Tarn resolves the pattern to the
    /// values that match it before the database sees the clause: SQLite has no regular
    /// expressions (see `tarn_core::traces`).
    RLike,
    In,
    NotIn,
    /// Traces' tags and metadata: the key is absent / present.
    IsNull,
    IsNotNull,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Num(f64),
    Str(String),
    List(Vec<String>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Clause {
    pub entity: Entity,
    /// For attributes, the canonical column: `run_id`, `run_name`, `status`, `user_id`,
    /// `artifact_uri`, `start_time`, `end_time`.
    pub key: String,
    pub op: Op,
    pub value: Value,
}

#[derive(Clone, Debug, PartialEq)]
pub struct OrderBy {
    pub entity: Entity,
    pub key: String,
    pub ascending: bool,
}

/// What a search is over; each has its own attribute keys (tags work the same for all).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject {
    Runs,
    Experiments,
    RegisteredModels,
    ModelVersions,
    Traces,
    /// MLflow 3 evaluation datasets.
    EvaluationDatasets,
    /// MLflow 3's GenAI issues (`status = 'resolved'`, `source_run_id = '…'`).
    Issues,
}

impl Subject {
    /// Attribute keys compared as strings, then those compared as numbers.
    fn attributes(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            Subject::Runs => (
                &["run_id", "run_name", "status", "user_id", "artifact_uri"],
                &["start_time", "end_time"],
            ),
            Subject::Experiments | Subject::RegisteredModels => (&["name"], &[]),
            Subject::ModelVersions => (&["name", "run_id", "source_path"], &["version_number"]),
            Subject::EvaluationDatasets => (
                &["name", "dataset_id", "created_by", "last_updated_by"],
                &["created_time", "last_update_time"],
            ),
            Subject::Traces => (
                &["request_id", "status", "client_request_id"],
                &["timestamp_ms", "execution_time_ms", "end_time_ms"],
            ),
            Subject::Issues => (&["status", "source_run_id", "severity", "name"], &[]),
        }
    }
}

/// An attribute key's canonical name (runs accept MLflow's aliases: `id`, `created`, …).
fn attribute(subject: Subject, key: &str) -> Result<&'static str, String> {
    let (strings, numbers) = subject.attributes();
    let alias = match (subject, key) {
        (Subject::Runs, "run_uuid" | "id") => Some("run_id"),
        (Subject::Runs, "name" | "mlflow.runName") => Some("run_name"),
        (Subject::Runs, "created" | "Created") => Some("start_time"),
        (Subject::Traces, "timestamp") => Some("timestamp_ms"),
        (Subject::Traces, "execution_time") => Some("execution_time_ms"),
        (Subject::Traces, "end_time") => Some("end_time_ms"),
        (Subject::Traces, "trace_id") => Some("request_id"),
        _ => None,
    };
    alias
        .or_else(|| strings.iter().chain(numbers).find(|k| **k == key).copied())
        .ok_or_else(|| {
            format!(
                "Invalid attribute key '{key}' specified. Valid keys are '{:?}'",
                strings.iter().chain(numbers).collect::<Vec<_>>()
            )
        })
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Num(f64),
    Op(String),
    LParen,
    RParen,
    Comma,
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = vec![];
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => {
                out.push(Token::LParen);
                i += 1;
            }
            ')' => {
                out.push(Token::RParen);
                i += 1;
            }
            ',' => {
                out.push(Token::Comma);
                i += 1;
            }
            '\'' | '"' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&d| d == c)
                    .ok_or_else(|| format!("Invalid filter '{text}': unclosed quote"))?;
                out.push(Token::Str(chars[i + 1..i + 1 + end].iter().collect()));
                i += end + 2;
            }
            '=' | '!' | '<' | '>' | '~' => {
                let mut op = c.to_string();
                if i + 1 < chars.len() && chars[i + 1] == '=' {
                    op.push('=');
                    i += 1;
                }
                out.push(Token::Op(op));
                i += 1;
            }
            c if c.is_ascii_digit() || c == '-' || c == '.' => {
                let start = i;
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '.' | '-' | '+'))
                {
                    i += 1;
                }
                let t: String = chars[start..i].iter().collect();
                let n = t
                    .parse::<f64>()
                    .map_err(|_| format!("Invalid filter '{text}': {t:?} is not a number"))?;
                out.push(Token::Num(n));
            }
            _ => {
                // An identifier: letters, digits, `_`, `.`, `-`, and back-quoted or
                // double-quoted parts after a dot (`tags."a b"`, ``metrics.`x y` ``).
                let mut ident = String::new();
                while i < chars.len() {
                    let d = chars[i];
                    if d.is_alphanumeric() || matches!(d, '_' | '.' | '-' | '/' | ':') {
                        ident.push(d);
                        i += 1;
                    } else if (d == '`' || d == '"') && ident.ends_with('.') {
                        let end = chars[i + 1..]
                            .iter()
                            .position(|&q| q == d)
                            .ok_or_else(|| format!("Invalid filter '{text}': unclosed quote"))?;
                        ident.push('\u{1}'); // marks a quoted key: it is taken whole
                        ident.extend(&chars[i + 1..i + 1 + end]);
                        i += end + 2;
                        break;
                    } else {
                        break;
                    }
                }
                if ident.is_empty() {
                    return Err(format!("Invalid filter '{text}': unexpected {c:?}"));
                }
                out.push(Token::Ident(ident));
            }
        }
    }
    Ok(out)
}

/// Splits `metrics.acc` into its entity and key.
fn identifier(subject: Subject, ident: &str) -> Result<(Entity, String), String> {
    let (head, key) = match ident.split_once('.') {
        Some((h, k)) => (h, k.trim_start_matches('\u{1}').to_string()),
        None => ("attribute", ident.to_string()),
    };
    if subject == Subject::Traces {
        return trace_identifier(ident, head, key);
    }
    let entity = match head.to_ascii_lowercase().as_str() {
        "metric" | "metrics" => Entity::Metric,
        "param" | "params" | "parameter" | "parameters" => Entity::Param,
        "tag" | "tags" => Entity::Tag,
        "attribute" | "attributes" | "attr" | "run" => Entity::Attribute,
        other => {
            return Err(format!(
                "Invalid entity type '{other}'. Valid values are ['metric', 'parameter', 'tag', 'attribute']"
            ));
        }
    };
    if key.is_empty() {
        return Err(format!("Invalid identifier '{ident}': no key"));
    }
    let key = if entity == Entity::Attribute {
        attribute(subject, &key)?.to_string()
    } else {
        key
    };
    Ok((entity, key))
}

/// Splits a trace search key: MLflow's `trace.`/`attributes.`, `tags.`, `metadata.`, `span.`,
/// `feedback.` and `expectation.` prefixes, and the attribute names that stand for a tag or metadata (`name` is the
/// `mlflow.traceName` tag, `run_id` the `mlflow.sourceRun` metadata, `text` any span's text).
fn trace_identifier(ident: &str, head: &str, key: String) -> Result<(Entity, String), String> {
    if key.is_empty() {
        return Err(format!("Invalid identifier '{ident}': no key"));
    }
    let entity = match head.to_ascii_lowercase().as_str() {
        "tag" | "tags" => Entity::Tag,
        "metadata" | "request_metadata" => Entity::Metadata,
        "span" => Entity::Span,
        "feedback" => Entity::Feedback,
        "expectation" => Entity::Expectation,
        "issue" => Entity::Issue,
        "attribute" | "attributes" | "trace" => Entity::Attribute,
        other => {
            return Err(format!(
                "Invalid identifier type '{other}'. Valid values are ['tag', 'metadata', 'span', 'feedback', 'expectation', 'issue', 'trace', 'attribute']"
            ));
        }
    };
    match entity {
        Entity::Issue if key != "id" => Err(format!(
            "Invalid issue attribute '{key}'. Supported attributes: id"
        )),
        Entity::Span => match key.as_str() {
            "name" | "type" | "status" | "content" => Ok((entity, key)),
            k if k.starts_with("attributes.") => {
                // `span.attributes.mlflow.spanType` or ``span.attributes.`mlflow.spanType` ``.
                let name = k["attributes.".len()..].replace('\u{1}', "");
                if name.is_empty() {
                    return Err("Span attribute name cannot be empty after 'attributes.'".into());
                }
                Ok((entity, format!("attributes.{name}")))
            }
            other => Err(format!(
                "Invalid span attribute '{other}'. Supported attributes: content, name, status, type, attributes.<attribute_name>"
            )),
        },
        Entity::Attribute => match key.to_ascii_lowercase().as_str() {
            "name" => Ok((Entity::Tag, "mlflow.traceName".into())),
            "prompt" => Ok((Entity::Tag, "mlflow.linkedPrompts".into())),
            "run_id" => Ok((Entity::Metadata, "mlflow.sourceRun".into())),
            "text" => Ok((Entity::Span, "content".into())),
            _ => Ok((entity, attribute(Subject::Traces, &key)?.to_string())),
        },
        _ => Ok((entity, key)),
    }
}

/// Parses a run filter. An empty filter has no clauses.
pub fn parse_filter(text: &str) -> Result<Vec<Clause>, String> {
    parse_filter_of(Subject::Runs, text)
}

/// Parses a filter over `subject`'s attributes and tags.
pub fn parse_filter_of(subject: Subject, text: &str) -> Result<Vec<Clause>, String> {
    let tokens = tokenize(text)?;
    let mut clauses = vec![];
    let mut i = 0;
    while i < tokens.len() {
        let Token::Ident(ident) = &tokens[i] else {
            return Err(format!("Invalid filter '{text}': expected an identifier"));
        };
        let (entity, key) = identifier(subject, ident)?;
        if subject != Subject::Runs && matches!(entity, Entity::Metric | Entity::Param) {
            return Err(format!(
                "Invalid entity type in '{ident}'. Valid values are ['tag', 'attribute']"
            ));
        }
        i += 1;
        // The comparator: a symbol, or LIKE / ILIKE / IN / NOT IN.
        let op = match tokens.get(i) {
            Some(Token::Op(o)) => {
                i += 1;
                match o.as_str() {
                    "=" | "==" => Op::Eq,
                    "!=" => Op::Ne,
                    ">" => Op::Gt,
                    ">=" => Op::Ge,
                    "<" => Op::Lt,
                    "<=" => Op::Le,
                    other => return Err(format!("Invalid comparator '{other}'")),
                }
            }
            Some(Token::Ident(w)) => {
                i += 1;
                match w.to_ascii_uppercase().as_str() {
                    "IS" => {
                        let not = matches!(tokens.get(i), Some(Token::Ident(n)) if n.eq_ignore_ascii_case("not"));
                        if not {
                            i += 1;
                        }
                        match tokens.get(i) {
                            Some(Token::Ident(n)) if n.eq_ignore_ascii_case("null") => i += 1,
                            _ => {
                                return Err(format!(
                                    "Invalid filter '{text}': IS must be IS NULL or IS NOT NULL"
                                ));
                            }
                        }
                        if not { Op::IsNotNull } else { Op::IsNull }
                    }
                    "LIKE" => Op::Like,
                    "ILIKE" => Op::ILike,
                    "RLIKE" => Op::RLike,
                    "IN" => Op::In,
                    "NOT" => match tokens.get(i) {
                        Some(Token::Ident(w2)) if w2.eq_ignore_ascii_case("in") => {
                            i += 1;
                            Op::NotIn
                        }
                        _ => return Err(format!("Invalid filter '{text}': NOT must be NOT IN")),
                    },
                    other => return Err(format!("Invalid comparator '{other}'")),
                }
            }
            _ => return Err(format!("Invalid filter '{text}': expected a comparator")),
        };
        let value = match (op, tokens.get(i)) {
            (Op::IsNull | Op::IsNotNull, _) => Value::Str(String::new()),
            (Op::In | Op::NotIn, Some(Token::LParen)) => {
                i += 1;
                let mut items = vec![];
                loop {
                    match tokens.get(i) {
                        Some(Token::Str(s)) => items.push(s.clone()),
                        _ => {
                            return Err(format!(
                                "Invalid filter '{text}': IN needs a list of quoted strings"
                            ));
                        }
                    }
                    i += 1;
                    match tokens.get(i) {
                        Some(Token::Comma) => i += 1,
                        Some(Token::RParen) => {
                            i += 1;
                            break;
                        }
                        _ => return Err(format!("Invalid filter '{text}': unclosed list")),
                    }
                }
                Value::List(items)
            }
            (_, Some(Token::Num(n))) => {
                i += 1;
                Value::Num(*n)
            }
            (_, Some(Token::Str(s))) => {
                i += 1;
                Value::Str(s.clone())
            }
            _ => {
                return Err(format!(
                    "Invalid filter '{text}': expected a value after the comparator"
                ));
            }
        };
        check_clause(subject, entity, &key, op, &value)?;
        clauses.push(Clause {
            entity,
            key,
            op,
            value,
        });
        match tokens.get(i) {
            None => break,
            Some(Token::Ident(w)) if w.eq_ignore_ascii_case("and") => i += 1,
            Some(_) => {
                return Err(format!(
                    "Invalid filter '{text}': clauses are joined with AND (OR is not supported)"
                ));
            }
        }
    }
    Ok(clauses)
}

fn check_clause(
    subject: Subject,
    entity: Entity,
    key: &str,
    op: Op,
    value: &Value,
) -> Result<(), String> {
    let numeric = entity == Entity::Metric
        || (entity == Entity::Attribute && subject.attributes().1.contains(&key));
    if matches!(entity, Entity::Feedback | Entity::Expectation) {
        return check_assessment_clause(entity, key, op, value);
    }
    if entity == Entity::Issue {
        return match (op, value) {
            (Op::Eq, Value::Str(_)) => Ok(()),
            (Op::Eq, _) => Err(format!(
                "Value for 'issue.{key}' must be a quoted string, e.g. issue.id = 'iss-123'"
            )),
            _ => Err(format!(
                "issue.{key} comparator '{}' not one of '{{'='}}'",
                op.as_str()
            )),
        };
    }
    let allowed: &[Op] = if numeric {
        &[Op::Eq, Op::Ne, Op::Gt, Op::Ge, Op::Lt, Op::Le]
    } else if entity == Entity::Span && key == "content" {
        &[Op::Like, Op::ILike]
    } else if entity == Entity::Span || (subject == Subject::Traces && entity == Entity::Attribute)
    {
        &[
            Op::Eq,
            Op::Ne,
            Op::Like,
            Op::ILike,
            Op::RLike,
            Op::In,
            Op::NotIn,
        ]
    } else if subject == Subject::Traces {
        &[
            Op::Eq,
            Op::Ne,
            Op::Like,
            Op::ILike,
            Op::RLike,
            Op::IsNull,
            Op::IsNotNull,
        ]
    } else if entity == Entity::Attribute {
        &[Op::Eq, Op::Ne, Op::Like, Op::ILike, Op::In, Op::NotIn]
    } else {
        &[Op::Eq, Op::Ne, Op::Like, Op::ILike]
    };
    if !allowed.contains(&op) {
        return Err(format!("Invalid comparator {op:?} for {entity:?} '{key}'"));
    }
    match (numeric, value) {
        (false, Value::List(_)) if op == Op::RLike => Err(format!(
            "Value for '{key}' must be a quoted regular expression, e.g. '{key}' RLIKE '^v[0-9]+'"
        )),
        (true, Value::Num(_)) | (false, Value::Str(_) | Value::List(_)) => Ok(()),
        (true, _) => Err(format!(
            "Expected numeric value type for metric or numeric attribute '{key}'"
        )),
        (false, _) => Err(format!(
            "Value for '{key}' must be a quoted string, e.g. '{key}' = 'value'"
        )),
    }
}

/// An assessment's value is compared as a number (`>`, `>=`, `<`, `<=`, and `=`/`!=` with a
/// number), as text (`=`, `!=`, `LIKE`, `ILIKE` with a quoted string), or is absent / present.
fn check_assessment_clause(entity: Entity, key: &str, op: Op, value: &Value) -> Result<(), String> {
    let kind = if entity == Entity::Feedback {
        "feedback"
    } else {
        "expectation"
    };
    match (op, value) {
        (Op::IsNull | Op::IsNotNull, _) => Ok(()),
        (Op::Gt | Op::Ge | Op::Lt | Op::Le, Value::Num(_)) => Ok(()),
        (Op::Gt | Op::Ge | Op::Lt | Op::Le, _) => Err(format!(
            "Expected a numeric value for {kind} when using comparator '{}'",
            op.as_str()
        )),
        (Op::Eq | Op::Ne, Value::Num(_) | Value::Str(_))
        | (Op::Like | Op::ILike | Op::RLike, Value::Str(_)) => Ok(()),
        (Op::Like | Op::ILike | Op::RLike, _) => Err(format!(
            "Expected a quoted string value for {kind} (e.g. 'my-value')"
        )),
        _ => Err(format!(
            "Invalid comparator '{}' for {kind}.{key}: one of =, !=, >, >=, <, <=, LIKE, ILIKE, RLIKE, IS NULL, IS NOT NULL",
            op.as_str()
        )),
    }
}

impl Op {
    /// The comparator as a filter writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Like => "LIKE",
            Op::ILike => "ILIKE",
            Op::RLike => "RLIKE",
            Op::In => "IN",
            Op::NotIn => "NOT IN",
            Op::IsNull => "IS NULL",
            Op::IsNotNull => "IS NOT NULL",
        }
    }
}

/// Parses one `order_by` item: `metrics.acc DESC`, `attributes.start_time`, `params.lr ASC`.
pub fn parse_order_by(text: &str) -> Result<OrderBy, String> {
    parse_order_by_of(Subject::Runs, text)
}

/// Parses one `order_by` item of a search over `subject`. Traces order by their attributes
/// (`timestamp_ms DESC`, `execution_time_ms`, `status`, `request_id`) and `experiment_id`.
pub fn parse_order_by_of(subject: Subject, text: &str) -> Result<OrderBy, String> {
    let tokens = tokenize(text)?;
    let (ident, direction) = match tokens.as_slice() {
        [Token::Ident(i)] => (i, None),
        [Token::Ident(i), Token::Ident(d)] => (i, Some(d.to_ascii_uppercase())),
        _ => return Err(format!("Invalid order_by clause '{text}'")),
    };
    let (entity, key) = match (subject, ident.rsplit('.').next()) {
        (Subject::Traces, Some("experiment_id")) => (Entity::Attribute, "experiment_id".into()),
        _ => identifier(subject, ident)?,
    };
    if subject == Subject::Traces && entity != Entity::Attribute {
        return Err(format!(
            "Invalid order_by entity '{ident}': traces are ordered by their attributes"
        ));
    }
    let ascending = match direction.as_deref() {
        None | Some("ASC") => true,
        Some("DESC") => false,
        Some(other) => {
            return Err(format!(
                "Invalid ordering key in order_by clause '{text}': {other}"
            ));
        }
    };
    Ok(OrderBy {
        entity,
        key,
        ascending,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_into_clauses() {
        let c = parse_filter(
            "metrics.acc > 0.9 and params.lr = '0.01' AND tags.\"team name\" LIKE 'ml%' and attributes.status IN ('FINISHED', 'RUNNING') and metrics.`val loss` <= -1e-3",
        )
        .unwrap();
        assert_eq!(c.len(), 5);
        assert_eq!(
            c[0],
            Clause {
                entity: Entity::Metric,
                key: "acc".into(),
                op: Op::Gt,
                value: Value::Num(0.9)
            }
        );
        assert_eq!(c[1].key, "lr");
        assert_eq!(c[2].key, "team name");
        assert_eq!(c[2].op, Op::Like);
        assert_eq!(
            c[3].value,
            Value::List(vec!["FINISHED".into(), "RUNNING".into()])
        );
        assert_eq!(
            c[4],
            Clause {
                entity: Entity::Metric,
                key: "val loss".into(),
                op: Op::Le,
                value: Value::Num(-0.001)
            }
        );
        assert_eq!(parse_filter("").unwrap(), vec![]);
        assert_eq!(parse_filter("run_name = 'x'").unwrap()[0].key, "run_name");
        assert_eq!(
            parse_filter("attributes.created > 5").unwrap()[0].key,
            "start_time"
        );
    }

    #[test]
    fn bad_filters_say_what_is_wrong() {
        for (filter, says) in [
            ("metrics.acc > 'high'", "Expected numeric value"),
            ("params.lr > 1", "Invalid comparator"),
            ("params.lr = 1", "must be a quoted string"),
            ("foo.bar = 'x'", "Invalid entity type"),
            ("attributes.color = 'x'", "Invalid attribute key"),
            ("metrics.a > 1 or metrics.b > 2", "OR is not supported"),
            ("metrics.a ~ 1", "Invalid comparator"),
            ("tags.x = 'unclosed", "unclosed quote"),
        ] {
            let e = parse_filter(filter).unwrap_err();
            assert!(e.contains(says), "{filter}: {e}");
        }
    }

    #[test]
    fn trace_filters_name_attributes_tags_metadata_and_spans() {
        let c = parse_filter_of(
            Subject::Traces,
            "trace.status = 'OK' AND timestamp > 5 and name = 'predict' and run_id = 'r1' \
             and tags.team IS NOT NULL and metadata.`mlflow.user` IS NULL and span.name IN ('a', 'b') \
             and text ILIKE '%hello%' and span.attributes.`mlflow.spanType` = 'LLM' \
             and feedback.relevance >= 0.5 and expectation.answer = 'yes' and feedback.done IS NULL \
             and issue.id = 'iss-1'",
        )
        .unwrap();
        let got: Vec<(Entity, &str, Op)> =
            c.iter().map(|c| (c.entity, c.key.as_str(), c.op)).collect();
        assert_eq!(
            got,
            vec![
                (Entity::Attribute, "status", Op::Eq),
                (Entity::Attribute, "timestamp_ms", Op::Gt),
                (Entity::Tag, "mlflow.traceName", Op::Eq),
                (Entity::Metadata, "mlflow.sourceRun", Op::Eq),
                (Entity::Tag, "team", Op::IsNotNull),
                (Entity::Metadata, "mlflow.user", Op::IsNull),
                (Entity::Span, "name", Op::In),
                (Entity::Span, "content", Op::ILike),
                (Entity::Span, "attributes.mlflow.spanType", Op::Eq),
                (Entity::Feedback, "relevance", Op::Ge),
                (Entity::Expectation, "answer", Op::Eq),
                (Entity::Feedback, "done", Op::IsNull),
                (Entity::Issue, "id", Op::Eq),
            ]
        );
        for (filter, says) in [
            ("span.color = 'x'", "Invalid span attribute"),
            ("trace.timestamp_ms > 'x'", "Expected numeric value"),
            ("span.content = 'x'", "Invalid comparator"),
            ("metrics.acc > 1", "Invalid identifier type"),
            ("tags.x IS SOMETHING", "IS NULL or IS NOT NULL"),
            ("span.attributes. = 'x'", "cannot be empty"),
            ("feedback.score > 'high'", "Expected a numeric value"),
            ("feedback.score LIKE 5", "quoted string"),
            ("expectation.answer IN ('a')", "Invalid comparator 'IN'"),
            ("issue.name = 'x'", "Invalid issue attribute 'name'"),
            ("issue.id != 'x'", "comparator '!=' not one of"),
            ("issue.id = 5", "quoted string"),
            ("span.content RLIKE 'x'", "Invalid comparator"),
            ("trace.timestamp_ms RLIKE '1'", "Invalid comparator"),
            ("issue.id RLIKE 'x'", "comparator 'RLIKE' not one of"),
            ("feedback.score RLIKE 5", "quoted string"),
        ] {
            let e = parse_filter_of(Subject::Traces, filter).unwrap_err();
            assert!(e.contains(says), "{filter}: {e}");
        }
        // RLIKE where MLflow 3 has it: tags, metadata, string attributes, spans'
        // names/types/statuses/attributes, assessments' values. Runs have none.
        let rlike = parse_filter_of(
            Subject::Traces,
            "trace.name RLIKE '^Gen' AND tags.env rlike 'us-(east|west)' AND metadata.v RLIKE 'v[0-9]+' \
             AND trace.status RLIKE 'O.' AND span.name RLIKE '^llm\\.' AND span.attributes.k RLIKE 'x' \
             AND feedback.comment RLIKE 'Great.*helpful' AND expectation.answer RLIKE 'y'",
        )
        .unwrap();
        assert!(rlike.iter().all(|c| c.op == Op::RLike), "{rlike:?}");
        assert_eq!(rlike[0].key, "mlflow.traceName");
        assert_eq!(rlike[4].value, Value::Str("^llm\\.".into()));
        assert!(parse_filter("tags.x RLIKE 'y'").is_err());
        assert_eq!(
            parse_order_by_of(Subject::Traces, "timestamp DESC").unwrap(),
            OrderBy {
                entity: Entity::Attribute,
                key: "timestamp_ms".into(),
                ascending: false
            }
        );
        assert!(parse_order_by_of(Subject::Traces, "tags.x").is_err());
    }

    #[test]
    fn order_by_items() {
        assert_eq!(
            parse_order_by("metrics.acc DESC").unwrap(),
            OrderBy {
                entity: Entity::Metric,
                key: "acc".into(),
                ascending: false
            }
        );
        assert_eq!(parse_order_by("start_time").unwrap().key, "start_time");
        assert!(parse_order_by("metrics.acc SIDEWAYS").is_err());
    }
}
