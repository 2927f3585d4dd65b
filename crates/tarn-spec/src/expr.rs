//! The one parser for Azure ML expressions inside strings: `${{inputs.x}}` references and
//! `$[[ … ]]` optional segments. Validation uses it to check references against what a document
//! declares; the job runner will use the same segments to substitute values.

/// A piece of a string that may hold expressions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Text(String),
    /// `${{a.b.c}}`, split at the dots.
    Ref(Vec<String>),
    /// `$[[ … ]]`: dropped as a whole when a reference inside it has no value.
    Optional(Vec<Segment>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    #[error("`${{{{` at offset {0} is never closed with `}}}}`")]
    UnclosedRef(usize),
    #[error("`$[[` at offset {0} is never closed with `]]`")]
    UnclosedOptional(usize),
    #[error("`$[[` cannot be nested inside another `$[[ … ]]`")]
    NestedOptional,
    #[error(
        "`${{{{{0}}}}}` is not a valid reference: use dotted names such as `inputs.learning_rate`"
    )]
    BadRef(String),
    #[error("an optional segment `$[[{0}]]` must contain a `${{{{inputs.…}}}}` reference")]
    EmptyOptional(String),
}

/// Splits `text` into segments.
pub fn parse(text: &str) -> Result<Vec<Segment>, ExprError> {
    parse_inner(text, 0, false)
}

fn parse_inner(text: &str, base: usize, in_optional: bool) -> Result<Vec<Segment>, ExprError> {
    let mut out = Vec::new();
    let mut rest = text;
    let mut offset = base;
    loop {
        let next_ref = rest.find("${{");
        let next_opt = rest.find("$[[");
        let (at, is_ref) = match (next_ref, next_opt) {
            (None, None) => break,
            (Some(r), None) => (r, true),
            (None, Some(o)) => (o, false),
            (Some(r), Some(o)) => {
                if r < o {
                    (r, true)
                } else {
                    (o, false)
                }
            }
        };
        if at > 0 {
            out.push(Segment::Text(rest[..at].to_string()));
        }
        let body_start = at + 3;
        if is_ref {
            let len = rest[body_start..]
                .find("}}")
                .ok_or(ExprError::UnclosedRef(offset + at))?;
            let body = rest[body_start..body_start + len].trim();
            out.push(Segment::Ref(parse_path(body)?));
            rest = &rest[body_start + len + 2..];
            offset += body_start + len + 2;
        } else {
            if in_optional {
                return Err(ExprError::NestedOptional);
            }
            let len = rest[body_start..]
                .find("]]")
                .ok_or(ExprError::UnclosedOptional(offset + at))?;
            let body = &rest[body_start..body_start + len];
            let inner = parse_inner(body, offset + body_start, true)?;
            if !inner.iter().any(|s| matches!(s, Segment::Ref(_))) {
                return Err(ExprError::EmptyOptional(body.to_string()));
            }
            out.push(Segment::Optional(inner));
            rest = &rest[body_start + len + 2..];
            offset += body_start + len + 2;
        }
    }
    if !rest.is_empty() {
        out.push(Segment::Text(rest.to_string()));
    }
    Ok(out)
}

fn parse_path(body: &str) -> Result<Vec<String>, ExprError> {
    let parts: Vec<String> = body.split('.').map(str::to_string).collect();
    let valid = parts.iter().all(|p| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    });
    if valid {
        Ok(parts)
    } else {
        Err(ExprError::BadRef(body.to_string()))
    }
}

/// Every reference in `segments`, optional ones included, in order.
pub fn refs(segments: &[Segment]) -> Vec<&[String]> {
    let mut out = Vec::new();
    for segment in segments {
        match segment {
            Segment::Text(_) => {}
            Segment::Ref(path) => out.push(path.as_slice()),
            Segment::Optional(inner) => out.extend(refs(inner)),
        }
    }
    out
}

/// Renders segments with values from `lookup`. Every substituted value is shell-quoted, so no
/// input value can change the command's meaning. An optional segment is dropped whole when any
/// reference in it has no value; a required reference without a value is an error.
pub fn render(
    segments: &[Segment],
    lookup: &dyn Fn(&[String]) -> Option<String>,
) -> Result<String, RenderError> {
    let mut out = String::new();
    for segment in segments {
        match segment {
            Segment::Text(t) => out.push_str(t),
            Segment::Ref(path) => {
                let value = lookup(path).ok_or_else(|| RenderError::Missing(path.join(".")))?;
                out.push_str(&shell_quote(&value));
            }
            Segment::Optional(inner) => {
                if refs(inner).iter().all(|r| lookup(r).is_some()) {
                    out.push_str(&render(inner, lookup)?);
                }
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("`${{{{{0}}}}}` has no value")]
    Missing(String),
}

/// Quotes a value for a POSIX shell: plain words stay as they are, anything else goes in
/// single quotes (with embedded single quotes closed, escaped and reopened).
pub fn shell_quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=,+@%".contains(c));
    if plain {
        return value.to_string();
    }
    format!("'{}'", value.replace('\'', "'\"'\"'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendering_substitutes_quotes_and_drops_unset_optionals() {
        let values = |p: &[String]| match p.join(".").as_str() {
            "inputs.lr" => Some("0.01".to_string()),
            "inputs.name" => Some("it's; rm -rf /".to_string()),
            "outputs.model" => Some("/tmp/out dir".to_string()),
            _ => None,
        };
        let cases: &[(&str, &str)] = &[
            ("python t.py --lr ${{inputs.lr}}", "python t.py --lr 0.01"),
            ("echo ${{inputs.name}}", "echo 'it'\"'\"'s; rm -rf /'"),
            ("cp x ${{outputs.model}}", "cp x '/tmp/out dir'"),
            (
                "run $[[--seed ${{inputs.seed}}]] --lr ${{inputs.lr}}",
                "run  --lr 0.01",
            ),
            ("run $[[--lr ${{inputs.lr}}]]", "run --lr 0.01"),
        ];
        for (text, expected) in cases {
            assert_eq!(
                render(&parse(text).unwrap(), &values).unwrap(),
                *expected,
                "{text}"
            );
        }
        assert_eq!(
            render(&parse("x ${{inputs.seed}}").unwrap(), &values),
            Err(RenderError::Missing("inputs.seed".into()))
        );
    }

    fn r(path: &str) -> Segment {
        Segment::Ref(path.split('.').map(str::to_string).collect())
    }

    #[test]
    fn parses_references_and_optional_segments() {
        let cases: &[(&str, Vec<Segment>)] = &[
            (
                "python train.py",
                vec![Segment::Text("python train.py".into())],
            ),
            (
                "python t.py --lr ${{inputs.lr}}",
                vec![Segment::Text("python t.py --lr ".into()), r("inputs.lr")],
            ),
            (
                "${{ inputs.a }}${{outputs.b}}",
                vec![r("inputs.a"), r("outputs.b")],
            ),
            (
                "x $[[--seed ${{inputs.seed}}]] y",
                vec![
                    Segment::Text("x ".into()),
                    Segment::Optional(vec![Segment::Text("--seed ".into()), r("inputs.seed")]),
                    Segment::Text(" y".into()),
                ],
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(&parse(text).unwrap(), expected, "{text}");
        }
    }

    #[test]
    fn rejects_malformed_expressions() {
        let cases: &[(&str, ExprError)] = &[
            ("a ${{inputs.x", ExprError::UnclosedRef(2)),
            ("$[[ --x ${{inputs.x}}", ExprError::UnclosedOptional(0)),
            ("${{inputs x}}", ExprError::BadRef("inputs x".into())),
            ("${{inputs..x}}", ExprError::BadRef("inputs..x".into())),
            ("$[[ --flag ]]", ExprError::EmptyOptional(" --flag ".into())),
        ];
        for (text, expected) in cases {
            assert_eq!(&parse(text).unwrap_err(), expected, "{text}");
        }
    }
}
