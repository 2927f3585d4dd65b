//! Workspace connections (`tarn connection`, Azure ML's `az ml connection`): every type's YAML
//! taken as Azure ML writes it, credentials kept in the vault and shown only to who may read
//! secrets, a job reading a connection's secret at run time with its own token (audited), and
//! a `python_feed` connection that is the package index an environment is built from — a
//! folder of wheels behind basic auth (`tests/peers/basic_auth_server.py`), as a private feed —
//! and a `git` connection whose token lets a job's `code: git+http://…` be cloned from a
//! private repository (the same server, serving git's "dumb" HTTP protocol).

use crate::harness::Server;
use crate::jobs::{HOST_ENV, log, submit, wait_end, write};
use serde_json::Value;
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};

const PAT: &str = "ghp_tarnTestPat0123456789";
const FEED_PASSWORD: &str = "feed-pass-9f8e7d";

fn peer(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/peers")
        .join(file)
}

/// The connections of every type, as Azure ML's docs write them.
fn documents() -> Vec<(&'static str, String)> {
    vec![
        (
            "git",
            format!(
                "$schema: http://azureml/sdk-2-0/Connection.json\nname: my-git\ntype: git\n\
                 target: https://github.com/contoso/contoso-repo\ncredentials:\n  type: pat\n  pat: {PAT}\n"
            ),
        ),
        (
            "python_feed",
            "name: my-feed\ntype: python_feed\ntarget: https://feed.contoso.com/simple\n\
             credentials:\n  type: username_password\n  username: feeduser\n  password: feedpass\n"
                .into(),
        ),
        (
            "container_registry",
            "name: my-acr\ntype: container_registry\ntarget: https://contoso.azurecr.io\n\
             credentials:\n  type: username_password\n  username: acr\n  password: acrpass\n"
                .into(),
        ),
        (
            "s3",
            "name: my-s3\ntype: s3\ntarget: https://bucket.s3.amazonaws.com\n\
             credentials:\n  type: access_key\n  access_key_id: AKIDEXAMPLE\n  secret_access_key: s3secret\n"
                .into(),
        ),
        (
            "snowflake",
            "name: my-snowflake\ntype: snowflake\n\
             target: jdbc:snowflake://acct.snowflakecomputing.com/?db=db&warehouse=wh&role=r\n\
             credentials:\n  type: username_password\n  username: sf\n  password: sfpass\n"
                .into(),
        ),
        (
            "azure_sql_db",
            "name: my-sql\ntype: azure_sql_db\n\
             target: Server=tcp:contoso.database.windows.net,1433;Database=db;Encrypt=True\n\
             credentials:\n  type: sql_auth\n  username: sa\n  password: sqlpass\n"
                .into(),
        ),
        (
            "azure_open_ai",
            "name: my-aoai\ntype: azure_open_ai\nazure_endpoint: https://contoso.openai.azure.com/\n\
             api_key: aoai-key-123\napi_version: 2024-02-01\n"
                .into(),
        ),
        (
            "api_key",
            "name: my-api\ntype: api_key\napi_base: https://api.contoso.com\napi_key: plain-api-key\n"
                .into(),
        ),
        (
            "azure_blob",
            "name: my-blob\ntype: azure_blob\nurl: https://contoso.blob.core.windows.net/data\n\
             account_name: contoso\ncontainer_name: data\ncredentials:\n  type: account_key\n  account_key: YmxvYmtleQ==\n"
                .into(),
        ),
        (
            "custom",
            "name: my-custom\ntype: custom\ntarget: https://custom.contoso.com\n\
             credentials:\n  type: custom_keys\n  keys:\n    token: custom-token-xyz\nmetadata:\n  team: ml\n"
                .into(),
        ),
    ]
}

const SECRETS: &[&str] = &[
    PAT,
    "feedpass",
    "acrpass",
    "s3secret",
    "sfpass",
    "sqlpass",
    "aoai-key-123",
    "plain-api-key",
    "YmxvYmtleQ==",
    "custom-token-xyz",
];

#[test]
fn connections_keep_credentials_in_the_vault_for_those_who_may_read_them() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    for (kind, text) in documents() {
        let f = write(dir.path(), &format!("{kind}.yml"), &text);
        let out = s.create_from("connection", &f, &["-o", "json"]).json();
        assert_eq!(out["type"], kind, "{out:#}");
    }
    let list = s.cli(&["connection", "list", "-o", "json"]).success();
    assert_eq!(list.json().as_array().unwrap().len(), 10);
    // Shown without credentials.
    let git = s
        .cli(&["connection", "show", "-n", "my-git", "-o", "json"])
        .success()
        .json();
    assert_eq!(
        git["spec"]["target"],
        "https://github.com/contoso/contoso-repo"
    );
    assert_eq!(git["spec"]["credentials"], "<stored in vault>", "{git:#}");
    let api = s
        .cli(&["connection", "show", "-n", "my-api", "-o", "json"])
        .success()
        .json();
    assert_eq!(api["spec"]["api_key"], "<stored in vault>");
    // With them, for who may list secrets: not a Reader, a Data Scientist yes.
    let full = s
        .cli(&[
            "connection",
            "show",
            "-n",
            "my-git",
            "--include-secrets",
            "-o",
            "json",
        ])
        .success()
        .json();
    assert_eq!(full["spec"]["credentials"]["pat"], PAT, "{full:#}");
    let reader = s.user_with_role("rita", "Reader", "default");
    let refused = s
        .cli_as(
            &reader,
            &["connection", "show", "-n", "my-git", "--include-secrets"],
        )
        .failure();
    assert!(
        refused.stderr.contains("connections/listsecrets/action"),
        "{}",
        refused.stderr
    );
    s.cli_as(&reader, &["connection", "show", "-n", "my-git"])
        .success();
    let scientist = s.user_with_role("sam", "AzureML Data Scientist", "default");
    let seen = s
        .cli_as(
            &scientist,
            &[
                "connection",
                "show",
                "-n",
                "my-custom",
                "--include-secrets",
                "-o",
                "json",
            ],
        )
        .success()
        .json();
    assert_eq!(
        seen["spec"]["credentials"]["keys"]["token"],
        "custom-token-xyz"
    );

    // A job reads a connection's secret with its own token, as the Azure ML SDK's
    // `get_connection` does, and the read is audited as the job's.
    write(
        dir.path(),
        "src/read.py",
        r#"import hashlib, json, os, urllib.request
url = f"{os.environ['TARN_API_URL']}/workspaces/{os.environ['TARN_WORKSPACE']}/connections/my-git/list-secrets"
req = urllib.request.Request(url, data=b"{}", method="POST", headers={
    "Authorization": "Bearer " + os.environ["MLFLOW_TRACKING_TOKEN"], "Content-Type": "application/json"})
pat = json.load(urllib.request.urlopen(req))["spec"]["credentials"]["pat"]
print("pat sha256:", hashlib.sha256(pat.encode()).hexdigest())
"#,
    );
    let job_file = write(
        dir.path(),
        "job.yml",
        &format!("command: python3 read.py\ncode: ./src\ncompute: azureml:local\n{HOST_ENV}"),
    );
    let job = submit(&s, &job_file, &[]);
    let ended = wait_end(&s, &job);
    assert_eq!(ended["status"], "Completed", "{ended:#}\n{}", log(&s, &job));
    let digest = tarn_spec::digest::sha256_hex(PAT.as_bytes());
    assert!(log(&s, &job).contains(&digest), "{}", log(&s, &job));
    let audit = s.cli(&["audit", "list", "-o", "json"]).success().json();
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor_kind"] == "job"
                && e["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("/connections/my-git/list-secrets"))
                && e["status"] == 200),
        "{audit:#}"
    );

    // Bad input names the field and stores nothing.
    for (text, says) in [
        (
            "name: bad\ntype: git\ncredentials:\n  type: pat\n  pat: x\n",
            "target",
        ),
        (
            "name: bad\ntype: git\ntarget: https://x\ncredentials:\n  type: pat\n",
            "credentials.pat",
        ),
        ("name: bad\ntype: telepathy\ntarget: x\n", "telepathy"),
        (
            "name: ../bad\ntype: git\ntarget: https://x\n",
            "connection name",
        ),
    ] {
        let f = write(dir.path(), "bad.yml", text);
        let out = s
            .cli(&["connection", "create", "-f", f.to_str().unwrap()])
            .failure();
        assert!(out.stderr.contains(says), "{text}\n{}", out.stderr);
    }
    assert_eq!(
        s.cli(&["connection", "list", "-o", "json"])
            .success()
            .json()
            .as_array()
            .unwrap()
            .len(),
        10
    );
    // Deleted: gone.
    s.cli(&["connection", "delete", "-n", "my-s3", "--yes"])
        .success();
    s.cli(&["connection", "show", "-n", "my-s3"]).failure();

    // No secret in what the server printed or stored in plain sight.
    let shown = s
        .cli(&["connection", "list", "-o", "json"])
        .success()
        .stdout;
    let server_log = std::fs::read_to_string(s.home.join("server.log")).unwrap_or_default();
    let audit_text = audit.to_string();
    for secret in SECRETS {
        assert!(!shown.contains(secret), "{secret} in a list");
        assert!(!server_log.contains(secret), "{secret} in the server's log");
        assert!(!audit_text.contains(secret), "{secret} in the audit log");
    }
}

/// A wheel of one module, built by hand (a zip with its dist-info).
fn build_wheel(dir: &Path) {
    let script = r#"
import base64, hashlib, sys, zipfile
out = sys.argv[1]
files = {
    "tarn_feed_demo/__init__.py": "MESSAGE = 'served by the private feed'\n",
    "tarn_feed_demo-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: tarn-feed-demo\nVersion: 0.1\n",
    "tarn_feed_demo-0.1.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: tarn-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = []
with zipfile.ZipFile(out, "w") as z:
    for name, text in files.items():
        data = text.encode()
        z.writestr(name, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("tarn_feed_demo-0.1.dist-info/RECORD,,")
    z.writestr("tarn_feed_demo-0.1.dist-info/RECORD", "\n".join(record) + "\n")
"#;
    let target = dir.join("simple/tarn-feed-demo");
    std::fs::create_dir_all(&target).unwrap();
    let status = Command::new("python3")
        .args(["-c", script])
        .arg(target.join("tarn_feed_demo-0.1-py3-none-any.whl"))
        .status()
        .unwrap();
    assert!(status.success());
}

struct Feed {
    child: Child,
    port: u16,
}

impl Feed {
    fn start(root: &Path) -> Feed {
        Feed::start_as(root, "feeduser", FEED_PASSWORD)
    }

    fn start_as(root: &Path, user: &str, password: &str) -> Feed {
        let mut child = Command::new("python3")
            .arg(peer("basic_auth_server.py"))
            .arg(root)
            .args([user, password])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().strip_prefix("PORT ").unwrap().parse().unwrap();
        Feed { child, port }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_python_feed_connection_is_the_index_environments_are_built_from() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let feed_root = dir.path().join("feed");
    build_wheel(&feed_root);
    let feed = Feed::start(&feed_root);
    // Without the credentials the feed refuses.
    let anonymous = reqwest::blocking::get(format!(
        "http://127.0.0.1:{}/simple/tarn-feed-demo/",
        feed.port
    ))
    .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);

    let conn = write(
        dir.path(),
        "feed.yml",
        &format!(
            "name: private-feed\ntype: python_feed\ntarget: http://127.0.0.1:{}/simple\n\
             credentials:\n  type: username_password\n  username: feeduser\n  password: {FEED_PASSWORD}\n",
            feed.port
        ),
    );
    s.create_from("connection", &conn, &[]);
    let job_file = write(
        dir.path(),
        "job.yml",
        "command: python -c \"import tarn_feed_demo; print(tarn_feed_demo.MESSAGE)\"\n\
         compute: azureml:local\n\
         environment:\n  image: python\n  conda_file:\n    dependencies:\n      - pip:\n        - tarn-feed-demo==0.1\n",
    );
    let job = submit(&s, &job_file, &[]);
    let ended = wait_end(&s, &job);
    let text = log(&s, &job);
    assert_eq!(ended["status"], "Completed", "{ended:#}\n{text}");
    assert!(text.contains("served by the private feed"), "{text}");
    assert!(text.contains("connection private-feed"), "{text}");
    // An online deployment's environment comes from the feed too.
    write(
        dir.path(),
        "score/score.py",
        "import tarn_feed_demo\ndef init():\n    pass\ndef run(raw):\n    return {'message': tarn_feed_demo.MESSAGE}\n",
    );
    let endpoint = write(dir.path(), "ep.yml", "name: feed-ep\nauth_mode: key\n");
    s.create_from("online-endpoint", &endpoint, &[]);
    let deployment = write(
        dir.path(),
        "blue.yml",
        "name: blue\nendpoint_name: feed-ep\ncode_configuration:\n  code: ./score\n  scoring_script: score.py\n\
         environment:\n  image: python\n  conda_file:\n    dependencies:\n      - pip:\n        - tarn-feed-demo==0.1\n\
         instance_count: 1\n",
    );
    s.create_from("online-deployment", &deployment, &["--all-traffic"]);
    let request = write(dir.path(), "req.json", "{}");
    let answer = s
        .cli(&[
            "online-endpoint",
            "invoke",
            "-n",
            "feed-ep",
            "--request-file",
            request.to_str().unwrap(),
        ])
        .success()
        .stdout;
    assert!(answer.contains("served by the private feed"), "{answer}");
    let replica_log = s
        .cli(&[
            "online-deployment",
            "get-logs",
            "-n",
            "blue",
            "-e",
            "feed-ep",
        ])
        .success()
        .stdout;
    assert!(
        !replica_log.contains(FEED_PASSWORD),
        "the feed's password in the replica's log"
    );

    // The password reached the installer only: not the log, the stored job, the server's log.
    let shown: Value = s
        .cli(&["job", "show", "-n", &job, "-o", "json"])
        .success()
        .json();
    let server_log = std::fs::read_to_string(s.home.join("server.log")).unwrap_or_default();
    for (what, text) in [
        ("the job's log", text.as_str()),
        ("the job", &shown.to_string()),
        ("the server's log", &server_log),
    ] {
        assert!(
            !text.contains(FEED_PASSWORD),
            "the feed's password in {what}"
        );
    }
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args([
            "-c",
            "user.name=Tarn Test",
            "-c",
            "user.email=test@tarn.invalid",
        ])
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?}");
}

#[test]
fn a_git_connection_lets_jobs_clone_their_code_from_a_private_repository() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    write(&work, "train/train.py", "print('trained from git')\n");
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "first"]);
    let root = dir.path().join("host");
    std::fs::create_dir_all(&root).unwrap();
    git(
        dir.path(),
        &["clone", "-q", "--bare", "work", "host/repo.git"],
    );
    git(&root.join("repo.git"), &["update-server-info"]);
    let head = String::from_utf8(
        Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(&work)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    let host = Feed::start_as(&root, "*", PAT);
    let repo = format!("http://127.0.0.1:{}/repo.git", host.port);
    let job = |reference: &str| {
        write(
            dir.path(),
            "job.yml",
            &format!(
                "command: python3 train.py\ncode: git+{repo}{reference}#subdirectory=train\n\
                 compute: azureml:local\n{HOST_ENV}"
            ),
        )
    };
    // Without a connection the repository refuses, and the submission says so.
    let refused = s
        .cli(&["job", "create", "-f", job("@main").to_str().unwrap()])
        .failure();
    assert!(
        refused.stderr.contains(&format!("git repository {repo}"))
            && refused.stderr.contains("a `git` connection"),
        "{}",
        refused.stderr
    );
    let conn = write(
        dir.path(),
        "git.yml",
        &format!(
            "name: private-git\ntype: git\ntarget: http://127.0.0.1:{}\n\
             credentials:\n  type: pat\n  pat: {PAT}\n",
            host.port
        ),
    );
    s.create_from("connection", &conn, &[]);
    let missing = s
        .cli(&[
            "job",
            "create",
            "-f",
            job("@no-such-branch").to_str().unwrap(),
        ])
        .failure();
    assert!(
        missing.stderr.contains("has no branch, tag or commit"),
        "{}",
        missing.stderr
    );
    for reference in ["@main", &format!("@{head}")] {
        let name = submit(&s, &job(reference), &[]);
        let ended = wait_end(&s, &name);
        let text = log(&s, &name);
        assert_eq!(ended["status"], "Completed", "{ended:#}\n{text}");
        assert!(text.contains("trained from git"), "{text}");
        assert!(
            text.contains(&format!(
                "at commit {head} (credentials of connection private-git)"
            )),
            "{text}"
        );
        let shown = s
            .cli(&["job", "show", "-n", &name, "-o", "json"])
            .success()
            .stdout;
        let server_log = std::fs::read_to_string(s.home.join("server.log")).unwrap_or_default();
        for (what, seen) in [
            ("the log", &text),
            ("the job", &shown),
            ("the server's log", &server_log),
        ] {
            assert!(!seen.contains(PAT), "the token in {what}");
        }
    }
}
