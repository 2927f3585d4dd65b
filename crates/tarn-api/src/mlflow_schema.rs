//! MLflow's request schemas: for each call, the fields MLflow's server checks, in the order it
//! checks them, with its messages (`mlflow.server.handlers._validate_request_json_with_schema`).
//! A request is checked against its schema before the call runs, so a bad request is refused in
//! MLflow's words and nothing is written. The handlers then read fields they know are well typed.

use serde_json::{Map, Value};

/// A field's type, as MLflow asserts it.
#[derive(Clone, Copy, PartialEq)]
enum Ty {
    Str,
    /// `int(x)` succeeds: a number, or a string of digits.
    Int,
    /// `float(x)` succeeds.
    Float,
    Bool,
    Array,
    /// An array of strings.
    Strings,
}

struct Field {
    name: &'static str,
    ty: Ty,
    required: bool,
    /// The most an integer may be (`max_results`).
    at_most: Option<i64>,
}

const fn opt(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        required: false,
        at_most: None,
    }
}

const fn req(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        required: true,
        at_most: None,
    }
}

const fn max_results(limit: i64) -> Field {
    Field {
        name: "max_results",
        ty: Ty::Int,
        required: false,
        at_most: Some(limit),
    }
}

use Ty::*;

/// The schema of a call, by its path after `/mlflow/` and its method.
fn schema(post: bool, rpc: &str) -> Vec<Field> {
    match rpc {
        "experiments/create" => vec![
            req("name", Str),
            opt("artifact_location", Str),
            opt("tags", Array),
        ],
        "experiments/update" => vec![req("experiment_id", Str), req("new_name", Str)],
        "experiments/search" => vec![
            max_results(i64::MAX),
            opt("order_by", Array),
            opt("filter", Str),
            opt("page_token", Str),
        ],
        "experiments/set-experiment-tag" => vec![
            req("experiment_id", Str),
            req("key", Str),
            opt("value", Str),
        ],
        "experiments/delete-experiment-tag" => vec![req("experiment_id", Str), req("key", Str)],
        "runs/create" => vec![
            opt("experiment_id", Str),
            opt("start_time", Int),
            opt("run_name", Str),
        ],
        "runs/update" => vec![
            req("run_id", Str),
            opt("end_time", Int),
            opt("status", Str),
            opt("run_name", Str),
        ],
        "runs/log-metric" => vec![
            req("run_id", Str),
            req("key", Str),
            req("value", Float),
            req("timestamp", Int),
            opt("step", Int),
            opt("model_id", Str),
            opt("dataset_name", Str),
            opt("dataset_digest", Str),
        ],
        "runs/log-parameter" | "runs/set-tag" => {
            vec![req("run_id", Str), req("key", Str), opt("value", Str)]
        }
        "runs/delete-tag" => vec![req("run_id", Str), req("key", Str)],
        "runs/log-batch" => vec![
            req("run_id", Str),
            opt("metrics", Array),
            opt("params", Array),
            opt("tags", Array),
        ],
        "runs/log-inputs" => vec![
            req("run_id", Str),
            opt("datasets", Array),
            opt("models", Array),
        ],
        "runs/outputs" => vec![req("run_id", Str), req("models", Array)],
        "runs/search" => vec![
            opt("experiment_ids", Array),
            opt("filter", Str),
            max_results(50_000),
            opt("order_by", Strings),
        ],
        "artifacts/list" => vec![req("run_id", Str), opt("path", Str), opt("page_token", Str)],
        "metrics/get-history" => vec![
            req("run_id", Str),
            req("metric_key", Str),
            opt("page_token", Str),
        ],
        "metrics/get-history-bulk-interval" => vec![
            req("run_ids", Strings),
            req("metric_key", Str),
            opt("start_step", Int),
            opt("end_step", Int),
            opt("max_results", Int),
        ],
        "registered-models/create" => vec![
            req("name", Str),
            opt("tags", Array),
            opt("description", Str),
        ],
        "registered-models/update" => vec![req("name", Str), opt("description", Str)],
        "registered-models/rename" => vec![req("name", Str), req("new_name", Str)],
        "registered-models/search" => vec![
            opt("filter", Str),
            max_results(1_000),
            opt("order_by", Strings),
            opt("page_token", Str),
        ],
        "registered-models/get-latest-versions" => vec![req("name", Str), opt("stages", Strings)],
        "registered-models/set-tag" => vec![req("name", Str), req("key", Str), opt("value", Str)],
        "registered-models/delete-tag" => vec![req("name", Str), req("key", Str)],
        "registered-models/alias" if post => {
            vec![req("name", Str), req("alias", Str), req("version", Str)]
        }
        "registered-models/alias" => vec![req("name", Str), req("alias", Str)],
        "model-versions/create" => vec![
            req("name", Str),
            req("source", Str),
            opt("run_id", Str),
            opt("tags", Array),
            opt("run_link", Str),
            opt("description", Str),
            opt("model_id", Str),
        ],
        "model-versions/get" | "model-versions/delete" | "model-versions/get-download-uri" => {
            vec![req("name", Str), req("version", Str)]
        }
        "model-versions/update" => vec![
            req("name", Str),
            req("version", Str),
            opt("description", Str),
        ],
        "model-versions/transition-stage" => vec![
            req("name", Str),
            req("version", Str),
            req("stage", Str),
            opt("archive_existing_versions", Bool),
        ],
        "model-versions/search" => vec![
            opt("filter", Str),
            max_results(200_000),
            opt("order_by", Strings),
            opt("page_token", Str),
        ],
        "model-versions/set-tag" => vec![
            req("name", Str),
            req("version", Str),
            req("key", Str),
            opt("value", Str),
        ],
        "model-versions/delete-tag" => vec![req("name", Str), req("version", Str), req("key", Str)],
        "logged-models" if post => vec![
            req("experiment_id", Str),
            opt("name", Str),
            opt("model_type", Str),
            opt("source_run_id", Str),
            opt("params", Array),
            opt("tags", Array),
        ],
        "logged-models/search" => vec![
            req("experiment_ids", Strings),
            opt("filter", Str),
            opt("datasets", Array),
            opt("max_results", Int),
            opt("order_by", Array),
            opt("page_token", Str),
        ],
        _ => vec![],
    }
}

/// MLflow's words for a missing required field (`path` as MLflow writes it: `metrics[0].key`).
pub(crate) fn missing(path: &str) -> String {
    format!(
        "Missing value for required parameter '{path}'. See the API docs for more information about request parameters."
    )
}

/// MLflow's words for a value of the wrong type.
pub(crate) fn invalid_value(path: &str, value: &Value) -> String {
    let python_type = match value {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    };
    format!(
        "Invalid value {value} for parameter '{path}' supplied:  Hint: Value was of type '{python_type}'. See the API docs for more information about request parameters."
    )
}

fn type_ok(ty: Ty, v: &Value, from_query: bool) -> bool {
    match (ty, v) {
        (Str, Value::String(_)) => true,
        (Int, Value::Number(n)) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(f64::is_finite)
        }
        (Int, Value::Bool(_)) => true,
        (Int, Value::String(s)) => s.trim().parse::<i64>().is_ok(),
        (Float, Value::Number(_)) => true,
        (Float, Value::String(s)) => {
            let s = s.trim().to_ascii_lowercase();
            s.parse::<f64>().is_ok()
                || ["nan", "inf", "-inf", "infinity", "-infinity"].contains(&s.as_str())
        }
        (Bool, Value::Bool(_)) => true,
        (Bool, Value::String(s)) if from_query => s == "true" || s == "false",
        (Array, Value::Array(_)) => true,
        (Strings, Value::Array(items)) => items.iter().all(Value::is_string),
        // A query string cannot say "list": a single value is a list of one.
        (Array | Strings, Value::String(_)) if from_query => true,
        _ => false,
    }
}

/// Checks a request's arguments against its call's schema, in MLflow's order.
pub fn check(
    post: bool,
    rpc: &str,
    args: &Map<String, Value>,
    from_query: bool,
) -> Result<(), String> {
    for field in schema(post, rpc) {
        let mut value = args.get(field.name).unwrap_or(&Value::Null);
        if field.name == "run_id" && value.is_null() {
            value = args.get("run_uuid").unwrap_or(&Value::Null);
        }
        let absent = value.is_null() || value.as_str() == Some("");
        if absent {
            if field.required {
                return Err(missing(field.name));
            }
            continue;
        }
        if !type_ok(field.ty, value, from_query) {
            return Err(invalid_value(field.name, value));
        }
        if let Some(limit) = field.at_most {
            let n = value
                .as_i64()
                .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()));
            if n.is_some_and(|n| n > limit) {
                return Err(invalid_value(field.name, value));
            }
        }
    }
    if rpc == "runs/log-batch" {
        check_batch_items(args)?;
    }
    Ok(())
}

/// `log-batch`'s items must name their fields: every metric its key, value and timestamp,
/// every param and tag its key.
fn check_batch_items(args: &Map<String, Value>) -> Result<(), String> {
    let lists: [(&str, &[&str]); 3] = [
        ("metrics", &["key", "value", "timestamp"]),
        ("params", &["key"]),
        ("tags", &["key"]),
    ];
    for (list, fields) in lists {
        let Some(Value::Array(items)) = args.get(list) else {
            continue;
        };
        for (i, item) in items.iter().enumerate() {
            for field in fields {
                let v = item.get(field).unwrap_or(&Value::Null);
                if v.is_null() || v.as_str() == Some("") {
                    return Err(missing(&format!("{list}[{i}].{field}")));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn fields_are_checked_in_mlflows_order_with_its_words() {
        let e = check(
            true,
            "runs/log-parameter",
            &args(json!({"run_id": 31, "key": "k", "value": 41})),
            false,
        )
        .unwrap_err();
        assert!(
            e.starts_with("Invalid value 31 for parameter 'run_id' supplied"),
            "{e}"
        );
        let e = check(
            true,
            "runs/log-metric",
            &args(json!({"run_id": "r", "key": "k", "value": 1, "timestamp": "foo"})),
            false,
        )
        .unwrap_err();
        assert!(
            e.contains("Invalid value \"foo\" for parameter 'timestamp' supplied"),
            "{e}"
        );
        let e = check(true, "experiments/create", &args(json!({})), false).unwrap_err();
        assert!(
            e.starts_with("Missing value for required parameter 'name'."),
            "{e}"
        );
        let e = check(
            true,
            "runs/log-batch",
            &args(json!({"run_id": "r", "metrics": [{"key": "a", "value": 1}]})),
            false,
        )
        .unwrap_err();
        assert!(
            e.starts_with("Missing value for required parameter 'metrics[0].timestamp'"),
            "{e}"
        );
        assert!(
            check(
                true,
                "runs/log-batch",
                &args(json!({"run_uuid": "r", "tags": "x"})),
                false
            )
            .is_err()
        );
    }

    #[test]
    fn query_strings_carry_lists_and_numbers_as_text() {
        let a = args(json!({"run_id": "r", "metric_key": "m"}));
        assert!(check(false, "metrics/get-history", &a, true).is_ok());
        let a = args(json!({"filter": "", "max_results": "100", "order_by": "name"}));
        assert!(check(false, "registered-models/search", &a, true).is_ok());
        let a = args(json!({"max_results": "1001"}));
        assert!(check(false, "registered-models/search", &a, true).is_err());
    }
}
