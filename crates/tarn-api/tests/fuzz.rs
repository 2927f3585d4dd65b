//! The request bodies the API reads itself, fuzzed (see `tests/fuzz/engine.rs`): the bundle
//! format that carries many small files, and MLflow's JSON bodies — the schema check every
//! call goes through, and the fast reader of `log-batch`, which must never take a body the
//! schema refuses.

#[path = "../../../tests/fuzz/engine.rs"]
mod engine;

use bytes::BytesMut;
use tarn_api::bundle::{self, EntryHeader};
use tarn_api::mlflow_schema;

#[test]
fn bundles() {
    let mut seeds = vec![];
    for files in [
        vec![("a.txt", b"hello".to_vec())],
        vec![("dir/b.bin", vec![0u8; 100]), ("c", vec![])],
        vec![
            ("x/y/z.json", br#"{"k": 1}"#.to_vec()),
            ("w", b"w".to_vec()),
        ],
    ] {
        let mut out = BytesMut::new();
        for (path, data) in files {
            let header = EntryHeader {
                path: path.into(),
                size: data.len() as u64,
                sha256: None,
            };
            bundle::put_entry(&mut out, &header, &data);
        }
        bundle::finish(&mut out);
        seeds.push(out.to_vec());
    }
    engine::fuzz(
        "bundle",
        seeds,
        &[
            b"../",
            b"/",
            b"\0",
            b"\xff\xff\xff\xff",
            b"{",
            b"\"path\"",
            b"\"size\"",
        ],
        |input| match bundle::parse(input) {
            Ok(entries) => {
                for (header, data) in &entries {
                    assert_eq!(
                        header.size,
                        data.len() as u64,
                        "an entry's size is its data's"
                    );
                }
                format!("ok {}", entries.len().min(3))
            }
            Err(e) => e.0,
        },
    );
}

const RPCS: &[&str] = &[
    "experiments/create",
    "experiments/search",
    "runs/create",
    "runs/update",
    "runs/log-metric",
    "runs/log-batch",
    "runs/log-inputs",
    "runs/search",
    "metrics/get-history",
    "metrics/get-history-bulk-interval",
    "registered-models/create",
    "registered-models/search",
    "model-versions/create",
    "model-versions/transition-stage",
    "model-versions/search",
    "logged-models",
    "logged-models/search",
];

#[test]
fn mlflow_bodies() {
    let seeds = [
        r#"{"run_id": "0123456789abcdef0123456789abcdef", "metrics": [{"key": "loss", "value": 0.5, "timestamp": 1700000000000, "step": 3}], "params": [{"key": "lr", "value": "0.1"}], "tags": [{"key": "t", "value": "v"}]}"#,
        r#"{"run_id": "r", "metrics": [{"key": "acc", "value": "NaN", "timestamp": "1", "step": "2", "model_id": "m-1", "dataset_name": "d", "dataset_digest": "x"}]}"#,
        r#"{"experiment_ids": ["0", "1"], "filter": "metrics.acc > 0.5", "max_results": 100, "order_by": ["metrics.acc DESC"], "page_token": "abc"}"#,
        r#"{"name": "model", "tags": [{"key": "a", "value": "b"}], "description": "d"}"#,
        r#"{"name": "m", "version": "1", "stage": "Production", "archive_existing_versions": true}"#,
        r#"{"experiment_id": "0", "run_name": "r", "start_time": 1, "tags": []}"#,
        r#"{"run_id": "r", "datasets": [{"dataset": {"name": "d", "digest": "x", "source_type": "local", "source": "{}"}, "tags": []}]}"#,
    ];
    engine::fuzz(
        "mlflow_bodies",
        seeds.iter().map(|s| s.as_bytes().to_vec()).collect(),
        &[
            b"null",
            b"[]",
            b"{}",
            b"\"\"",
            b"1e400",
            b"-1",
            b"true",
            b"\"\\u0000\"",
            b"\"\\ud800\"",
            b",",
            b":",
            b"[[[[[[",
            b"]]]]]]",
            b"\"metrics\"",
            b"\"key\"",
            b"\"value\"",
            b"\"step\"",
        ],
        |input| {
            let fast = tarn_api::mlflow::fast_log_batch_reads(input);
            // Only bodies the general path reads are compared: in fields it does not read, the
            // fast reader skips what MLflow's Python also takes (1e999 as infinity, a lone
            // surrogate) and serde_json's `Value` refuses.
            let Ok(serde_json::Value::Object(args)) = serde_json::from_slice(input) else {
                return format!("{fast} not an object");
            };
            let schema_ok = mlflow_schema::check(true, "runs/log-batch", &args, false).is_ok();
            assert!(
                !fast || schema_ok,
                "the fast reader took a log-batch body MLflow's schema refuses"
            );
            let mut outcome = String::new();
            for rpc in RPCS {
                for post in [true, false] {
                    if let Err(e) = mlflow_schema::check(post, rpc, &args, !post) {
                        outcome = e;
                    }
                }
            }
            format!("{fast} {outcome}")
        },
    );
}
