//! Spark jobs (`type: spark`). A Spark application runs as `spark-submit` in client mode,
//! started by the job's runner as a command job's command is: the driver runs in the runner's
//! process group, so its log is the job's log, its exit code the job's, `limits.timeout` and
//! cancel stop it (and the application with it: in client mode an application ends with its
//! driver), it logs to MLflow with the variables every job gets, and inputs, outputs and
//! pipelines work as for command jobs. Where the executors run is the master: `local[N]`
//! for serverless Spark (N from `conf`), or an attached standalone cluster's `spark://…`.
//!
//! Why `spark-submit` rather than the standalone master's REST API (port 6066): that server is
//! off by default before Spark 4.1, and it runs Python drivers only in cluster mode, on a
//! worker, where no runner is (no log, no MLflow variables, no inputs or outputs).

use crate::error::{Error, Result};
use serde_json::{Value as Json, json};
use tarn_spec::expr::shell_quote as sq;
use tarn_spec::runplan::EnvSpec;

/// The Spark runtime (a pyspark series) a job gets when it names none.
pub(crate) const DEFAULT_RUNTIME: &str = "3.5";

/// Where a cluster's executors find the job environment's packages: the archive's name in
/// their folder, put first on their Python path.
const ENV_ARCHIVE: &str = "tarn-env";
const EXECUTOR_PYTHONPATH: &str = "spark.executorEnv.PYTHONPATH";

/// A `conf` value as text.
fn text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Cores a serverless application gets on this machine: its executors' (`executor.cores` ×
/// `executor.instances`), at least the driver's.
fn local_cores(spec: &Json) -> u32 {
    let get = |k: &str| {
        spec.pointer("/conf")
            .and_then(|c| c.get(k))
            .map(text)
            .and_then(|t| t.parse::<u32>().ok())
    };
    let executors =
        get("spark.executor.cores").unwrap_or(1) * get("spark.executor.instances").unwrap_or(1);
    executors.max(get("spark.driver.cores").unwrap_or(1)).max(1)
}

/// What a serverless application's node must get at least (CPUs, MiB): its cores, and its
/// driver's memory with the overhead Spark adds to a driver's container (10 %, at least
/// 384 MiB) — in `local[N]` the executors are threads of the driver.
pub(crate) fn serverless_share(spec: &Json) -> (u32, u64) {
    let driver_mb = spec
        .pointer("/conf/spark.driver.memory")
        .map(text)
        .and_then(|t| tarn_spec::spark_size_mb(&t))
        .unwrap_or(1024);
    (local_cores(spec), driver_mb + (driver_mb / 10).max(384))
}

/// The master of a serverless application: Spark in the driver's process, sized from `conf`.
pub(crate) fn serverless_master(spec: &Json) -> String {
    format!("local[{}]", local_cores(spec))
}

/// The command job that runs spark job `spec` on `master`: `spark-submit` with the entry, the
/// files it ships and its properties, then `args` (with their `${{…}}` left for the runner).
pub(crate) fn as_command(spec: &Json, name: &str, master: &str) -> Json {
    // The driver's JVM finds its home from the password database, which a sandboxed job's
    // user is not in: it is told. A serverless application stays on this machine's loopback.
    let mut words =
        vec!["SPARK_SUBMIT_OPTS=\"-Duser.home=$HOME ${SPARK_SUBMIT_OPTS:-}\"".to_string()];
    if master.starts_with("local") {
        words.push("SPARK_LOCAL_IP=127.0.0.1".into());
    }
    words.extend([
        "spark-submit".to_string(),
        "--master".into(),
        sq(master),
        "--deploy-mode".into(),
        "client".into(),
        "--name".into(),
        sq(name),
    ]);
    // On a cluster, executors run Python on their workers: the environment's packages ship
    // to them as an archive the runner packs (`$TARN_SPARK_ENV`, see the runner's
    // `spark_env`), unpacked in each executor's folder and put on its Python path. Serverless
    // executors are threads of the driver, whose Python is the environment's.
    let ships_env = !master.starts_with("local");
    let mut conf: Vec<(String, String)> = spec
        .get("conf")
        .and_then(Json::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), text(v)))
        .collect();
    if ships_env {
        match conf.iter_mut().find(|(k, _)| k == EXECUTOR_PYTHONPATH) {
            Some((_, v)) => *v = format!("{ENV_ARCHIVE}:{v}"),
            None => conf.push((EXECUTOR_PYTHONPATH.into(), ENV_ARCHIVE.into())),
        }
    }
    for (k, v) in &conf {
        words.push("--conf".into());
        words.push(sq(&format!("{k}={v}")));
    }
    let list = |field: &str| -> Vec<String> {
        spec.get(field)
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(Json::as_str)
            .map(str::to_string)
            .collect()
    };
    let mut jars = list("jars");
    let class = spec.pointer("/entry/class_name").and_then(Json::as_str);
    // A JVM entry's application jar is the first of `jars`; the others ship with it.
    let app = match (spec.pointer("/entry/file").and_then(Json::as_str), class) {
        (Some(file), _) => file.to_string(),
        (None, Some(_)) if !jars.is_empty() => jars.remove(0),
        _ => String::new(),
    };
    for (flag, field) in [
        ("--py-files", "py_files"),
        ("--files", "files"),
        ("--archives", "archives"),
    ] {
        let mut items = list(field).iter().map(|i| sq(i)).collect::<Vec<_>>();
        if ships_env && field == "archives" {
            items.insert(0, format!("\"$TARN_SPARK_ENV\"'#{ENV_ARCHIVE}'"));
        }
        if !items.is_empty() {
            words.push(flag.into());
            words.push(items.join(","));
        }
    }
    if !jars.is_empty() {
        words.push("--jars".into());
        words.push(sq(&jars.join(",")));
    }
    if let Some(class) = class {
        words.push("--class".into());
        words.push(sq(class));
    }
    words.push(sq(&app));
    let mut command = words.join(" ");
    if let Some(args) = spec.get("args").and_then(Json::as_str) {
        command.push(' ');
        command.push_str(args.trim());
    }
    let mut out = json!({
        "type": "command",
        "command": command,
        // Filled by the caller with the runtime (see `with_runtime`).
        "environment": spec.get("environment").cloned()
            .unwrap_or_else(|| json!({"conda_file": {"dependencies": []}})),
    });
    for field in [
        "name",
        "display_name",
        "experiment_name",
        "description",
        "tags",
        "properties",
        "code",
        "inputs",
        "outputs",
        "environment_variables",
        "limits",
        "identity",
        "queue_settings",
    ] {
        if let Some(v) = spec.get(field) {
            out[field] = v.clone();
        }
    }
    // `mode: direct` hands the job a URI for Spark to read itself; Spark here reads local paths
    // (it has no Azure or S3 connector), so a direct input is a read-only link to a local
    // datastore's folder, or else a download, as `ro_mount` is.
    if let Some(inputs) = out.get_mut("inputs").and_then(Json::as_object_mut) {
        for input in inputs.values_mut() {
            if input.get("mode").and_then(Json::as_str) == Some("direct") {
                input["mode"] = json!("ro_mount");
            }
        }
    }
    out
}

/// The job's environment with the Spark runtime in it (`pyspark` of `resources.runtime_version`,
/// unless the environment pins its own).
pub(crate) fn with_runtime(spec: &Json, env: &mut EnvSpec) -> Result<()> {
    let runtime = spec
        .pointer("/resources/runtime_version")
        .map(text)
        .unwrap_or_else(|| DEFAULT_RUNTIME.to_string());
    let series = runtime.trim();
    let valid = series.split('.').count() == 2
        && series
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    if !valid {
        return Err(Error::invalid(
            "resources.runtime_version",
            format!("{runtime:?} is not a Spark runtime version such as \"3.5\""),
        ));
    }
    if !env
        .requirements
        .iter()
        .any(|r| r.trim().to_ascii_lowercase().starts_with("pyspark"))
    {
        env.requirements.push(format!("pyspark=={series}.*"));
        env.hash = tarn_spec::envplan::EnvPlan {
            python: env.python.clone(),
            requirements: env.requirements.clone(),
            notes: env.notes.clone(),
        }
        .hash();
    }
    Ok(())
}

/// The `java` Spark runs with, as `spark-submit` finds it: `JAVA_HOME`'s, else the first on
/// `PATH`.
pub fn java_runtime() -> Option<std::path::PathBuf> {
    let home = std::env::var_os("JAVA_HOME")
        .map(|h| std::path::PathBuf::from(h).join("bin/java"))
        .filter(|p| p.is_file());
    home.or_else(|| {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join("java"))
                .find(|j| j.is_file())
        })
    })
}

/// Spark runs on a Java runtime: where the driver runs on this machine, a job is refused at
/// submission without one (rather than failing later, or hanging).
pub(crate) fn check_java() -> Result<()> {
    if java_runtime().is_some() {
        return Ok(());
    }
    Err(Error::invalid(
        "type",
        "Spark jobs need a Java runtime (17 or newer) on this machine, and there is none: install \
         Debian's `openjdk-17-jre-headless` (or set JAVA_HOME) where the Tarn server runs",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spark_job_is_a_spark_submit_command() {
        let spec = json!({
            "type": "spark", "code": "./src", "entry": {"file": "wordcount.py"},
            "py_files": ["utils.zip", "more.py"], "files": ["words.txt"],
            "conf": {"spark.driver.memory": "1g", "spark.executor.cores": 2, "spark.executor.instances": 2},
            "args": "--input ${{inputs.text}} --output ${{outputs.counts}}",
            "inputs": {"text": {"type": "uri_folder", "path": "./data"}},
            "resources": {"instance_type": "standard_e4s_v3", "runtime_version": "3.5"},
        });
        let command = as_command(&spec, "count", &serverless_master(&spec));
        assert_eq!(
            command["command"],
            "SPARK_SUBMIT_OPTS=\"-Duser.home=$HOME ${SPARK_SUBMIT_OPTS:-}\" SPARK_LOCAL_IP=127.0.0.1 \
             spark-submit --master 'local[4]' --deploy-mode client --name count \
             --conf spark.driver.memory=1g --conf spark.executor.cores=2 \
             --conf spark.executor.instances=2 --py-files utils.zip,more.py --files words.txt \
             wordcount.py --input ${{inputs.text}} --output ${{outputs.counts}}"
        );
        assert_eq!(command["code"], "./src");
        assert_eq!(command["inputs"], spec["inputs"]);
        let direct =
            json!({"entry": {"file": "x.py"}, "inputs": {"t": {"path": "./d", "mode": "direct"}}});
        assert_eq!(
            as_command(&direct, "d", "local[1]")["inputs"]["t"]["mode"],
            "ro_mount"
        );
        assert!(command.get("resources").is_none());
        // On a cluster the environment ships to the executors, before the job's own archives
        // and Python path.
        let java = json!({"entry": {"class_name": "org.x.Main"}, "jars": ["app.jar", "dep.jar"],
            "archives": ["a b.zip#ab"], "conf": {"spark.executorEnv.PYTHONPATH": "ab"}});
        assert_eq!(
            as_command(&java, "j", "spark://127.0.0.1:7077")["command"],
            "SPARK_SUBMIT_OPTS=\"-Duser.home=$HOME ${SPARK_SUBMIT_OPTS:-}\" \
             spark-submit --master spark://127.0.0.1:7077 --deploy-mode client --name j \
             --conf spark.executorEnv.PYTHONPATH=tarn-env:ab \
             --archives \"$TARN_SPARK_ENV\"'#tarn-env','a b.zip#ab' \
             --jars dep.jar --class org.x.Main app.jar"
        );
        assert!(
            !as_command(&spec, "count", "local[2]")["command"]
                .as_str()
                .unwrap()
                .contains("TARN_SPARK_ENV")
        );
        assert_eq!(serverless_share(&spec), (4, 1024 + 384));
        let big = json!({"conf": {"spark.driver.memory": "8g", "spark.driver.cores": 3}});
        assert_eq!(serverless_share(&big), (3, 8192 + 819));
    }

    #[test]
    fn the_runtime_is_added_unless_the_environment_pins_pyspark() {
        let mut env = EnvSpec {
            hash: "h".into(),
            python: None,
            requirements: vec!["pandas".into()],
            notes: vec![],
            image: None,
            indexes: vec![],
        };
        with_runtime(&json!({"resources": {"runtime_version": "3.4"}}), &mut env).unwrap();
        assert_eq!(env.requirements, ["pandas", "pyspark==3.4.*"]);
        assert_ne!(env.hash, "h");
        let before = env.clone();
        with_runtime(&json!({}), &mut env).unwrap();
        assert_eq!(env, before, "pyspark is already there");
        let err = with_runtime(
            &json!({"resources": {"runtime_version": "latest"}}),
            &mut env,
        )
        .unwrap_err();
        assert!(err.to_string().contains("runtime_version"), "{err}");
    }
}
