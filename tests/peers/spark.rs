//! A real Spark standalone cluster on this machine for the attached-Spark tests: `pyspark`
//! from PyPI (installed by `scripts/test` into `.venv-spark`), a master and one worker (2
//! cores, 1 GiB) on 127.0.0.1, every port its own, each in a process group of its own and
//! stopped with it on drop.

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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Spark {
    pub fn start() -> Spark {
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
        let (port, ui, worker_ui) = (free_port(), free_port(), free_port());
        let spawn = |args: &[String], log: &str| {
            let log = std::fs::File::create(dir.path().join(log)).unwrap();
            Command::new(&class)
                .args(args)
                .env("SPARK_HOME", &home)
                .env("SPARK_LOCAL_IP", "127.0.0.1")
                .env("SPARK_LOG_DIR", dir.path())
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
        let spark = Spark {
            master,
            worker,
            _dir: dir,
            master_url,
            web_ui,
        };
        let start = Instant::now();
        let mut spark = spark;
        loop {
            let died = spark.master.try_wait().ok().flatten().is_some()
                || spark.worker.try_wait().ok().flatten().is_some();
            let alive = reqwest::blocking::get(format!("{}/json/", spark.web_ui))
                .ok()
                .and_then(|r| r.json::<serde_json::Value>().ok())
                .and_then(|j| j["aliveworkers"].as_u64())
                .unwrap_or(0);
            if alive >= 1 {
                break;
            }
            assert!(
                !died && start.elapsed() < Duration::from_secs(120),
                "the Spark master and worker did not start: {}\n{}",
                std::fs::read_to_string(spark._dir.path().join("master.log")).unwrap_or_default(),
                std::fs::read_to_string(spark._dir.path().join("worker.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        spark
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
