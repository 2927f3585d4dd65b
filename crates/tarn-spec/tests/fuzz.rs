//! The parsers that take user input, fuzzed (see `tests/fuzz/engine.rs` for how and why not
//! coverage-guided): Azure ML YAML files, `--set` overrides, `${{…}}` expressions, MLflow's
//! search grammar and cron expressions. None may panic; each finding must say something.

#[path = "../../../tests/fuzz/engine.rs"]
mod engine;

use std::path::Path;
use tarn_spec::{Kind, Node, apply_set, expr, mlflow_search, validate_yaml};

fn text(input: &[u8]) -> String {
    String::from_utf8_lossy(input).into_owned()
}

/// The first finding's message, which must not be empty.
fn outcome<T>(result: Result<T, Vec<tarn_spec::Diagnostic>>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(findings) => {
            let first = findings.first().expect("an error lists its findings");
            assert!(!first.message.is_empty(), "a finding without a message");
            first.message.clone()
        }
    }
}

#[test]
fn yaml_specs() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/corpus");
    let seeds = engine::files_under(&corpus, &["yml", "yaml"]);
    engine::fuzz(
        "yaml",
        seeds,
        &[
            b": ",
            b"\n  ",
            b"\n- ",
            b"- ",
            b"{",
            b"}",
            b"[",
            b"]",
            b", ",
            b"&a ",
            b"*a",
            b"<<: *a\n",
            b"!!binary ",
            b"~",
            b"'",
            b"\"",
            b"${{inputs.x}}",
            b"$[[",
            b"]]",
            b"azureml:",
            b"@latest",
            b"type: ",
            b"jobs:\n  a:\n    ",
            b"inputs:\n  ",
            b"\t",
            b"---\n",
            b"? ",
            b"|\n  ",
            b">-\n  ",
        ],
        |input| {
            let text = text(input);
            let kinds = Kind::ALL;
            let kind = kinds.get(input.len() % (kinds.len() + 1)).copied();
            outcome(validate_yaml(&text, kind, &[]))
        },
    );
}

#[test]
fn set_overrides() {
    let seeds = [
        "name=renamed",
        "inputs.lr=0.1",
        "jobs.train.command=echo hi",
        "resources.instance_count=2",
        "tags.team=ml",
        "environment_variables.A=\"quoted\"",
        "outputs.model.type=mlflow_model",
        "traffic={blue: 90, green: 10}",
        "a.b.c.d=[1, 2]",
    ];
    let base = "$schema: https://azuremlschemas.azureedge.net/latest/commandJob.schema.json\n\
                command: echo ${{inputs.lr}}\ninputs:\n  lr: 0.01\nenvironment: azureml:e:1\n";
    engine::fuzz(
        "set",
        seeds.iter().map(|s| s.as_bytes().to_vec()).collect(),
        &[
            b"=", b".", b"[0]", b"{", b"[", b"'", b"\"", b"..", b"\n", b"${{",
        ],
        |input| {
            let mut node = Node::from_yaml(base).unwrap();
            match apply_set(&mut node, &text(input)) {
                Ok(()) => outcome(tarn_spec::validate(&node, Some(Kind::Job))),
                Err(d) => {
                    assert!(!d.message.is_empty());
                    d.message
                }
            }
        },
    );
}

#[test]
fn expressions() {
    let seeds = [
        "python train.py --lr ${{inputs.lr}} --out ${{outputs.model}}",
        "$[[--seed ${{inputs.seed}}]] done",
        "${{parent.jobs.prep.outputs.data}}",
        "${{search_space.learning_rate}}",
        "echo $HOME ${{inputs.a}}${{inputs.b}}",
        "${{ inputs.spaced }}",
    ];
    engine::fuzz(
        "expr",
        seeds.iter().map(|s| s.as_bytes().to_vec()).collect(),
        &[
            b"${{",
            b"}}",
            b"$[[",
            b"]]",
            b".",
            b"inputs",
            b"outputs",
            b"parent.jobs.",
            b"$",
            b"{",
        ],
        |input| match expr::parse(&text(input)) {
            Ok(segments) => {
                // Rendering quotes every value; a missing required value is an error, not a panic.
                let _ = expr::render(&segments, &|path| {
                    (path.len() % 2 == 0).then(|| "v'al;ue $(x)".to_string())
                });
                format!("ok {}", expr::refs(&segments).len().min(3))
            }
            Err(e) => e.to_string(),
        },
    );
}

#[test]
fn mlflow_search() {
    let seeds = [
        "metrics.acc > 0.9 and params.lr = '0.1'",
        "tags.`mlflow.runName` LIKE '%train%'",
        "attributes.status IN ('FINISHED', 'RUNNING')",
        "attributes.start_time >= 1700000000000 AND metrics.loss < 1e-3",
        "dataset.name = 'train' and dataset.digest = 'abc'",
        "run_name ILIKE 'a%' and params.\"quoted key\" != 'x'",
        "metrics.acc DESC",
        "attributes.start_time ASC, metrics.`a b` DESC",
    ];
    engine::fuzz(
        "mlflow_search",
        seeds.iter().map(|s| s.as_bytes().to_vec()).collect(),
        &[
            b" and ",
            b" AND ",
            b" or ",
            b"metrics.",
            b"params.",
            b"tags.",
            b"attributes.",
            b"`",
            b"'",
            b"\"",
            b" IN (",
            b")",
            b" LIKE ",
            b" = ",
            b" != ",
            b" >= ",
            b"(",
            b",",
            b" DESC",
            b" ASC",
        ],
        |input| {
            let t = text(input);
            let filter = match mlflow_search::parse_filter(&t) {
                Ok(clauses) => format!("ok {}", clauses.len().min(3)),
                Err(e) => e,
            };
            let order = match mlflow_search::parse_order_by(&t) {
                Ok(_) => "ok".to_string(),
                Err(e) => e,
            };
            format!("{filter} | {order}")
        },
    );
}

#[test]
fn cron_expressions() {
    let seeds = [
        "0 * * * *",
        "*/5 1-3 * JAN-MAR MON-FRI",
        "0 0 1 * *",
        "30 2 * * 0,6",
        "15 10 ? * 6L",
        "0 0 12 * * ?",
        "59 23 31 12 7",
    ];
    engine::fuzz(
        "cron",
        seeds.iter().map(|s| s.as_bytes().to_vec()).collect(),
        &[
            b"*", b"/", b"-", b",", b" ", b"?", b"L", b"#", b"MON", b"JAN", b"60", b"0",
        ],
        |input| match tarn_spec::cron::Cron::parse(&text(input)) {
            Ok(cron) => {
                // A schedule's last fire in a window is in that window and matches it.
                let (from, until) = (1_796_000_000i64, 1_796_000_000i64 + 7_200);
                if let Some(at) = cron.last_fire(from, until) {
                    assert!(at > from && at <= until, "{at} outside ({from}, {until}]");
                    assert!(cron.matches(at), "the last fire {at} does not match");
                }
                "ok".into()
            }
            Err(e) => e,
        },
    );
}

/// Schedules' triggers (cron or recurrence, in a time zone): whatever a trigger says, its next
/// fires go forward, stay within its start and end, and each one's decision fires it once.
#[test]
fn schedule_triggers() {
    let seeds = [
        "type: cron\nexpression: \"30 2 * * *\"\ntime_zone: America/New_York\n",
        "type: cron\nexpression: \"*/20 * * * * *\"\n",
        "type: recurrence\nfrequency: day\ninterval: 2\nschedule:\n  hours: [1, 2, 3]\n  minutes: [0, 30]\ntime_zone: Pacific Standard Time\n",
        "type: recurrence\nfrequency: week\ninterval: 1\nschedule:\n  week_days: [monday, friday]\nstart_time: \"2026-03-08T01:30:00\"\n",
        "type: recurrence\nfrequency: month\ninterval: 1\nschedule:\n  month_days: [29, 30, 31]\nend_time: \"2030-01-01\"\n",
        "type: recurrence\nfrequency: minute\ninterval: 7\nstart_time: \"2026-11-01T01:59:00-04:00\"\n",
    ];
    engine::fuzz(
        "schedule_triggers",
        seeds.iter().map(|s| s.as_bytes().to_vec()).collect(),
        &[
            b"cron",
            b"recurrence",
            b"minute",
            b"hour",
            b"day",
            b"week",
            b"month",
            b"Europe/London",
            b"Australia/Lord_Howe",
            b"-",
            b":",
            b"[",
            b"]",
            b"0",
            b"31",
            b"59",
            b"\n",
        ],
        |input| {
            let Ok(node) = tarn_spec::Node::from_yaml(&text(input)) else {
                return "not YAML".into();
            };
            let created = 1_796_000_000i64;
            match tarn_spec::trigger::Trigger::parse(&node.to_json(), created) {
                Ok(trigger) => {
                    let fires = trigger.upcoming(created, 20);
                    for pair in fires.windows(2) {
                        assert!(pair[0] < pair[1], "fires go backwards: {fires:?}");
                    }
                    if let Some(last) = fires.last() {
                        let d = tarn_spec::trigger::due(
                            &trigger,
                            created,
                            *last,
                            tarn_spec::trigger::MissedFires::All,
                            created,
                        );
                        assert_eq!(d.through, Some(*last));
                        assert!(d.fire.iter().all(|t| fires.contains(t)), "{d:?} {fires:?}");
                    }
                    format!("fires {}", fires.len().min(3))
                }
                Err((field, _)) => field,
            }
        },
    );
}
