//! Single sign-on against a real OpenID provider (`oidc-provider` from npm, driven in real
//! headless Chromium): the studio's "Sign in with …" (authorization code with PKCE, state and
//! nonce), `tarn login`'s device flow, users made on first sign-in from the provider's claims,
//! roles given to a group claim, the provider rotating its signing key, and ID tokens that are
//! expired, tampered with, for another client, from another issuer, for another sign-in or
//! signed with an unpublished key — all refused.

use crate::harness::{Home, Server};
use crate::oidc_peer::{self, Oidc};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// Tarn with single sign-on through a provider on `port` (started after it).
fn tarn_with_sso(port: u16) -> Server {
    let issuer = oidc_peer::issuer(port);
    Server::start_with(
        Home::temp(),
        &[("TARN_OIDC_CLIENT_SECRET", "tarn-secret")],
        &[
            "--oidc-issuer",
            &issuer,
            "--oidc-client-id",
            "tarn",
            "--oidc-name",
            "Test IdP",
        ],
    )
}

/// Runs `tests/peers/sso.mjs` in `mode` as `user`; its output.
fn browser(mode: &str, user: &str, vars: &[(&str, &str)]) -> String {
    let mut cmd = Command::new("node");
    cmd.arg(oidc_peer::script("sso.mjs"))
        .env("MODE", mode)
        .env("OIDC_USER", user);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running node sso.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "sso.mjs {mode} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn studio(s: &Server, user: &str) -> String {
    browser("studio", user, &[("TARN_URL", &s.url)])
}

fn studio_refused(s: &Server, user: &str) -> String {
    browser("studio-refused", user, &[("TARN_URL", &s.url)])
}

/// `tarn login` as `user`: the CLI prints a link, the browser confirms it; the CLI's output.
/// `home` is the person's own (their laptop's), not the server's.
fn cli_login(s: &Server, user: &str, home: &std::path::Path) -> std::process::Output {
    let mut child = Command::new(crate::harness::BIN)
        .args(["login", "--server", &s.url])
        .env("TARN_HOME", home)
        .env_remove("TARN_TOKEN")
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let link = loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            panic!("tarn login printed no link: {seen}");
        }
        seen.push_str(&line);
        if let Some(rest) = line.trim().strip_prefix("To sign in with Test IdP, open ") {
            break rest.to_string();
        }
    };
    browser("device", user, &[("LINK", &link)]);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let mut out = child.wait_with_output().unwrap();
    out.stderr = format!("{seen}{rest}").into_bytes();
    out
}

#[test]
fn people_sign_in_to_the_studio_and_the_cli_through_the_provider() {
    let port = crate::peers::free_port();
    let s = tarn_with_sso(port);
    let mut idp = Oidc::start(port, &s.url);
    // Roles for a group before anyone in it has signed in.
    s.cli(&[
        "role",
        "assign",
        "--group",
        "ml-team",
        "--role",
        "Data Scientist",
        "-w",
        "default",
    ])
    .success();

    // The studio: alice is made from her claims, with her group, and the page says how.
    let page = studio(&s, "alice");
    assert!(
        page.contains("alice@example.com") && page.contains("via Test IdP"),
        "{page}"
    );
    let alice = s
        .cli(&["user", "show", "-n", "alice@example.com", "-o", "json"])
        .success()
        .json();
    assert_eq!(alice["groups"], serde_json::json!(["ml-team"]), "{alice:#}");
    assert_eq!(alice["sso"], true, "{alice:#}");
    assert!(
        page.contains("at /ws/default/jobs"),
        "back where she was going: {page}"
    );
    let alice = s
        .cli(&["user", "show", "-n", "alice@example.com", "-o", "json"])
        .success()
        .json();
    assert_eq!(alice["kind"], "user", "{alice:#}");

    // The CLI: the device flow gives an expiring token for her, used from then on.
    let laptop = tempfile::tempdir().unwrap();
    let out = cli_login(&s, "alice", laptop.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Signed in to") && stderr.contains("alice@example.com"),
        "{stderr}"
    );
    let login: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(laptop.path().join("login.json")).unwrap())
            .unwrap();
    assert!(login["expires_at"].as_i64().unwrap() > 0, "{login:#}");
    // Her group's role lets her work in the workspace (no role of her own there).
    let as_alice = |args: &[&str]| {
        let mut cmd = Command::new(crate::harness::BIN);
        cmd.args(args)
            .env("TARN_HOME", laptop.path())
            .env_remove("TARN_TOKEN")
            .env_remove("TARN_SERVER");
        cmd.output().unwrap()
    };
    let listed = as_alice(&["model", "list", "-w", "default", "-o", "json"]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let roles = s
        .cli(&["role", "list", "-w", "default", "-o", "json"])
        .success()
        .json();
    assert!(roles.to_string().contains("ml-team"), "{roles:#}");
    // bob's group has no role: he is signed in, with no workspace to see.
    let bob = browser("studio", "bob", &[("TARN_URL", &s.url), ("TARN_NEXT", "/")]);
    assert!(
        bob.contains("bob@example.com") && bob.contains("at /\n"),
        "{bob}"
    );
    let h = s.http().with_token(Some(login["token"].as_str().unwrap()));
    assert_eq!(h.get("/api/v1/workspaces/default/models").0, 200);

    // The provider rotates its key: Tarn fetches the new one and sign-ins go on.
    idp.restart("k2,k1");
    let again = studio(&s, "alice");
    assert!(again.contains("alice@example.com"), "{again}");

    // A disabled user cannot sign in, and her CLI sign-in stops working.
    s.cli(&["user", "disable", "-n", "alice@example.com"])
        .success();
    let refused = studio_refused(&s, "alice");
    assert!(refused.contains("disabled"), "{refused}");
    let listed = as_alice(&["model", "list", "-w", "default"]);
    assert!(!listed.status.success());
    s.cli(&["user", "enable", "-n", "alice@example.com"])
        .success();

    // `tarn logout` revokes the CLI's token.
    let out = as_alice(&["logout"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(h.get("/api/v1/workspaces/default/models").0, 401);
    assert!(!laptop.path().join("login.json").exists());
}

#[test]
fn id_tokens_that_do_not_verify_are_refused() {
    let port = crate::peers::free_port();
    let s = tarn_with_sso(port);
    let idp = Oidc::start(port, &s.url);
    for (mode, says) in [
        ("expired", "ExpiredSignature"),
        ("tampered", "InvalidSignature"),
        ("wrong-aud", "InvalidAudience"),
        ("wrong-iss", "InvalidIssuer"),
        ("wrong-nonce", "nonce"),
        ("unpublished-key", "does not publish"),
    ] {
        idp.spoil_next(mode);
        let refused = studio_refused(&s, "alice");
        assert!(
            refused.contains("sign-in refused") && refused.contains(says),
            "{mode}: {refused}"
        );
    }
    // Nobody was made by a refused sign-in; a good one goes through.
    let users = s.cli(&["user", "list", "-o", "json"]).success().json();
    assert!(!users.to_string().contains("alice"), "{users:#}");
    let page = browser(
        "studio",
        "alice",
        &[("TARN_URL", &s.url), ("TARN_NEXT", "/")],
    );
    assert!(page.contains("alice@example.com"), "{page}");

    // A local user holding the name the provider gives is not taken over.
    s.cli(&["user", "create", "-n", "bob@example.com"])
        .success();
    let refused = studio_refused(&s, "bob");
    assert!(refused.contains("exists"), "{refused}");

    // A callback this browser did not begin (no cookie) is refused.
    let client = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = client
        .get(format!("{}/login/oidc/callback?code=x&state=y", s.url))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert!(resp.text().unwrap().contains("did not begin a sign-in"));
}

#[test]
fn without_single_sign_on_tarn_login_says_how_to_get_in() {
    let s = Server::start();
    let out = s.cli(&["login", "--server", &s.url]).failure();
    assert!(out.stderr.contains("no single sign-on"), "{}", out.stderr);
    let (status, body) = s.http().with_token(None).get("/api/v1/login");
    assert_eq!(
        (status, body["sso"].clone()),
        (200, serde_json::Value::Null)
    );
    // The login page offers no provider.
    let page = reqwest::blocking::get(format!("{}/login", s.url))
        .unwrap()
        .text()
        .unwrap();
    assert!(!page.contains("Sign in with"), "{page}");
}
