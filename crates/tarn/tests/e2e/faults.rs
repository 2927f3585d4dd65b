//! Faults at the edges: a datastore that stops answering in the middle of an upload, a
//! datastore whose disk fills up, a metadata store with a damaged page. Each gives a clear
//! error naming what failed, leaves nothing half-written in view, and the server keeps serving
//! everything that does not need the broken part.

use crate::harness::{Home, Server};
use crate::jobs::write;
use crate::peers::{AZURITE_KEY, Peer};
use serde_json::json;
use std::io::Read;
use std::time::{Duration, Instant};

const MLFLOW: &str = "/ws/default/mlflow/api/2.0/mlflow";

/// The server still does what needs neither the broken datastore nor the damaged table.
fn still_serves(s: &Server) {
    let http = s.http();
    assert_eq!(http.get("/api/v1/health").0, 200);
    let (code, list) = http.get("/api/v1/workspaces");
    assert_eq!(code, 200, "{list}");
    let (code, exp) = http.post(
        &format!("{MLFLOW}/experiments/create"),
        &json!({"name": format!("still-{}", fastrand::u32(..))}),
    );
    assert_eq!(code, 200, "{exp}");
}

/// A body that sends `total` bytes and calls `halfway` once `at` bytes are out.
struct Body<F: FnMut()> {
    sent: usize,
    total: usize,
    at: usize,
    halfway: Option<F>,
}

impl<F: FnMut()> Read for Body<F> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.sent >= self.at
            && let Some(mut f) = self.halfway.take()
        {
            f();
        }
        let n = buf.len().min(self.total - self.sent).min(64 * 1024);
        buf[..n].fill(7);
        self.sent += n;
        Ok(n)
    }
}

#[test]
fn a_datastore_that_stops_answering_mid_upload_fails_it_clearly() {
    let s = Server::start();
    let mut azurite = Peer::azurite();
    azurite.azure_container("remote");
    let dir = tempfile::tempdir().unwrap();
    let spec = write(
        dir.path(),
        "remote.yml",
        &format!(
            "name: remote\ntype: azure_blob\naccount_name: {}\ncontainer_name: remote\nendpoint: {}\ncredentials:\n  account_key: {AZURITE_KEY}\n",
            crate::peers::AZURITE_ACCOUNT,
            azurite.url
        ),
    );
    s.create_from("datastore", &spec, &[]);

    let total = 64 << 20;
    let body = Body {
        sent: 0,
        total,
        at: 16 << 20,
        halfway: Some(move || azurite.kill()),
    };
    let started = Instant::now();
    let reply = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
        .put(format!(
            "{}/api/v1/workspaces/default/datastores/remote/paths/big.bin",
            s.url
        ))
        .bearer_auth(&s.token)
        .header("content-length", total)
        .body(reqwest::blocking::Body::sized(body, total as u64))
        .send();
    // The server answers with the storage's failure (or, having given up on the rest of
    // the body, closes the connection once it has answered).
    if let Ok(reply) = reply {
        let status = reply.status().as_u16();
        let text = reply.text().unwrap_or_default();
        assert!(
            status == 502 || status == 400,
            "a storage that stopped answering is the storage's failure: {status} {text}"
        );
        assert!(
            text.contains("remote"),
            "the error names the datastore: {text}"
        );
        assert!(!text.contains(AZURITE_KEY), "no credential in the error");
    }
    assert!(started.elapsed() < Duration::from_secs(120));
    // The datastore's listing fails clearly too, and soon; the rest goes on.
    let (code, reply) = s
        .http()
        .get("/api/v1/workspaces/default/datastores/remote/ls?path=");
    assert_eq!(code, 502, "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("remote")),
        "{reply}"
    );
    still_serves(&s);
}

#[test]
fn a_full_disk_fails_the_upload_that_does_not_fit_and_keeps_what_did() {
    // The server in a mount namespace of its own, where its datastore folder is a 4 MiB tmpfs.
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    let root = nix::unistd::Uid::effective().is_root();
    let mount = format!(
        "mount -t tmpfs -o size=4m tmpfs {} && exec \"$@\"",
        small.display()
    );
    let mut wrapper = vec!["unshare", if root { "-m" } else { "-Urm" }];
    wrapper.extend(["sh", "-c", &mount, "sh"]);
    let s = Server::start_as(Home::temp(), &wrapper, &[]);
    let spec = write(
        dir.path(),
        "small.yml",
        &format!("name: small\ntype: local\npath: {}\n", small.display()),
    );
    s.create_from("datastore", &spec, &[]);
    let http = s.http();
    let put = |path: &str, len: usize| {
        http.raw(
            "PUT",
            &format!("/api/v1/workspaces/default/datastores/small/paths/{path}"),
            vec![3u8; len],
        )
    };
    let (code, reply) = put("fits.bin", 1 << 20);
    assert!((200..300).contains(&code), "{reply}");
    let (code, reply) = put("too-big.bin", 8 << 20);
    assert!(
        (400..600).contains(&code) && code != 500,
        "a full disk is the datastore's failure, not an internal error: {code} {reply}"
    );
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("small") && (message.contains("space") || message.contains("full")),
        "the error names the datastore and the full disk: {reply}"
    );
    // What did not fit is not there, not even in part; what fitted is whole; room is free.
    let (_, listing) = http.get("/api/v1/workspaces/default/datastores/small/ls?path=");
    let files: Vec<(String, u64)> = listing["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["size"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        files,
        vec![("fits.bin".to_string(), 1 << 20)],
        "only the upload that fitted is there: {listing}"
    );
    let (code, reply) = put("fits-too.bin", 1 << 20);
    assert!(
        (200..300).contains(&code),
        "the failed upload freed its room: {reply}"
    );
    still_serves(&s);
}

#[test]
fn a_damaged_store_page_fails_the_reads_that_need_it_clearly_and_no_others() {
    let s = Server::start();
    let http = s.http();
    let (_, exp) = http.post(
        &format!("{MLFLOW}/experiments/create"),
        &json!({"name": "damaged"}),
    );
    let (_, run) = http.post(
        &format!("{MLFLOW}/runs/create"),
        &json!({"experiment_id": exp["experiment_id"], "start_time": 1}),
    );
    let run_id = run["run"]["info"]["run_id"].as_str().unwrap().to_string();
    for batch in 0..2 {
        let params: Vec<_> = (0..100)
            .map(|i| json!({"key": format!("p{batch}-{i}"), "value": "x".repeat(100)}))
            .collect();
        let (code, reply) = http.post(
            &format!("{MLFLOW}/runs/log-batch"),
            &json!({"run_id": run_id, "params": params}),
        );
        assert_eq!(code, 200, "{reply}");
    }
    let url = s.url.clone();
    let home = s.stop();

    // Overwrite the first page of the parameters' table with garbage.
    let db = home.path.join("tarn.db");
    let root_page = {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            use sqlx::Row;
            sqlx::any::install_default_drivers();
            let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&format!(
                "sqlite://{}?mode=ro",
                db.display()
            ))
            .await
            .unwrap();
            let row = sqlx::query("SELECT rootpage FROM sqlite_master WHERE name = 'run_params'")
                .fetch_one(&mut conn)
                .await
                .unwrap();
            row.get::<i64, _>(0)
        })
    };
    let mut bytes = std::fs::read(&db).unwrap();
    let page = 4096 * (root_page as usize - 1);
    for b in &mut bytes[page..page + 4096] {
        *b = 0xA5;
    }
    std::fs::write(&db, bytes).unwrap();

    let s = Server::restart_on(home, &url);
    let http = s.http();
    let (code, reply) = http.get(&format!("{MLFLOW}/runs/get?run_id={run_id}"));
    assert!(
        code >= 500,
        "a read of the damaged table fails: {code} {reply}"
    );
    let text = reply.to_string();
    assert!(
        text.contains("damaged") && text.contains("backup"),
        "the error says the store is damaged and what to do: {reply}"
    );
    // Everything that does not read the damaged table still works.
    still_serves(&s);
    let (code, reply) = http.post(
        &format!("{MLFLOW}/experiments/search"),
        &json!({"max_results": 10}),
    );
    assert_eq!(code, 200, "{reply}");
}
