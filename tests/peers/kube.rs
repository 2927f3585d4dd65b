//! A FAKE Kubernetes API server for the Kubernetes backend's tests (`tests/peers/fake_kube.py`,
//! Python's standard library only): no real API server can be installed on these machines, so
//! this one plays the API subset Tarn uses, the scheduler and the kubelet (pods run as local
//! processes). Its doc comment says what it does not prove. Each test gets its own, on a free
//! port, stopped (with its pods) on drop.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub struct FakeKube {
    child: Child,
    /// Its configuration and its pods' logs.
    _dir: tempfile::TempDir,
    /// A kubeconfig that reaches it (context `fake`, namespace `tarn-test`).
    pub kubeconfig: String,
    pub url: String,
}

/// Two nodes of 2 CPUs and 4 GiB; `pool: gpu` on the second.
pub fn default_config() -> serde_json::Value {
    serde_json::json!({
        "nodes": [
            {"name": "node-a", "cpu": "2", "memory": "4Gi", "labels": {"pool": "cpu"}},
            {"name": "node-b", "cpu": "2", "memory": "4Gi", "labels": {"pool": "gpu"}, "gpu": 1},
        ],
    })
}

impl FakeKube {
    pub fn start() -> FakeKube {
        FakeKube::with(default_config())
    }

    /// Starts one with `config` (see `fake_kube.py`); the token and work folder are added.
    pub fn with(mut config: serde_json::Value) -> FakeKube {
        let dir = tempfile::tempdir().unwrap();
        let token = format!("fake-{}", std::process::id());
        config["token"] = token.clone().into();
        config["work_dir"] = dir.path().join("pods").display().to_string().into();
        let file = dir.path().join("config.json");
        std::fs::write(&file, config.to_string()).unwrap();
        let script = super::peers::repo().join("tests/peers/fake_kube.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(&file)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the fake Kubernetes API server (python3)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the fake Kubernetes API server said {line:?}"));
        let url = format!("http://127.0.0.1:{port}");
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
             clusters:\n- name: fake\n  cluster:\n    server: {url}\n\
             users:\n- name: tarn\n  user:\n    token: {token}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: tarn\n    namespace: tarn-test\n"
        );
        FakeKube {
            child,
            _dir: dir,
            kubeconfig,
            url,
        }
    }

    fn token(&self) -> String {
        self.kubeconfig
            .lines()
            .find_map(|l| l.trim().strip_prefix("token: "))
            .unwrap()
            .to_string()
    }

    /// A GET on its API, as JSON.
    pub fn get(&self, path: &str) -> serde_json::Value {
        reqwest::blocking::Client::new()
            .get(format!("{}{path}", self.url))
            .bearer_auth(self.token())
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    /// A POST (a create) on its API; its answer as JSON.
    pub fn post(&self, path: &str, body: &serde_json::Value) -> serde_json::Value {
        reqwest::blocking::Client::new()
            .post(format!("{}{path}", self.url))
            .bearer_auth(self.token())
            .json(body)
            .send()
            .unwrap()
            .json()
            .unwrap()
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        // SIGTERM: it stops its pods' processes, then itself.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}
