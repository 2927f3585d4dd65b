//! How the CLI prints results: `-o table` (the default for lists), `yaml` (the default for a
//! single resource), `json` or `tsv`, after `--query` (JMESPath, as `az` applies it) when given.
//! Scripts written for `az ml` (`--query name -o tsv`) work unchanged.

use saphyr::{Mapping, Scalar, Yaml, YamlEmitter};
use serde_json::Value as Json;
use std::borrow::Cow;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
    /// Tab-separated values, one line per item, as `az -o tsv` prints them.
    Tsv,
}

/// `-q`: no notes or warnings on stderr.
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, std::sync::atomic::Ordering::Relaxed);
}

/// Prints a warning on stderr unless `-q` was given.
pub fn warn(line: &str) {
    if !QUIET.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!("{line}");
    }
}

/// The `--query` given for this run of the CLI, and whether `-o` was given with it.
static QUERY: std::sync::OnceLock<(String, bool)> = std::sync::OnceLock::new();

/// Records `--query` once at start-up, refusing an expression that does not compile.
pub fn set_query(query: Option<&str>, format_given: bool) -> anyhow::Result<()> {
    if let Some(q) = query {
        jmespath::compile(q).map_err(|e| anyhow::anyhow!("--query {q:?}: {e}"))?;
        let _ = QUERY.set((q.to_string(), format_given));
    }
    Ok(())
}

/// The value with `--query` applied, and the format to print it in (JSON unless `-o` was
/// given, as `az` does). `None` without a query.
fn queried(format: Format, value: &Json) -> Option<(Format, Json)> {
    let (query, format_given) = QUERY.get()?;
    let expr = jmespath::compile(query).expect("compiled at start-up");
    let result = match expr.search(value) {
        Ok(r) => serde_json::to_value(&*r).unwrap_or(Json::Null),
        Err(e) => {
            eprintln!("--query {query:?}: {e}");
            Json::Null
        }
    };
    Some((if *format_given { format } else { Format::Json }, result))
}

/// Prints any value (a query's result) in `format`.
fn print_value(format: Format, value: &Json) {
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        ),
        Format::Yaml => print!("{}", to_yaml(value)),
        Format::Tsv => print!("{}", tsv(value)),
        Format::Table => match value {
            Json::Array(items) if items.iter().all(Json::is_object) && !items.is_empty() => {
                let columns: Vec<&str> = items[0]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, _)| k.as_str())
                    .collect();
                print_list(Format::Table, items, &columns)
            }
            Json::Object(_) => print_one(Format::Table, value),
            other => print!("{}", tsv(other)),
        },
    }
}

/// `az`'s TSV: a list is one line per item; an object's scalar values, or a list's items, are
/// joined by tabs; strings are printed raw, booleans as `True`/`False`, null as nothing.
pub fn tsv(value: &Json) -> String {
    fn scalar(v: &Json) -> Option<String> {
        match v {
            Json::Null => Some(String::new()),
            Json::Bool(b) => Some(if *b { "True" } else { "False" }.into()),
            Json::String(s) => Some(s.clone()),
            Json::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
    fn row(v: &Json) -> String {
        match v {
            Json::Object(map) => map
                .values()
                .filter_map(scalar)
                .collect::<Vec<_>>()
                .join("\t"),
            Json::Array(items) => items
                .iter()
                .filter_map(scalar)
                .collect::<Vec<_>>()
                .join("\t"),
            other => scalar(other).unwrap_or_default(),
        }
    }
    let rows: Vec<String> = match value {
        Json::Array(items) => items.iter().map(row).collect(),
        other => vec![row(other)],
    };
    rows.iter().map(|r| format!("{r}\n")).collect()
}

pub fn to_yaml(value: &Json) -> String {
    fn convert(v: &Json) -> Yaml<'_> {
        match v {
            Json::Null => Yaml::Value(Scalar::Null),
            Json::Bool(b) => Yaml::Value(Scalar::Boolean(*b)),
            Json::Number(n) => match n.as_i64() {
                Some(i) => Yaml::Value(Scalar::Integer(i)),
                None => Yaml::Value(Scalar::FloatingPoint(n.as_f64().unwrap_or(f64::NAN).into())),
            },
            Json::String(s) => Yaml::Value(Scalar::String(Cow::Borrowed(s))),
            Json::Array(items) => Yaml::Sequence(items.iter().map(convert).collect()),
            Json::Object(map) => {
                let mut out = Mapping::new();
                for (k, v) in map {
                    out.insert(Yaml::Value(Scalar::String(Cow::Borrowed(k))), convert(v));
                }
                Yaml::Mapping(out)
            }
        }
    }
    let mut text = String::new();
    let yaml = convert(value);
    let mut emitter = YamlEmitter::new(&mut text);
    emitter.multiline(true);
    emitter
        .dump(&yaml)
        .expect("writing YAML to a string cannot fail");
    let text = text.strip_prefix("---\n").unwrap_or(&text).to_string();
    if text.ends_with('\n') {
        text
    } else {
        text + "\n"
    }
}

/// Prints one object.
pub fn print_one(format: Format, value: &Json) {
    if let Some((format, result)) = queried(format, value) {
        return print_value(format, &result);
    }
    match format {
        Format::Tsv => print!("{}", tsv(value)),
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        ),
        Format::Yaml => print!("{}", to_yaml(value)),
        Format::Table => {
            let mut table = new_table();
            table.set_header(vec!["field", "value"]);
            for (k, v) in value.as_object().into_iter().flatten() {
                if k != "spec" && k != "warnings" {
                    table.add_row(vec![k.clone(), cell(v)]);
                }
            }
            println!("{table}");
        }
    }
}

/// Prints a list with the given columns in table form (every field in JSON and YAML).
pub fn print_list(format: Format, items: &[Json], columns: &[&str]) {
    if let Some((format, result)) = queried(format, &Json::Array(items.to_vec())) {
        return print_value(format, &result);
    }
    match format {
        Format::Tsv => print!("{}", tsv(&Json::Array(items.to_vec()))),
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(items).unwrap_or_default()
        ),
        Format::Yaml => print!("{}", to_yaml(&Json::Array(items.to_vec()))),
        Format::Table => {
            let mut table = new_table();
            table.set_header(columns.to_vec());
            for item in items {
                table.add_row(
                    columns
                        .iter()
                        .map(|c| cell(lookup(item, c)))
                        .collect::<Vec<_>>(),
                );
            }
            println!("{table}");
        }
    }
}

fn lookup<'a>(item: &'a Json, dotted: &str) -> &'a Json {
    dotted
        .split('.')
        .fold(item, |v, k| match (v, k.parse::<usize>()) {
            (Json::Array(items), Ok(i)) => items.get(i).unwrap_or(&Json::Null),
            _ => v.get(k).unwrap_or(&Json::Null),
        })
}

fn cell(v: &Json) -> String {
    match v {
        Json::Null => String::new(),
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn new_table() -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::NOTHING);
    table
}

#[cfg(test)]
mod tests {
    use super::tsv;
    use serde_json::json;

    #[test]
    fn tsv_prints_as_az_does() {
        assert_eq!(tsv(&json!("job_1")), "job_1\n");
        assert_eq!(tsv(&json!(["a", "b"])), "a\nb\n");
        assert_eq!(tsv(&json!([["a", 1], ["b", 2]])), "a\t1\nb\t2\n");
        assert_eq!(
            tsv(&json!({"name": "x", "ok": true, "n": null, "nested": {"k": 1}})),
            "x\tTrue\t\n"
        );
    }
}
