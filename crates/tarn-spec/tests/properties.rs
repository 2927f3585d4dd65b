//! Property tests for the parsers and name rules: they never panic on any input, and names that
//! could escape a directory are never accepted.

use proptest::prelude::*;
use tarn_spec::names::{NameRule, check};
use tarn_spec::{Kind, Node, apply_set, expr, validate, validate_yaml};

const RULES: [NameRule; 10] = [
    NameRule::Workspace,
    NameRule::Compute,
    NameRule::Datastore,
    NameRule::Asset,
    NameRule::Component,
    NameRule::Job,
    NameRule::Endpoint,
    NameRule::Deployment,
    NameRule::Version,
    NameRule::User,
];

proptest! {
    #[test]
    fn names_with_separators_or_parent_segments_are_refused(prefix in ".{0,10}", suffix in ".{0,10}", sep in prop::sample::select(vec!["/", "\\", "..", "\0", "%2f"])) {
        let name = format!("{prefix}{sep}{suffix}");
        for rule in RULES {
            prop_assert!(check(rule, &name).is_err(), "{:?} accepted {:?}", rule, name);
        }
    }

    #[test]
    fn plain_asset_names_are_accepted(name in "[a-zA-Z0-9_]([a-zA-Z0-9_-]|\\.[a-zA-Z0-9_-]){0,20}[a-zA-Z0-9]") {
        prop_assert!(check(NameRule::Asset, &name).is_ok());
    }

    #[test]
    fn yaml_reading_and_validation_never_panic(text in "(?s).{0,200}") {
        if let Ok(node) = Node::from_yaml(&text) {
            for kind in Kind::ALL {
                let _ = validate(&node, Some(kind));
            }
        }
    }

    #[test]
    fn structured_yaml_never_panics(
        keys in prop::collection::vec(prop::sample::select(vec!["name", "type", "inputs", "outputs", "command", "jobs", "traffic", "version", "path", "x"]), 0..6),
        values in prop::collection::vec(prop::sample::select(vec!["a", "1", "[1, 2]", "{a: 1}", "null", "${{inputs.a}}", "$[[ ${{inputs.b}} ]]", "{type: command, command: '${{parent.jobs.x.outputs.y}}'}"]), 6),
    ) {
        let text: String = keys.iter().zip(values.iter()).map(|(k, v)| format!("{k}: {v}\n")).collect();
        for kind in Kind::ALL {
            let _ = validate_yaml(&text, Some(kind), &[]);
        }
    }

    #[test]
    fn expressions_never_panic(text in "(?s).{0,80}") {
        let _ = expr::parse(&text);
    }

    #[test]
    fn text_without_dollar_is_one_literal(text in "[^$]{1,60}") {
        prop_assert_eq!(expr::parse(&text).unwrap(), vec![expr::Segment::Text(text.clone())]);
    }

    #[test]
    fn set_overrides_never_panic(assignment in "(?s).{0,40}") {
        let mut node = Node::from_yaml("name: a\nnested: {b: 1}\n").unwrap();
        let _ = apply_set(&mut node, &assignment);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A real shell gets back exactly the value, whatever it holds: no value can inject a command.
    #[test]
    fn quoted_values_reach_the_shell_unchanged(value in "(?s)[^\0]{0,40}") {
        let command = format!("printf %s {}", tarn_spec::expr::shell_quote(&value));
        let out = std::process::Command::new("sh").arg("-c").arg(&command).output().unwrap();
        prop_assert!(out.status.success(), "{command}");
        prop_assert_eq!(String::from_utf8_lossy(&out.stdout).into_owned(), value);
    }
}

/// Hostile nesting: a YAML document deeper than the limit, or one whose aliases stand for
/// billions of values, is refused with a message and a position, never a crash.
#[test]
fn deep_and_exploding_yaml_is_refused() {
    for text in [
        "- ".repeat(100_000),
        format!("a: {}", "{b: ".repeat(100_000)),
        "[".repeat(100_000),
    ] {
        let err = Node::from_yaml(&text).unwrap_err();
        assert!(
            err.message.contains("deeper") || err.message.contains("recursion"),
            "{}",
            err.message
        );
    }
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let p = format!("*a{}", i - 1);
        bomb.push_str(&format!("a{i}: &a{i} [{}]\n", [p.as_str(); 9].join(", ")));
    }
    let err = Node::from_yaml(&bomb).unwrap_err();
    assert!(err.message.contains("values"), "{}", err.message);
    assert!(err.pos.is_some());
    // A document within the limits reads as before.
    let ok = format!("{}x", "- ".repeat(tarn_spec::node::MAX_DEPTH - 1));
    assert!(Node::from_yaml(&ok).is_ok());
}
