//! Checks that span fields: expressions against what a document declares, pipeline graphs,
//! references, traffic splits. They run on the positioned tree after the schema walk, so their
//! errors carry lines too; they tolerate wrongly shaped values (the walk already reported those).

use crate::diag::{Diagnostic, join};
use crate::expr::{self, Segment};
use crate::kind::Kind;
use crate::names::NameRule;
use crate::node::{Node, Value};
use crate::refs;
use std::collections::{BTreeMap, BTreeSet};

/// Runs the cross-field checks for a document of `kind` and `variant`.
pub fn run(kind: Kind, variant: Option<&str>, root: &Node, out: &mut Vec<Diagnostic>) {
    match (kind, variant) {
        (Kind::Job, Some("command")) => command_like(root, "", None, out),
        (Kind::Job, Some("sweep")) => sweep(root, "", out),
        (Kind::Job, Some("pipeline")) => pipeline(root, "", out),
        (Kind::Job, Some("spark")) => spark(root, "", out),
        (Kind::Component, Some("command")) => {
            component_inputs(root, out);
            command_like(root, "", None, out);
        }
        (Kind::Component, Some("pipeline")) => pipeline(root, "", out),
        (Kind::Component, Some("spark")) => {
            component_inputs(root, out);
            spark(root, "", out);
        }
        (Kind::Environment, _) => environment(root, "", out),
        (Kind::Compute, Some("amlcompute")) => instance_bounds(root, out),
        (Kind::OnlineEndpoint, _) => traffic(root, out),
        (Kind::Schedule, _) => schedule(root, out),
        (Kind::OnlineDeployment, _) | (Kind::BatchDeployment, _) => {
            asset_ref(root, "model", NameRule::Asset, out);
            asset_ref(root, "environment", NameRule::Asset, out);
            compute_ref(root, "", out);
            if let Some(n) = root.get("instance_count")
                && matches!(n.value, Value::Int(i) if i < 1)
            {
                out.push(Diagnostic::error(
                    "instance_count",
                    n.pos,
                    "must be at least 1",
                ));
            }
        }
        _ => {}
    }
    if matches!(kind, Kind::Job | Kind::Component) {
        asset_ref(root, "environment", NameRule::Asset, out);
        compute_ref(root, "", out);
    }
}

/// What `${{…}}` may refer to in one place.
struct Scope<'a> {
    inputs: BTreeSet<&'a str>,
    outputs: BTreeSet<&'a str>,
    search_space: Option<BTreeSet<&'a str>>,
}

fn keys(node: Option<&Node>) -> BTreeSet<&str> {
    node.map(|n| n.entries().iter().map(|(k, _)| k.name.as_str()).collect())
        .unwrap_or_default()
}

/// A command job, component or inline pipeline step: its command, environment variables,
/// output paths and environment.
fn command_like(
    node: &Node,
    path: &str,
    search_space: Option<BTreeSet<&str>>,
    out: &mut Vec<Diagnostic>,
) {
    let scope = Scope {
        inputs: keys(node.get("inputs")),
        outputs: keys(node.get("outputs")),
        search_space,
    };
    if let Some(command) = node.get("command") {
        expressions(command, &join(path, "command"), &scope, out);
    }
    for (k, v) in node
        .get("environment_variables")
        .map(Node::entries)
        .unwrap_or_default()
    {
        expressions(
            v,
            &join(&join(path, "environment_variables"), &k.name),
            &scope,
            out,
        );
    }
    output_paths(node, path, out);
    if let Some(env) = node
        .get("environment")
        .filter(|e| matches!(e.value, Value::Map(_)))
    {
        environment(env, &join(path, "environment"), out);
    }
}

/// Spark properties that are sizes (`512m`, `2g`) and counts (a positive whole number).
const SPARK_SIZES: &[&str] = &[
    "spark.driver.memory",
    "spark.executor.memory",
    "spark.driver.memoryOverhead",
    "spark.executor.memoryOverhead",
];
const SPARK_COUNTS: &[&str] = &[
    "spark.driver.cores",
    "spark.executor.cores",
    "spark.executor.instances",
    "spark.dynamicAllocation.minExecutors",
    "spark.dynamicAllocation.maxExecutors",
    "spark.dynamicAllocation.initialExecutors",
];

/// A size as Spark reads it, in MiB (rounded up): a whole number with an optional unit (`b`,
/// `k`, `kb`, `m`, `mb`, `g`, `gb`, `t`, `tb`, `p`, `pb`; none is MiB). `None` for anything else.
pub fn spark_size_mb(text: &str) -> Option<u64> {
    let t = text.trim().to_ascii_lowercase();
    let digits = t.chars().take_while(char::is_ascii_digit).count();
    let n: u64 = t[..digits].parse().ok()?;
    match &t[digits..] {
        "b" => Some(n.div_ceil(1 << 20)),
        "k" | "kb" => Some(n.div_ceil(1024)),
        "" | "m" | "mb" => Some(n),
        "g" | "gb" => n.checked_mul(1 << 10),
        "t" | "tb" => n.checked_mul(1 << 20),
        "p" | "pb" => n.checked_mul(1 << 30),
        _ => None,
    }
}

/// A Spark job or component: one entry (a file, or a class in `jars`), `args` against its
/// inputs and outputs, `spark.*` properties with sizes and counts Spark can read.
fn spark(node: &Node, path: &str, out: &mut Vec<Diagnostic>) {
    let scope = Scope {
        inputs: keys(node.get("inputs")),
        outputs: keys(node.get("outputs")),
        search_space: None,
    };
    if let Some(entry) = node.get("entry") {
        let file = entry.get("file").is_some();
        let class = entry.get("class_name").is_some();
        let p = join(path, "entry");
        if file == class {
            out.push(Diagnostic::error(
                &p,
                entry.pos,
                "give exactly one of `file` (a Python script in `code`) and `class_name` (a JVM class in `jars`)",
            ));
        }
        if class
            && !node
                .get("jars")
                .is_some_and(|j| matches!(&j.value, Value::List(l) if !l.is_empty()))
        {
            out.push(Diagnostic::error(
                &p,
                entry.pos,
                "`class_name` needs the jar that holds it in `jars`",
            ));
        }
    }
    if let Some(args) = node.get("args") {
        expressions(args, &join(path, "args"), &scope, out);
    }
    for (k, v) in node.get("conf").map(Node::entries).unwrap_or_default() {
        let p = join(&join(path, "conf"), &k.name);
        let text = match &v.value {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => continue,
        };
        if !k.name.starts_with("spark.") {
            out.push(Diagnostic::error(
                &p,
                k.pos,
                "only Spark properties (`spark.…`) can be set in `conf`",
            ));
        } else if SPARK_SIZES.contains(&k.name.as_str()) && spark_size_mb(&text).is_none() {
            out.push(Diagnostic::error(
                &p,
                v.pos,
                format!("{text:?} is not a size Spark reads: a whole number with a unit such as `512m` or `2g`"),
            ));
        } else if SPARK_COUNTS.contains(&k.name.as_str())
            && !text.parse::<u32>().is_ok_and(|n| n > 0)
        {
            out.push(Diagnostic::error(
                &p,
                v.pos,
                format!("{text:?} is not a positive whole number"),
            ));
        }
    }
    output_paths(node, path, out);
    if let Some(env) = node
        .get("environment")
        .filter(|e| matches!(e.value, Value::Map(_)))
    {
        environment(env, &join(path, "environment"), out);
    }
}

fn expressions(node: &Node, path: &str, scope: &Scope, out: &mut Vec<Diagnostic>) {
    let Some(text) = node.as_str() else { return };
    let segments = match expr::parse(text) {
        Ok(s) => s,
        Err(e) => return out.push(Diagnostic::error(path, node.pos, e.to_string())),
    };
    for r in expr::refs(&segments) {
        let joined = r.join(".");
        let problem = match r {
            [first, name] if first == "inputs" => (!scope.inputs.contains(name.as_str()))
                .then(|| undeclared("input", name, &scope.inputs)),
            [first, name] if first == "outputs" => (!scope.outputs.contains(name.as_str()))
                .then(|| undeclared("output", name, &scope.outputs)),
            [first, name] if first == "search_space" => match &scope.search_space {
                None => {
                    Some("`search_space` references are only allowed in a sweep's trial".into())
                }
                Some(space) => (!space.contains(name.as_str()))
                    .then(|| undeclared("search space parameter", name, space)),
            },
            _ => Some(format!(
                "`${{{{{joined}}}}}` is not allowed here: use `inputs.<name>`, `outputs.<name>` or `search_space.<name>`"
            )),
        };
        if let Some(message) = problem {
            out.push(Diagnostic::error(path, node.pos, message));
        }
    }
    // An optional segment only makes sense around an input that may be absent.
    for segment in &segments {
        if let Segment::Optional(inner) = segment
            && !expr::refs(inner)
                .iter()
                .any(|r| r.first().is_some_and(|f| f == "inputs"))
        {
            out.push(Diagnostic::error(
                path,
                node.pos,
                "an optional segment `$[[…]]` must reference an input",
            ));
        }
    }
}

fn undeclared(what: &str, name: &str, declared: &BTreeSet<&str>) -> String {
    let known: Vec<&str> = declared.iter().copied().collect();
    let hint = match crate::schema::suggest(name, &known) {
        Some(s) => format!(" (did you mean `{s}`?)"),
        None if known.is_empty() => "; none is declared".to_string(),
        None => format!("; declared: {}", known.join(", ")),
    };
    format!("{what} `{name}` is not declared{hint}")
}

/// Output `path`s may use `${{name}}`, `${{output_name}}` and `${{default_datastore}}`.
fn output_paths(node: &Node, path: &str, out: &mut Vec<Diagnostic>) {
    for (k, v) in node.get("outputs").map(Node::entries).unwrap_or_default() {
        let Some(p) = v.get("path") else { continue };
        let Some(text) = p.as_str() else { continue };
        let at = join(&join(&join(path, "outputs"), &k.name), "path");
        match expr::parse(text) {
            Err(e) => out.push(Diagnostic::error(&at, p.pos, e.to_string())),
            Ok(segments) => {
                for r in expr::refs(&segments) {
                    let ok = matches!(r, [one] if matches!(one.as_str(), "name" | "output_name" | "default_datastore"));
                    if !ok {
                        out.push(Diagnostic::error(&at, p.pos, format!(
                            "`${{{{{}}}}}` is not allowed in an output path: use `${{{{name}}}}`, `${{{{output_name}}}}` or `${{{{default_datastore}}}}`",
                            r.join(".")
                        )));
                    }
                }
            }
        }
    }
}

fn sweep(root: &Node, path: &str, out: &mut Vec<Diagnostic>) {
    let space = keys(root.get("search_space"));
    let Some(trial) = root.get("trial") else {
        return;
    };
    if !matches!(trial.value, Value::Map(_)) {
        return; // a component file, checked when it is loaded
    }
    // A trial sees the sweep's inputs and outputs.
    let scope = Scope {
        inputs: keys(root.get("inputs")),
        outputs: keys(root.get("outputs")),
        search_space: Some(space),
    };
    if let Some(command) = trial.get("command") {
        expressions(command, &join(&join(path, "trial"), "command"), &scope, out);
    }
    if let Some(env) = trial
        .get("environment")
        .filter(|e| matches!(e.value, Value::Map(_)))
    {
        environment(env, &join(&join(path, "trial"), "environment"), out);
    }
    if let Some(limits) = root.get("limits") {
        let max_total = limits.get("max_total_trials").and_then(int);
        let max_concurrent = limits.get("max_concurrent_trials").and_then(int);
        if let (Some(total), Some(conc)) = (max_total, max_concurrent)
            && conc > total
        {
            out.push(Diagnostic::error(
                &join(path, "limits.max_concurrent_trials"),
                limits.pos,
                format!("max_concurrent_trials ({conc}) exceeds max_total_trials ({total})"),
            ));
        }
    }
}

fn int(node: &Node) -> Option<i64> {
    match node.value {
        Value::Int(i) => Some(i),
        _ => None,
    }
}

/// Pipeline bindings: `${{parent.inputs.x}}`, `${{parent.outputs.y}}`,
/// `${{parent.jobs.<step>.outputs.<o>}}`; the graph they form must have no cycle.
fn pipeline(root: &Node, path: &str, out: &mut Vec<Diagnostic>) {
    let parent_inputs = keys(root.get("inputs"));
    let parent_outputs = keys(root.get("outputs"));
    let Some(jobs) = root.get("jobs") else { return };
    let steps = keys(Some(jobs));
    let mut edges: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (step_key, step) in jobs.entries() {
        let step_name = step_key.name.as_str();
        let step_path = join(&join(path, "jobs"), step_name);
        edges.entry(step_name).or_default();
        for section in ["inputs", "outputs"] {
            for (k, v) in step.get(section).map(Node::entries).unwrap_or_default() {
                let at = join(&join(&step_path, section), &k.name);
                let binding = v
                    .as_str()
                    .or_else(|| v.str_at("path"))
                    .or_else(|| v.str_at("value"));
                let Some(text) = binding else { continue };
                let segments = match expr::parse(text) {
                    Ok(s) => s,
                    Err(e) => {
                        out.push(Diagnostic::error(&at, v.pos, e.to_string()));
                        continue;
                    }
                };
                for r in expr::refs(&segments) {
                    let parts: Vec<&str> = r.iter().map(String::as_str).collect();
                    let problem = match parts.as_slice() {
                        ["parent", "inputs", name] => (!parent_inputs.contains(name))
                            .then(|| undeclared("pipeline input", name, &parent_inputs)),
                        ["parent", "outputs", name] => (!parent_outputs.contains(name))
                            .then(|| undeclared("pipeline output", name, &parent_outputs)),
                        ["parent", "jobs", other, "outputs" | "inputs", port] => {
                            if *other == step_name {
                                Some(format!("step `{step_name}` cannot bind to itself"))
                            } else if !steps.contains(other) {
                                Some(undeclared("step", other, &steps))
                            } else {
                                edges
                                    .entry(step_name)
                                    .or_default()
                                    .insert(other.to_string());
                                step_port_problem(jobs.get(other), r[3].as_str(), port)
                            }
                        }
                        ["name" | "output_name" | "default_datastore"] if section == "outputs" => {
                            None
                        }
                        _ => Some(format!(
                            "`${{{{{}}}}}` is not a pipeline binding: use `parent.inputs.<x>`, `parent.outputs.<y>` or `parent.jobs.<step>.outputs.<o>`",
                            r.join(".")
                        )),
                    };
                    if let Some(message) = problem {
                        out.push(Diagnostic::error(&at, v.pos, message));
                    }
                }
            }
        }
        // Inline steps resolve their own `${{inputs.x}}` in their command.
        if step.get("component").is_none() {
            match step.str_at("type").unwrap_or("command") {
                "sweep" => sweep(step, &step_path, out),
                "spark" => spark(step, &step_path, out),
                "pipeline" => {}
                _ => command_like(step, &step_path, None, out),
            }
        }
        if let Some(c) = step.get("compute").and_then(Node::as_str)
            && let Err(e) = refs::parse_compute_ref(c)
        {
            out.push(Diagnostic::error(
                &join(&step_path, "compute"),
                step.get("compute").and_then(|n| n.pos),
                e.to_string(),
            ));
        }
    }
    if let Some(cycle) = find_cycle(&edges) {
        out.push(Diagnostic::error(
            &join(path, "jobs"),
            jobs.pos,
            format!("the steps' bindings form a cycle: {}", cycle.join(" -> ")),
        ));
    }
}

/// For an inline step, the bound port must be declared (`artifacts` is always there).
fn step_port_problem(step: Option<&Node>, section: &str, port: &str) -> Option<String> {
    let step = step?;
    if step.get("component").is_some() || port == "artifacts" {
        return None;
    }
    let declared = keys(step.get(section));
    (!declared.contains(port)).then(|| undeclared(&section[..section.len() - 1], port, &declared))
}

fn find_cycle(edges: &BTreeMap<&str, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit<'a>(
        node: &'a str,
        edges: &'a BTreeMap<&str, BTreeSet<String>>,
        state: &mut BTreeMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match state.get(node) {
            Some(2) => return None,
            Some(1) => {
                let start = stack.iter().position(|s| *s == node).unwrap_or(0);
                let mut cycle: Vec<String> = stack[start..].iter().map(|s| s.to_string()).collect();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(node, 1);
        stack.push(node);
        for next in edges.get(node).into_iter().flatten() {
            if let Some((key, _)) = edges.get_key_value(next.as_str())
                && let Some(c) = visit(key, edges, state, stack)
            {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(node, 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in edges.keys() {
        if let Some(c) = visit(node, edges, &mut state, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

/// Component inputs: bounds only on numbers, enums only on strings, defaults of the right type.
fn component_inputs(root: &Node, out: &mut Vec<Diagnostic>) {
    const RESERVED: &[&str] = &[
        "path",
        "ld_library_path",
        "user",
        "logname",
        "home",
        "pwd",
        "shell",
    ];
    for (k, v) in root.get("inputs").map(Node::entries).unwrap_or_default() {
        let at = join("inputs", &k.name);
        if RESERVED.contains(&k.name.to_ascii_lowercase().as_str()) {
            out.push(Diagnostic::error(
                &at,
                k.pos,
                format!("`{}` is a reserved input name", k.name),
            ));
        }
        let ty = v.str_at("type").unwrap_or("");
        let numeric = matches!(ty, "number" | "integer");
        for bound in ["min", "max"] {
            if let Some(b) = v.get(bound)
                && !numeric
            {
                out.push(Diagnostic::error(
                    &join(&at, bound),
                    b.pos,
                    format!("`{bound}` applies only to number and integer inputs"),
                ));
            }
        }
        if let Some(e) = v.get("enum")
            && ty != "string"
        {
            out.push(Diagnostic::error(
                &join(&at, "enum"),
                e.pos,
                "`enum` applies only to string inputs",
            ));
        }
        if let Some(d) = v.get("default") {
            let ok = match (ty, &d.value) {
                ("integer", Value::Int(_)) => true,
                ("number", Value::Int(_) | Value::Float(_)) => true,
                ("boolean", Value::Bool(_)) => true,
                ("integer" | "number" | "boolean", _) => false,
                _ => true,
            };
            if !ok {
                out.push(Diagnostic::error(
                    &join(&at, "default"),
                    d.pos,
                    format!("default {} does not match type `{ty}`", d.type_name()),
                ));
            }
        }
        if let (Some(min), Some(max)) = (v.get("min").and_then(num), v.get("max").and_then(num))
            && min > max
        {
            out.push(Diagnostic::error(
                &at,
                v.pos,
                format!("min ({min}) is greater than max ({max})"),
            ));
        }
    }
}

fn num(node: &Node) -> Option<f64> {
    match node.value {
        Value::Int(i) => Some(i as f64),
        Value::Float(f) => Some(f),
        _ => None,
    }
}

/// An environment must say how to get its software.
fn environment(node: &Node, path: &str, out: &mut Vec<Diagnostic>) {
    let has = |k: &str| node.get(k).is_some_and(|n| !n.is_null());
    if !has("image") && !has("build") && !has("conda_file") {
        out.push(Diagnostic::error(
            path,
            node.pos,
            "an environment needs `image`, `build` or `conda_file`",
        ));
    }
}

/// A string-valued reference field must be a well-formed reference.
fn asset_ref(root: &Node, field: &str, rule: NameRule, out: &mut Vec<Diagnostic>) {
    let Some(node) = root.get(field) else { return };
    let Some(text) = node.as_str() else { return };
    if let Err(e) = refs::parse_asset_ref(text, rule) {
        out.push(Diagnostic::error(field, node.pos, e.to_string()));
    }
}

fn compute_ref(root: &Node, path: &str, out: &mut Vec<Diagnostic>) {
    let Some(node) = root.get("compute") else {
        return;
    };
    let Some(text) = node.as_str() else { return };
    if let Err(e) = refs::parse_compute_ref(text) {
        out.push(Diagnostic::error(
            &join(path, "compute"),
            node.pos,
            e.to_string(),
        ));
    }
}

fn instance_bounds(root: &Node, out: &mut Vec<Diagnostic>) {
    let min = root.get("min_instances").and_then(int).unwrap_or(0);
    let max_node = root.get("max_instances");
    let max = max_node.and_then(int).unwrap_or(1);
    if min < 0 || max < 1 || min > max {
        out.push(Diagnostic::error("max_instances", max_node.and_then(|n| n.pos).or(root.pos),
            format!("need 0 <= min_instances <= max_instances and max_instances >= 1 (got {min} and {max})")));
    }
}

/// `traffic` must add up to 0 or 100; each share and each mirror share is a percentage.
fn traffic(root: &Node, out: &mut Vec<Diagnostic>) {
    for field in ["traffic", "mirror_traffic"] {
        let Some(node) = root.get(field) else {
            continue;
        };
        let mut sum = 0;
        for (k, v) in node.entries() {
            let share = int(v).unwrap_or(0);
            let limit = if field == "mirror_traffic" { 50 } else { 100 };
            if !(0..=limit).contains(&share) {
                out.push(Diagnostic::error(
                    &join(field, &k.name),
                    v.pos,
                    format!("must be between 0 and {limit}"),
                ));
            }
            sum += share;
        }
        if field == "traffic" && sum != 0 && sum != 100 {
            out.push(Diagnostic::error(
                field,
                node.pos,
                format!("traffic must add up to 0 or 100, not {sum}"),
            ));
        }
    }
}

/// A schedule: what it does (a job; Tarn runs no data imports or monitors), when (the trigger,
/// read as `trigger::Trigger` reads it), and an inline job's own checks.
fn schedule(root: &Node, out: &mut Vec<Diagnostic>) {
    for (field, what) in [
        ("import_data", "data import schedules"),
        ("create_monitor", "model monitoring schedules"),
    ] {
        if let Some(n) = root.get(field) {
            out.push(Diagnostic::error(
                field,
                n.pos,
                format!("{what} are not run by Tarn: a schedule here fires jobs (`create_job`)"),
            ));
        }
    }
    match root.get("create_job") {
        None if root.get("import_data").is_none() && root.get("create_monitor").is_none() => out
            .push(Diagnostic::error(
                "create_job",
                root.pos,
                "a schedule needs `create_job`: a job file, `azureml:<job name>`, or a job",
            )),
        Some(job) if matches!(job.value, Value::Map(_)) => {
            let (node, path) = match job.get("job") {
                Some(inner) => (inner, "create_job.job"),
                None => (job, "create_job"),
            };
            if matches!(node.value, Value::Map(_)) {
                match node.str_at("type").unwrap_or("command") {
                    "sweep" => sweep(node, path, out),
                    "pipeline" => pipeline(node, path, out),
                    "spark" => spark(node, path, out),
                    _ => command_like(node, path, None, out),
                }
            }
        }
        _ => {}
    }
    if let Some(trigger) = root.get("trigger")
        && !matches!(trigger.value, Value::Map(_))
    {
        out.push(Diagnostic::error(
            "trigger",
            trigger.pos,
            "a trigger is a mapping: `type: cron` with an `expression`, or `type: recurrence`",
        ));
    }
    if let Some(trigger) = root.get("trigger")
        && matches!(trigger.value, Value::Map(_))
        && let Err((field, message)) = crate::trigger::Trigger::parse(&trigger.to_json(), 0)
    {
        // The deepest node the field names, for its line.
        let mut at = root;
        for key in field.split('.') {
            match at.get(key) {
                Some(n) => at = n,
                None => break,
            }
        }
        out.push(Diagnostic::error(&field, at.pos.or(trigger.pos), message));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn spark_sizes_read_as_spark_reads_them() {
        use super::spark_size_mb as mb;
        assert_eq!(mb("600m"), Some(600));
        assert_eq!(mb("512"), Some(512));
        assert_eq!(mb("2g"), Some(2048));
        assert_eq!(mb("2GB"), Some(2048));
        assert_eq!(mb("1536k"), Some(2));
        assert_eq!(mb("1t"), Some(1 << 20));
        for bad in ["", "2 gigs", "g", "1.5g", "-1g", "99999999999999999999p"] {
            assert_eq!(mb(bad), None, "{bad}");
        }
    }
}
