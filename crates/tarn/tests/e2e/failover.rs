//! Several servers on one PostgreSQL store behind one address, as a team runs them: a small TCP
//! proxy here plays the load balancer (each connection goes to the first server that accepts
//! it). Any server answers; one leads and runs the scheduler. The leader is SIGKILLed three
//! times under a steady load of job submissions and MLflow writes: each time another server
//! leads within 10 s, and in the end every acknowledged write is there and every job completed,
//! having run exactly once, its log whole on every server. A studio session opened on one server works on the others. A
//! server whose vault key does not match the store's is refused.

use crate::harness::{Home, PgDatabase, Server, spawn_up_as};
use crate::jobs::{HOST_ENV, write};
use serde_json::{Value, json};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Forwards each connection to the first of `backends` that accepts it.
struct Proxy {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start(backends: Vec<u16>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Some(server) = backends
                    .iter()
                    .find_map(|p| TcpStream::connect(("127.0.0.1", *p)).ok())
                else {
                    continue; // no server up: the client sees the connection close
                };
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut c1, mut s1) = (client, server);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c1, &mut s1);
                    let _ = s1.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Proxy { port, stop }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// The server status as server `port` itself answers it.
fn status_of(token: &str, port: u16) -> Option<Value> {
    status_at(token, &format!("http://127.0.0.1:{port}"))
}

/// The server status as the server at `url` answers it.
fn status_at(token: &str, url: &str) -> Option<Value> {
    let reply = reqwest::blocking::Client::new()
        .get(format!("{url}/api/v1/server/status"))
        .bearer_auth(token)
        .timeout(Duration::from_secs(5))
        .send()
        .ok()?;
    reply.json().ok()
}

/// Waits until one of the servers on `ports` says it leads; its index.
fn leader(token: &str, ports: &[Option<u16>], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        for (i, port) in ports.iter().enumerate() {
            if let Some(port) = port
                && status_of(token, *port).is_some_and(|s| s["leader"] == true)
            {
                return i;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no server leads after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_leader_is_killed_three_times_and_nothing_is_lost_or_run_twice() {
    let db = PgDatabase::new();
    let ports = crate::peers::free_ports(3);
    let proxy = Proxy::start(ports.clone());
    let public = format!("http://127.0.0.1:{}", proxy.port);
    let args = ["--store", db.url.as_str(), "--public-url", public.as_str()];
    let start = |home: Home, port: u16| -> Server {
        let (child, url) =
            spawn_up_as(&home.path, port, &[], &[], &args).unwrap_or_else(|e| panic!("{e}"));
        Server::adopt(home, child, url)
    };
    let first = start(Home::temp(), ports[0]);
    let key = std::fs::read(first.home.join("vault.key")).unwrap();
    let mut servers: Vec<Option<Server>> = vec![Some(first)];
    for port in &ports[1..] {
        let home = Home::temp();
        std::fs::write(home.path.join("vault.key"), &key).unwrap();
        servers.push(Some(start(home, *port)));
    }
    let token = servers[0].as_ref().unwrap().token.clone();

    // A server with another vault key is refused.
    let stranger = Home::temp();
    std::fs::write(
        stranger.path.join("vault.key"),
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    )
    .unwrap();
    let refused = spawn_up_as(&stranger.path, 0, &[], &[], &args)
        .expect_err("a server with another vault key must not start");
    assert!(
        refused.contains("does not open this database's vault"),
        "{refused}"
    );

    // Every server answers, and all agree on one leader.
    let live = |servers: &Vec<Option<Server>>| -> Vec<Option<u16>> {
        servers
            .iter()
            .zip(&ports)
            .map(|(s, p)| s.as_ref().map(|_| *p))
            .collect()
    };
    let lead = leader(&token, &live(&servers), Duration::from_secs(10));
    for port in &ports {
        let status = status_of(&token, *port).expect("every server answers");
        let listed = status["servers"].as_array().unwrap();
        assert_eq!(listed.len(), 3, "{status:#}");
        let leaders: Vec<&Value> = listed.iter().filter(|s| s["leader"] == true).collect();
        assert_eq!(leaders.len(), 1, "{status:#}");
        // Each server is listed at its own address (where the others send it requests).
        assert_eq!(
            leaders[0]["url"],
            format!("http://127.0.0.1:{}", ports[lead]),
            "{status:#}"
        );
    }
    // A studio session opened on one server is good on another, and ends on all at logout.
    let browser = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = browser
        .post(format!("http://127.0.0.1:{}/login", ports[0]))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}&next=/"))
        .send()
        .unwrap();
    assert_eq!(login.status().as_u16(), 303);
    let session = login.headers()["set-cookie"].to_str().unwrap();
    let session = session.split(';').next().unwrap().to_string();
    let page = |port: u16| {
        browser
            .get(format!("http://127.0.0.1:{port}/ws/default/jobs"))
            .header("cookie", &session)
            .send()
            .unwrap()
    };
    let on_second = page(ports[1]);
    assert_eq!(
        on_second.status().as_u16(),
        200,
        "the session is known to every server"
    );
    let html = on_second.text().unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_string();
    let logout = browser
        .post(format!("http://127.0.0.1:{}/logout", ports[2]))
        .header("cookie", &session)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}"))
        .send()
        .unwrap();
    assert_eq!(logout.status().as_u16(), 303);
    assert_eq!(
        page(ports[0]).status().as_u16(),
        303,
        "logged out everywhere"
    );

    let cli = |args: &[&str]| servers.iter().flatten().next().unwrap().cli(args);
    let dir = tempfile::tempdir().unwrap();
    let cluster = write(
        dir.path(),
        "cpu.yml",
        "name: cpu\ntype: amlcompute\nmin_instances: 0\nmax_instances: 4\n",
    );
    cli(&["compute", "create", "-f", cluster.to_str().unwrap()]).success();
    // Each start of a job records itself on the job's MLflow run as a parameter of its own
    // (retried until acknowledged: the same key and value again change nothing).
    write(
        dir.path(),
        "src/start.py",
        "import json, os, time, uuid, urllib.request as u\n\
         body = json.dumps({'run_id': os.environ['MLFLOW_RUN_ID'], 'key': 'start-' + uuid.uuid4().hex, 'value': '1'}).encode()\n\
         url = os.environ['MLFLOW_TRACKING_URI'] + '/api/2.0/mlflow/runs/log-parameter'\n\
         headers = {'Authorization': 'Bearer ' + os.environ['MLFLOW_TRACKING_TOKEN'], 'Content-Type': 'application/json'}\n\
         for attempt in range(60):\n\
         \x20   try:\n\
         \x20       u.urlopen(u.Request(url, body, headers), timeout=10)\n\
         \x20       break\n\
         \x20   except Exception:\n\
         \x20       time.sleep(0.5)\n\
         time.sleep(2)\n",
    );
    let job_file = write(
        dir.path(),
        "job.yml",
        &format!("compute: azureml:cpu\ncode: ./src\ncommand: python3 start.py\n{HOST_ENV}"),
    );
    let (_, run) = servers[lead].as_ref().unwrap().http().post(
        "/ws/default/mlflow/api/2.0/mlflow/runs/create",
        &json!({"experiment_id": "0", "run_name": "steady"}),
    );
    let run_id = run["run"]["info"]["run_id"].as_str().unwrap().to_string();

    // A schedule firing every two seconds through it all: only the leader fires, and one
    // that takes over makes up what was due meanwhile (`missed_fires: all`), each due time once.
    let ticker = write(
        dir.path(),
        "ticker.yml",
        &format!(
            "name: ticker\nmissed_fires: all\ntrigger:\n  type: cron\n  expression: \"*/2 * * * * *\"\ncreate_job:\n  command: echo tick\n  compute: azureml:local\n  {}",
            HOST_ENV.replace('\n', "\n  ")
        ),
    );
    cli(&["schedule", "create", "-f", ticker.to_str().unwrap()]).success();

    // The steady load: MLflow writes and job submissions through the proxy, counting only
    // what was acknowledged.
    let done = Arc::new(AtomicBool::new(false));
    let acked_steps = Arc::new(Mutex::new(Vec::<i64>::new()));
    let writer = {
        let (done, acked, run_id, public, token) = (
            done.clone(),
            acked_steps.clone(),
            run_id.clone(),
            public.clone(),
            token.clone(),
        );
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let mut step = 0i64;
            while !done.load(Ordering::SeqCst) {
                let ok = client
                    .post(format!(
                        "{public}/ws/default/mlflow/api/2.0/mlflow/runs/log-metric"
                    ))
                    .bearer_auth(&token)
                    .json(&json!({"run_id": run_id, "key": "steady", "value": step, "timestamp": step, "step": step}))
                    .send()
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    acked.lock().unwrap().push(step);
                }
                step += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let jobs = Arc::new(Mutex::new(Vec::<String>::new()));
    let submitter = {
        let (done, jobs, job_file, home) = (
            done.clone(),
            jobs.clone(),
            job_file.clone(),
            servers[0].as_ref().unwrap().home.clone(),
        );
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                let out = std::process::Command::new(crate::harness::BIN)
                    .args([
                        "job",
                        "create",
                        "-f",
                        job_file.to_str().unwrap(),
                        "-o",
                        "json",
                    ])
                    .env("TARN_HOME", &home)
                    .env_remove("TARN_SERVER")
                    .env_remove("TARN_TOKEN")
                    .output()
                    .unwrap();
                if out.status.success() {
                    let job: Value = serde_json::from_slice(&out.stdout).unwrap();
                    jobs.lock()
                        .unwrap()
                        .push(job["name"].as_str().unwrap().to_string());
                }
                std::thread::sleep(Duration::from_millis(700));
            }
        })
    };

    // Kill the leader three times; each time another leads within 10 s, and the killed one
    // comes back (same home, same address) as a follower.
    let mut lead = lead;
    for round in 0..3 {
        std::thread::sleep(Duration::from_secs(3));
        let killed = servers[lead].take().unwrap().kill();
        let at = Instant::now();
        let next = leader(&token, &live(&servers), Duration::from_secs(10));
        let took = at.elapsed();
        assert_ne!(next, lead);
        eprintln!("round {round}: server {next} leads {took:?} after server {lead} was killed");
        servers[lead] = Some(start(killed, ports[lead]));
        lead = next;
    }
    std::thread::sleep(Duration::from_secs(2));
    done.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    submitter.join().unwrap();

    let any = servers.iter().flatten().next().unwrap();
    any.cli(&["schedule", "disable", "-n", "ticker"]).success();
    let listed = any
        .cli(&["job", "list", "-o", "json", "--max-results", "1000"])
        .success()
        .json();
    let mut dues: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["tags"]["azureml.schedule"] == "ticker")
        .map(|j| {
            j["tags"]["azureml.schedule.due"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    dues.sort();
    let seconds: Vec<i64> = dues
        .iter()
        .map(|d| d.parse::<jiff::Timestamp>().unwrap().as_second())
        .collect();
    assert!(seconds.len() >= 8, "the schedule ran: {dues:?}");
    assert!(
        seconds.windows(2).all(|w| w[1] - w[0] == 2),
        "each due time fired once, none missed, across three leader kills: {dues:?}"
    );

    // Every acknowledged metric is there.
    let (_, history) = any.http().get(&format!(
        "/ws/default/mlflow/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key=steady&max_results=100000"
    ));
    let stored: std::collections::BTreeSet<i64> = history["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["step"].as_i64().unwrap())
        .collect();
    let acked = acked_steps.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "the load ran: {} writes acknowledged",
        acked.len()
    );
    let lost: Vec<&i64> = acked.iter().filter(|s| !stored.contains(s)).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");

    // Every job completes, having run once.
    let jobs = jobs.lock().unwrap().clone();
    eprintln!(
        "{} MLflow writes and {} jobs acknowledged through three leader kills",
        acked.len(),
        jobs.len()
    );
    assert!(
        jobs.len() >= 10,
        "the load ran: {} jobs submitted",
        jobs.len()
    );
    for name in &jobs {
        let deadline = Instant::now() + Duration::from_secs(120);
        let job = loop {
            let job = any
                .cli(&["job", "show", "-n", name, "-o", "json"])
                .success()
                .json();
            if matches!(
                job["status"].as_str(),
                Some("Completed" | "Failed" | "Canceled")
            ) {
                break job;
            }
            assert!(Instant::now() < deadline, "{name} never ended: {job:#}");
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(job["status"], "Completed", "{job:#}");
        let (_, run) = any.http().get(&format!(
            "/ws/default/mlflow/api/2.0/mlflow/runs/get?run_id={name}"
        ));
        let starts = run["run"]["data"]["params"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["key"].as_str().is_some_and(|k| k.starts_with("start-")))
            .count();
        assert_eq!(starts, 1, "{name} ran once: {run:#}");
        // Its log is one log, whichever server the runner's appends reached and whichever
        // server is asked.
        let logs: Vec<String> = ports
            .iter()
            .map(|port| {
                reqwest::blocking::Client::new()
                    .get(format!(
                        "http://127.0.0.1:{port}/api/v1/workspaces/default/jobs/{name}/log"
                    ))
                    .bearer_auth(&token)
                    .send()
                    .and_then(|r| r.text())
                    .unwrap()
            })
            .collect();
        assert!(logs.iter().all(|l| *l == logs[0]), "{name}: {logs:#?}");
        assert_eq!(
            logs[0].matches("[tarn] running:").count(),
            1,
            "{name}: {}",
            logs[0]
        );
    }
}

/// Whether the server at `url` says it leads.
fn leads(token: &str, url: &str) -> bool {
    status_at(token, url).is_some_and(|s| s["leader"] == true)
}

/// Online endpoints on two servers: the replicas run on the leader, and the follower answers
/// scoring, a deployment's state and its logs too (it sends them to the leader). When the
/// leader is SIGKILLed, the other server leads, starts the replicas and scores.
#[test]
fn online_endpoints_answer_on_every_server_and_move_with_the_leader() {
    use crate::endpoints::{deployment, key, project, score, show_deployment};
    let db = PgDatabase::new();
    let args = ["--store", db.url.as_str()];
    let first = Server::start_with(Home::temp(), &[], &args);
    let home = Home::temp();
    std::fs::copy(first.home.join("vault.key"), home.path.join("vault.key")).unwrap();
    let second = Server::start_with(home, &[], &args);
    assert!(
        leads(&first.token, &first.url),
        "the first server on a store leads"
    );
    assert!(!leads(&second.token, &second.url));
    let status: Value = second.http().get("/api/v1/server/status").1;
    let leader = status["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["leader"] == true)
        .cloned()
        .unwrap_or_default();
    assert_eq!(leader["url"], first.url.as_str(), "{status:#}");

    // Everything about the endpoint goes through the follower.
    let dir = tempfile::tempdir().unwrap();
    let ep = project(dir.path(), "shared", "key");
    second
        .cli(&["online-endpoint", "create", "-f", ep.to_str().unwrap()])
        .success();
    let blue = deployment(dir.path(), "shared", "blue", "");
    let d = second
        .cli(&[
            "online-deployment",
            "create",
            "-f",
            blue.to_str().unwrap(),
            "--all-traffic",
            "-o",
            "json",
        ])
        .success()
        .json();
    assert_eq!(d["provisioning_state"], "Succeeded", "{d:#}");
    assert_eq!(d["replicas"].as_array().unwrap().len(), 1, "{d:#}");
    let shown = show_deployment(&second, "shared", "blue");
    assert_eq!(shown["replicas"], d["replicas"], "{shown:#}");
    let logs = second
        .cli(&[
            "online-deployment",
            "get-logs",
            "-n",
            "blue",
            "-e",
            "shared",
        ])
        .success()
        .stdout;
    assert!(logs.contains("init called"), "{logs}");
    let (primary, _) = key(&second, "shared");
    let client = reqwest::blocking::Client::new();
    for s in [&first, &second] {
        let uri = format!("{}/endpoints/shared/score", s.url);
        let (status, who, body) = score(&client, &uri, &primary, &json!({"data": [1, 2]}), None);
        assert_eq!((status, who.as_str()), (200, "blue"), "{body}");
        assert_eq!(body["total"], 30, "{body}");
        let (status, _, body) = score(&client, &uri, "not-a-key", &json!({"data": [1]}), None);
        assert_eq!(status, 401, "the leader checks the key: {body}");
    }

    // The leader dies: the other server leads, runs the replica and scores.
    let _home = first.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !leads(&second.token, &second.url) {
        assert!(Instant::now() < deadline, "no new leader in 10 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let uri = format!("{}/endpoints/shared/score", second.url);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (status, _, body) = score(&client, &uri, &primary, &json!({"data": [4]}), None);
        if status == 200 {
            assert_eq!(body["total"], 40, "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new leader does not score: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
