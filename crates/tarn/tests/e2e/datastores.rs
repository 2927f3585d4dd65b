//! Datastores on real storage through the CLI: connectivity checks with clear errors and no
//! residue, workspaces on Azure Blob, content-addressed data uploads, transfers with integrity,
//! traversal attempts, and interrupted uploads.

use crate::harness::{Server, corpus};
use crate::peers::{AZURITE_ACCOUNT, AZURITE_KEY, Peer};
use std::path::Path;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn azure_yaml(name: &str, peer: &Peer, container: &str, key: &str) -> String {
    format!(
        "$schema: https://azuremlschemas.azureedge.net/latest/azureBlob.schema.json\nname: {name}\ntype: azure_blob\naccount_name: {AZURITE_ACCOUNT}\ncontainer_name: {container}\nendpoint: {}\ncredentials:\n  account_key: {key}\n",
        peer.url
    )
}

fn datastore_names(s: &Server) -> Vec<String> {
    s.cli(&["datastore", "list", "-o", "json"])
        .success()
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn datastore_create_checks_the_storage_and_stores_nothing_on_failure() {
    let s = Server::start();
    let azurite = Peer::azurite();
    azurite.azure_container("models");
    let moto = Peer::moto();
    moto.s3_bucket("features");
    let dir = tempfile::tempdir().unwrap();
    let before = datastore_names(&s);

    let wrong = write(
        dir.path(),
        "wrong.yml",
        &azure_yaml(
            "wrong_key",
            &azurite,
            "models",
            "d3Jvbmcta2V5LXZhbHVlLWZvci10ZXN0aW5nLTAwMDAwMDAwMDAwMDAwMDAwMDAwMA==",
        ),
    );
    let r = s.cli(&["datastore", "create", "-f", &wrong]).failure();
    assert!(r.stderr.contains("refused the credentials"), "{}", r.stderr);
    assert!(
        !r.stderr.contains("d3Jvbmcta2V5"),
        "the key leaked: {}",
        r.stderr
    );

    let missing = write(
        dir.path(),
        "missing.yml",
        &azure_yaml("no_container", &azurite, "nosuchcontainer", AZURITE_KEY),
    );
    let r = s.cli(&["datastore", "create", "-f", &missing]).failure();
    assert!(
        r.stderr.contains("container or bucket does not exist"),
        "{}",
        r.stderr
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = write(
        dir.path(),
        "down.yml",
        &format!(
            "name: down\ntype: s3\nbucket: b\nendpoint_url: http://127.0.0.1:{closed}\ncredentials:\n  access_key_id: k\n  secret_access_key: s3-secret-never-shown\n"
        ),
    );
    let r = s
        .cli(&["datastore", "create", "-f", &unreachable])
        .failure();
    assert!(
        r.stderr.contains("cannot reach the storage endpoint"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("s3-secret-never-shown"));
    assert_eq!(datastore_names(&s), before, "failed creates stored nothing");

    let good = write(
        dir.path(),
        "good.yml",
        &azure_yaml("models_blob", &azurite, "models", AZURITE_KEY),
    );
    let created = s
        .cli(&["datastore", "create", "-f", &good, "-o", "json"])
        .success()
        .json();
    assert_eq!(created["spec"]["credentials"], "<stored in vault>");
    let s3 = write(
        dir.path(),
        "s3.yml",
        &format!(
            "name: features_s3\ntype: s3\nbucket: features\nendpoint_url: {}\ncredentials:\n  access_key_id: testing\n  secret_access_key: testing\n",
            moto.url
        ),
    );
    s.cli(&["datastore", "create", "-f", &s3]).success();

    // Files go in and come back out through both.
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("nested dir")).unwrap();
    std::fs::write(src.join("a.csv"), "x,y\n1,2\n").unwrap();
    std::fs::write(src.join("nested dir/ünïcode.txt"), "ü").unwrap();
    for ds in ["models_blob", "features_s3"] {
        let up = s
            .cli(&[
                "datastore",
                "upload",
                "--datastore",
                ds,
                "--src",
                src.to_str().unwrap(),
                "--dest",
                "in",
            ])
            .success();
        assert!(
            !up.stderr.contains("ETA") && !up.stderr.contains('\r'),
            "no progress bar without a terminal: {:?}",
            up.stderr
        );
        let ls = s
            .cli(&[
                "datastore",
                "ls",
                "--datastore",
                ds,
                "--path",
                "in",
                "-r",
                "-o",
                "json",
            ])
            .success()
            .json();
        let paths: Vec<&str> = ls["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["path"].as_str().unwrap())
            .collect();
        assert_eq!(paths, ["in/a.csv", "in/nested dir/ünïcode.txt"], "{ds}");
        let out = dir.path().join(format!("out-{ds}"));
        s.cli(&[
            "datastore",
            "download",
            "--datastore",
            ds,
            "--src",
            "in",
            "--dest",
            out.to_str().unwrap(),
        ])
        .success();
        assert_eq!(
            std::fs::read_to_string(out.join("nested dir/ünïcode.txt")).unwrap(),
            "ü",
            "{ds}"
        );
        assert_eq!(
            std::fs::read_to_string(out.join("a.csv")).unwrap(),
            "x,y\n1,2\n",
            "{ds}"
        );
    }
}

#[test]
fn a_workspace_on_azure_blob_keeps_its_data_there() {
    let s = Server::start();
    let azurite = Peer::azurite();
    azurite.azure_container("tarnws");
    let dir = tempfile::tempdir().unwrap();
    let storage = write(
        dir.path(),
        "storage.yml",
        &azure_yaml("team_storage", &azurite, "tarnws", AZURITE_KEY),
    );
    s.cli(&[
        "workspace",
        "create",
        "--name",
        "cloudy",
        "--storage",
        &storage,
    ])
    .success();
    let stores = s
        .cli(&["datastore", "list", "-w", "cloudy", "-o", "json"])
        .success()
        .json();
    let by_name = |n: &str| {
        stores
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("workspaceblobstore")["type"], "azure_blob");
    assert_eq!(
        by_name("workspaceartifactstore")["spec"]["prefix"],
        "azureml"
    );
    assert_eq!(
        by_name("workspacefilestore")["type"],
        "local",
        "file-share types stay local"
    );
    assert_eq!(
        by_name("workspaceblobstore")["spec"]["credentials"],
        "<stored in vault>"
    );
    let ws = s
        .cli(&["workspace", "show", "-n", "cloudy", "-o", "json"])
        .success()
        .json();
    assert_eq!(ws["spec"]["storage"]["credentials"], "<stored in vault>");

    // A data asset from a local folder lands in Azure, once per content.
    let data = dir.path().join("images");
    std::fs::create_dir_all(&data).unwrap();
    for i in 0..30 {
        std::fs::write(
            data.join(format!("img{i:02}.bin")),
            vec![i as u8; 10_000 + i],
        )
        .unwrap();
    }
    let spec = write(
        dir.path(),
        "data.yml",
        "name: images\ntype: uri_folder\npath: ./images\n",
    );
    let v1 = s
        .cli(&["data", "create", "-f", &spec, "-w", "cloudy", "-o", "json"])
        .success()
        .json();
    let path = v1["spec"]["path"].as_str().unwrap().to_string();
    assert!(
        path.starts_with("azureml://datastores/workspaceblobstore/paths/LocalUpload/")
            && path.ends_with("/images/"),
        "{path}"
    );
    let again = s
        .cli(&["data", "create", "-f", &spec, "-w", "cloudy", "-o", "json"])
        .success();
    assert!(
        again.stderr.contains("already uploaded"),
        "identical content is not uploaded twice: {}",
        again.stderr
    );
    assert_eq!(again.json()["spec"]["path"], path.as_str());
    assert_eq!(again.json()["version"], "2");

    let listing = s
        .cli(&[
            "datastore",
            "ls",
            "-w",
            "cloudy",
            "--datastore",
            "workspaceblobstore",
            "--path",
            "LocalUpload",
            "-r",
            "-o",
            "json",
        ])
        .success()
        .json();
    assert_eq!(
        listing["files"].as_array().unwrap().len(),
        31,
        "30 files and the completion marker, once"
    );

    let out = dir.path().join("dl");
    s.cli(&[
        "data",
        "download",
        "-n",
        "images",
        "-w",
        "cloudy",
        "-p",
        out.to_str().unwrap(),
    ])
    .success();
    for i in 0..30 {
        assert_eq!(
            std::fs::read(out.join(format!("images/img{i:02}.bin"))).unwrap(),
            vec![i as u8; 10_000 + i]
        );
    }
}

#[test]
fn assets_upload_their_local_files() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("model")).unwrap();
    std::fs::write(dir.path().join("model/MLmodel"), "flavors: {}\n").unwrap();
    std::fs::write(
        dir.path().join("conda.yml"),
        "name: e\ndependencies:\n  - python=3.11\n  - pip:\n    - scikit-learn\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/train.py"), "print('hi')\n").unwrap();
    std::fs::create_dir_all(dir.path().join("table")).unwrap();
    std::fs::write(dir.path().join("table/data.csv"), "a\n1\n").unwrap();

    let model = write(
        dir.path(),
        "model.yml",
        "name: m\ntype: mlflow_model\npath: model\n",
    );
    let m = s
        .cli(&["model", "create", "-f", &model, "-o", "json"])
        .success()
        .json();
    assert!(
        m["spec"]["path"]
            .as_str()
            .unwrap()
            .starts_with("azureml://datastores/workspaceblobstore/paths/LocalUpload/")
    );
    let out = dir.path().join("got");
    s.cli(&["model", "download", "-n", "m", "-p", out.to_str().unwrap()])
        .success();
    assert_eq!(
        std::fs::read_to_string(out.join("m/MLmodel")).unwrap(),
        "flavors: {}\n"
    );

    let env = write(
        dir.path(),
        "env.yml",
        "name: e\nimage: python:3.11\nconda_file: conda.yml\n",
    );
    let e = s
        .cli(&["environment", "create", "-f", &env, "-o", "json"])
        .success()
        .json();
    assert_eq!(
        e["spec"]["conda_file"]["dependencies"][1]["pip"][0], "scikit-learn",
        "the conda file is inlined"
    );

    let comp = write(
        dir.path(),
        "comp.yml",
        "name: train\ncommand: python train.py\ncode: ./src\nenvironment: azureml:e:1\n",
    );
    let c = s
        .cli(&["component", "create", "-f", &comp, "-o", "json"])
        .success()
        .json();
    assert!(
        c["spec"]["code"].as_str().unwrap().ends_with("/src/"),
        "{}",
        c["spec"]["code"]
    );

    let table = write(
        dir.path(),
        "table.yml",
        "name: t\ntype: mltable\npath: ./table\n",
    );
    let r = s.cli(&["data", "create", "-f", &table]).failure();
    assert!(r.stderr.contains("MLTable"), "{}", r.stderr);
    let file = write(
        dir.path(),
        "file.yml",
        "name: f\ntype: uri_file\npath: ./table\n",
    );
    let r = s.cli(&["data", "create", "-f", &file]).failure();
    assert!(r.stderr.contains("not a file"), "{}", r.stderr);
    let gone = write(dir.path(), "gone.yml", "name: g\npath: ./nowhere\n");
    let r = s.cli(&["data", "create", "-f", &gone]).failure();
    assert!(r.stderr.contains("does not exist"), "{}", r.stderr);
    assert_eq!(
        s.cli(&["data", "list", "-o", "json"])
            .success()
            .json()
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

#[test]
fn paths_that_escape_a_datastore_are_refused() {
    let s = Server::start();
    let http = s.http();
    // (Literal `..` segments never leave an HTTP client; encoded ones reach the server.)
    for path in [
        "..%2F..%2Fetc%2Fpasswd",
        "a%2F..%2F..%2Fx",
        "..%5C..%5Cwindows",
        "dir/%2e%2e%2fx",
    ] {
        let (status, reply) = http.raw(
            "PUT",
            &format!("/api/v1/workspaces/default/datastores/workspaceblobstore/paths/{path}"),
            b"x".to_vec(),
        );
        assert_eq!(status, 400, "{path}: {reply}");
        assert!(
            reply["error"]["message"]
                .as_str()
                .unwrap()
                .contains("escapes"),
            "{reply}"
        );
        let (status, _) = http.get(&format!(
            "/api/v1/workspaces/default/datastores/workspaceblobstore/paths/{path}"
        ));
        assert_eq!(status, 400, "{path}");
    }
    let (status, _) =
        http.get("/api/v1/workspaces/default/datastores/workspaceblobstore/ls?path=../..");
    assert_eq!(status, 400);
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "x.txt", "x");
    let r = s
        .cli(&[
            "datastore",
            "upload",
            "--datastore",
            "workspaceblobstore",
            "--src",
            &f,
            "--dest",
            "../outside",
        ])
        .failure();
    assert!(r.stderr.contains("escapes"), "{}", r.stderr);
    let bad = write(
        dir.path(),
        "bad.yml",
        "name: bad\npath: azureml://datastores/workspaceblobstore/paths/../../etc\n",
    );
    let r = s.cli(&["data", "create", "-f", &bad]).failure();
    assert!(r.stderr.contains("escapes"), "{}", r.stderr);
    // Nothing was written outside the datastore.
    let root = s.cli(&["workspace", "show", "-o", "json"]).success().json()["storage_root"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!Path::new(&root).join("outside").exists());
}

#[test]
fn an_interrupted_upload_registers_no_asset() {
    let s = Server::start();
    // An Azurite that runs out of room part-way through the upload.
    let azurite = Peer::azurite_with_memory(8);
    azurite.azure_container("small");
    let dir = tempfile::tempdir().unwrap();
    let storage = write(
        dir.path(),
        "storage.yml",
        &azure_yaml("small_storage", &azurite, "small", AZURITE_KEY),
    );
    s.cli(&[
        "workspace",
        "create",
        "--name",
        "tight",
        "--storage",
        &storage,
    ])
    .success();
    let data = dir.path().join("big");
    std::fs::create_dir_all(&data).unwrap();
    for i in 0..40 {
        std::fs::write(
            data.join(format!("part{i:02}.bin")),
            vec![i as u8; 1024 * 1024],
        )
        .unwrap();
    }
    let spec = write(dir.path(), "data.yml", "name: big\npath: ./big\n");
    let r = s
        .cli(&["data", "create", "-f", &spec, "-w", "tight"])
        .failure();
    assert!(
        r.stderr.contains("uploading"),
        "a clear error names the failing upload: {}",
        r.stderr
    );
    assert_eq!(
        s.cli(&["data", "list", "-w", "tight", "-o", "json"])
            .success()
            .json()
            .as_array()
            .unwrap()
            .len(),
        0,
        "no asset was registered"
    );
    let markers = s
        .cli(&[
            "datastore",
            "ls",
            "-w",
            "tight",
            "--datastore",
            "workspaceblobstore",
            "--path",
            "LocalUpload",
            "-r",
            "-o",
            "json",
        ])
        .success()
        .json();
    assert!(
        !markers["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["path"].as_str().unwrap().ends_with(".tarn-complete")),
        "an incomplete upload is not marked complete"
    );
    let _ = corpus;
}

#[test]
fn bundles_and_single_files_mix_and_bad_bundles_write_nothing() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("mixed");
    std::fs::create_dir_all(&src).unwrap();
    // Files of exactly the bundle limit (1 MiB) fill bundles past the JSON body limit;
    // the 3 MiB one goes on its own.
    for i in 0..8u8 {
        std::fs::write(src.join(format!("one-mib-{i}.bin")), vec![i; 1024 * 1024]).unwrap();
    }
    std::fs::write(src.join("three-mib.bin"), vec![9u8; 3 * 1024 * 1024]).unwrap();
    s.cli(&[
        "datastore",
        "upload",
        "--datastore",
        "workspaceblobstore",
        "--src",
        src.to_str().unwrap(),
        "--dest",
        "mixed",
    ])
    .success();
    let out = dir.path().join("back");
    s.cli(&[
        "datastore",
        "download",
        "--datastore",
        "workspaceblobstore",
        "--src",
        "mixed",
        "--dest",
        out.to_str().unwrap(),
    ])
    .success();
    for i in 0..8u8 {
        assert_eq!(
            std::fs::read(out.join(format!("one-mib-{i}.bin"))).unwrap(),
            vec![i; 1024 * 1024]
        );
    }
    assert_eq!(
        std::fs::read(out.join("three-mib.bin")).unwrap(),
        vec![9u8; 3 * 1024 * 1024]
    );

    let http = s.http();
    let url = "/api/v1/workspaces/default/datastores/workspaceblobstore/bundle?dest=bad";
    let (status, reply) = http.raw("POST", url, b"\x00\x00\x00\x05{not".to_vec());
    assert_eq!(status, 400, "{reply}");
    // A traversal path inside a well-formed bundle is refused before anything is written.
    let header = br#"{"path":"../../escape.txt","size":1}"#;
    let mut body = (header.len() as u32).to_be_bytes().to_vec();
    body.extend_from_slice(header);
    body.push(b'x');
    body.extend_from_slice(&0u32.to_be_bytes());
    let (status, reply) = http.raw("POST", url, body);
    assert_eq!(status, 400, "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("escapes"),
        "{reply}"
    );
    let listing = s
        .cli(&[
            "datastore",
            "ls",
            "--datastore",
            "workspaceblobstore",
            "-r",
            "-o",
            "json",
        ])
        .success()
        .json();
    assert!(
        listing["files"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| !f["path"].as_str().unwrap().starts_with("bad")),
        "a refused bundle wrote nothing"
    );
}
