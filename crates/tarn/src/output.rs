//! How the CLI prints results: `-o table` (the default for lists), `yaml` (the default for a
//! single resource) or `json`.

use saphyr::{Mapping, Scalar, Yaml, YamlEmitter};
use serde_json::Value as Json;
use std::borrow::Cow;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
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
    match format {
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
    match format {
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
        .fold(item, |v, k| v.get(k).unwrap_or(&Json::Null))
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
