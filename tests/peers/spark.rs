//! A real Spark standalone cluster on this machine for the attached-Spark tests: `pyspark`
//! from PyPI (installed by `scripts/test` into `.venv-spark`), a master and one worker (2
//! cores, 1 GiB) on 127.0.0.1, every port its own, each in a process group of its own and
//! stopped with it on drop.
//!
//! A port picked free can be taken again before Spark binds it (tests run side by side). Spark
//! would then quietly move to the next port, and the test would ask the wrong process. So the
//! daemons may not move (`spark.port.maxRetries=0`): a clash stops them, and the cluster is
//! started again on other ports.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Spark {
    master: Child,
    worker: Child,
    _dir: tempfile::TempDir,
    /// `spark://127.0.0.1:<port>`.
    pub master_url: String,
    /// The master's web UI.
    pub web_ui: String,
}

impl Spark {
    /// Starts the cluster, trying again on other ports where a port was taken meanwhile.
    pub fn start() -> Spark {
        let mut why = String::new();
        for _ in 0..3 {
            match Spark::try_start() {
                Ok(spark) => return spark,
                Err(e) => why = e,
            }
        }
        panic!("the Spark master and worker did not start in three tries; the last: {why}")
    }

    fn try_start() -> Result<Spark, String> {
        let dir = tempfile::tempdir().unwrap();
        let class = super::peers::repo().join(".venv-spark/bin/spark-class");
        assert!(
            class.is_file(),
            "{} is missing: scripts/test installs pyspark there",
            class.display()
        );
        // pyspark's own Spark (its scripts would look for it with whatever `python3` is first).
        let home = std::fs::read_dir(super::peers::repo().join(".venv-spark/lib"))
            .unwrap()
            .flatten()
            .map(|e| e.path().join("site-packages/pyspark"))
            .find(|p| p.is_dir())
            .expect("pyspark in .venv-spark");
        let ports = super::peers::free_ports(4);
        let (port, ui, worker_port, worker_ui) = (ports[0], ports[1], ports[2], ports[3]);
        let spawn = |args: &[String], log: &str| {
            let log = std::fs::File::create(dir.path().join(log)).unwrap();
            Command::new(&class)
                .args(args)
                .env("SPARK_HOME", &home)
                .env("SPARK_LOCAL_IP", "127.0.0.1")
                .env("SPARK_LOG_DIR", dir.path())
                .env("SPARK_DAEMON_JAVA_OPTS", "-Dspark.port.maxRetries=0")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .process_group(0)
                .spawn()
                .expect("starting Spark (.venv-spark/bin/spark-class)")
        };
        let master_url = format!("spark://127.0.0.1:{port}");
        let master = spawn(
            &[
                "org.apache.spark.deploy.master.Master".into(),
                "--host".into(),
                "127.0.0.1".into(),
                "--port".into(),
                port.to_string(),
                "--webui-port".into(),
                ui.to_string(),
            ],
            "master.log",
        );
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        let worker = spawn(
            &[
                "org.apache.spark.deploy.worker.Worker".into(),
                master_url.clone(),
                "--host".into(),
                "127.0.0.1".into(),
                "--port".into(),
                worker_port.to_string(),
                "--cores".into(),
                "2".into(),
                "--memory".into(),
                "1g".into(),
                "--webui-port".into(),
                worker_ui.to_string(),
                "--work-dir".into(),
                work.display().to_string(),
            ],
            "worker.log",
        );
        let web_ui = format!("http://127.0.0.1:{ui}");
        let mut spark = Spark {
            master,
            worker,
            _dir: dir,
            master_url,
            web_ui,
        };
        let start = Instant::now();
        loop {
            let died = spark.master.try_wait().ok().flatten().is_some()
                || spark.worker.try_wait().ok().flatten().is_some();
            let alive = reqwest::blocking::get(format!("{}/json/", spark.web_ui))
                .ok()
                .and_then(|r| r.json::<serde_json::Value>().ok())
                .and_then(|j| j["aliveworkers"].as_u64())
                .unwrap_or(0);
            if alive >= 1 {
                return Ok(spark);
            }
            if died || start.elapsed() > Duration::from_secs(120) {
                let log = |name| {
                    std::fs::read_to_string(spark._dir.path().join(name)).unwrap_or_default()
                };
                return Err(format!("{}\n{}", log("master.log"), log("worker.log")));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Spark {
    fn drop(&mut self) {
        for child in [&mut self.worker, &mut self.master] {
            let group = nix::unistd::Pid::from_raw(-(child.id() as i32));
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}
