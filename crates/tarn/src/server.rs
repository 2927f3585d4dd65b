//! `tarn up`: the server on its embedded defaults. One process holds a `TARN_HOME` at a time
//! (a lock file), the store and vault open before the port is announced, and SIGINT/SIGTERM
//! shut down gracefully with the WAL checkpointed.

use crate::client::{Credentials, credentials_path, read_credentials};
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tarn_core::{Config, Tarn};
use tarn_store::Location;

pub struct UpArgs {
    pub home: PathBuf,
    /// Where the metadata lives; `None` is SQLite in `home`.
    pub store: Option<Location>,
    pub host: String,
    pub port: u16,
    pub public_url: Option<String>,
    pub advertise_url: Option<String>,
    pub vault_key_file: Option<PathBuf>,
    pub no_isolation: bool,
    /// HTTPS: the certificate chain and the private key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Plain HTTP on a non-loopback address, on purpose.
    pub insecure_http: bool,
    /// The default workspace's MLflow artifacts folder (absolute).
    pub artifact_store: Option<PathBuf>,
    /// How long audit events are kept, in ms.
    pub audit_retention_ms: i64,
    /// What one connection may hold and how many there may be.
    pub limits: crate::serve::Limits,
    /// `--backup-every … --backup-to …`: scheduled backups.
    pub backups: Option<tarn_core::backup::Schedule>,
    pub sso: crate::SsoArgs,
}

/// Whether an address is reachable from this machine only.
fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// This server's own address, for the other servers on its store: the address it listens on,
/// or the machine's name when it listens on every address.
fn own_url(scheme: &str, host: &str, port: u16) -> String {
    let unspecified = host
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified());
    let host = if unspecified {
        tarn_core::leader::hostname()
    } else if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    format!("{scheme}://{host}:{port}")
}

pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let home = &args.home;
    create_private_dir(home)?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(home.join("tarn.lock"))
        .with_context(|| format!("cannot open the lock file in {}", home.display()))?;
    if lock.try_lock().is_err() {
        bail!(
            "another Tarn server is already using {} (stop it first, or pass --home)",
            home.display()
        );
    }

    let location = args
        .store
        .clone()
        .unwrap_or_else(|| Location::Sqlite(home.join("tarn.db")));
    let store = location
        .open()
        .await
        .with_context(|| format!("cannot open the store {location}"))?;
    let store = Arc::new(store);
    let key_file = args
        .vault_key_file
        .clone()
        .unwrap_or_else(|| home.join("vault.key"));

    let tls = match &args.tls {
        Some((cert, key)) => Some(crate::tls::server_config(cert, key)?),
        None => None,
    };
    if tls.is_none() && !is_loopback(&args.host) && !args.insecure_http {
        bail!(
            "listening on {} without TLS would send tokens in the clear: pass --tls-cert and --tls-key, or --insecure-http to do it anyway",
            args.host
        );
    }
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let public_url = args
        .public_url
        .clone()
        .map(|u| u.trim_end_matches('/').to_string())
        .unwrap_or_else(|| format!("{scheme}://{}:{}", args.host, addr.port()));
    let advertise_url = args
        .advertise_url
        .clone()
        .map(|u| u.trim_end_matches('/').to_string())
        .unwrap_or_else(|| own_url(scheme, &args.host, addr.port()));

    let runner_program = std::env::current_exe().context("cannot find the tarn executable")?;
    let isolation = if args.no_isolation {
        tarn_core::isolation::Isolation::none("turned off with --no-isolation")
    } else {
        let mut iso = tarn_core::isolation::Isolation::probe(&runner_program);
        // Limits per identity: only a server that can hand out identities (root) sets them.
        if iso.identities && iso.namespaces {
            match tarn_core::isolation::cgroup::Layout::set_up() {
                Ok(layout) => iso.cgroups = Some(layout),
                Err(e) => iso
                    .missing
                    .push(format!("no memory or CPU limits per job ({e})")),
            }
        }
        iso
    };
    let config = Config {
        home: home.clone(),
        public_url: public_url.clone(),
        advertise_url,
        runner_program,
        isolation: isolation.clone(),
    };
    let tarn = Tarn::open(config, store.clone(), &key_file)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let saved = read_credentials(home);
    let fresh = tarn
        .bootstrap(
            saved.is_none(),
            args.artifact_store
                .as_ref()
                .map(|dir| serde_json::json!({"type": "local", "path": dir.display().to_string()}))
                .as_ref(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // A headless deployment's administrator token, by environment: stored hashed (user code
    // never sees the variable: runners pass no `TARN_*` variable on).
    if let Ok(given) = std::env::var("TARN_ADMIN_TOKEN") {
        tarn.users
            .set_bootstrap_token(given.trim())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    tarn.audit.set_retention(args.audit_retention_ms);
    if let Some(schedule) = &args.backups {
        tarn.backups.set_schedule(schedule.clone());
    }
    if let Some(issuer) = &args.sso.oidc_issuer {
        enable_sso(&tarn, issuer, &args.sso).await?;
    }
    let token = match (fresh, saved) {
        (Some(new), _) => new.token,
        (None, Some(saved)) => saved.token,
        (None, None) => bail!("no local credentials and none could be made"),
    };
    let creds = Credentials {
        server: public_url.clone(),
        token,
    };
    tarn_core::vault::write_private(
        &credentials_path(home),
        &serde_json::to_string_pretty(&creds)?,
    )
    .context("cannot write the local credentials")?;

    // Show it working: the services answer for the local administrator before we serve.
    let admin = tarn
        .users
        .authenticate(Some(&creds.token))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let workspaces = tarn
        .workspaces
        .list_workspaces(&admin)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("Tarn {} is running.", env!("CARGO_PKG_VERSION"));
    println!("  API:         {public_url}/api/v1");
    println!("  Studio:      {public_url}/");
    println!(
        "  Home:        {}   (vault key {})",
        home.display(),
        key_file.display()
    );
    println!("  Store:       {location}");
    if let Some(oidc) = tarn.users.sso() {
        println!(
            "  Sign-in:     {} ({}; `tarn login` for the CLI)",
            oidc.settings.display_name, oidc.settings.issuer
        );
    }
    println!(
        "  Credentials: {}   (the CLI uses them with no flags)",
        credentials_path(home).display()
    );
    for ws in &workspaces {
        let scope = tarn_core::Scope {
            workspace: &ws.row.name,
            kind: tarn_spec::Kind::Datastore,
            parent: None,
        };
        let stores = tarn
            .resources
            .list_resources(&admin, scope, None, false)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        println!(
            "  Workspace {:?}: {} datastores (default: {}), MLflow {}",
            ws.row.name,
            stores.len(),
            ws.default_datastore,
            ws.mlflow_tracking_uri
        );
    }
    if tls.is_none() && !is_loopback(&args.host) {
        println!(
            "  WARNING:     plain HTTP on {}: tokens cross the network in the clear (--insecure-http)",
            args.host
        );
        tracing::warn!("serving plain HTTP on {} (--insecure-http)", args.host);
    }
    if isolation.is_isolated() {
        println!("  Isolation:   {}", isolation.summary());
    } else {
        println!("  WARNING:     {}", isolation.summary());
        tracing::warn!("{}", isolation.summary());
    }
    println!(
        "Try `tarn workspace show -n default` or `tarn datastore list` in another terminal. Ctrl-C stops."
    );

    let tarn = Arc::new(tarn);
    // Several servers may share a PostgreSQL store: one of them runs the controllers. The
    // scheduler picks up jobs queued or running before a restart (queued ones start, running
    // ones are found or failed with the reason); online deployments' replicas and compute
    // instances that should run start again (they stop with the server).
    let background = tarn.start().await;
    let tarn_for_shutdown = tarn.clone();
    // Paths are routed after repeated slashes are merged (see `tarn_api::merge_slashes`).
    let app = tower_layer::Layer::layer(
        &axum::middleware::map_request(tarn_api::merge_slashes),
        tarn_api::router(tarn),
    );
    // Without TCP_NODELAY, a response's headers and body in separate writes wait out the
    // client's delayed ACK (40 ms per small download).
    use axum::serve::ListenerExt;
    match tls {
        Some(config) => {
            let listener = crate::tls::TlsListener::new(listener, config)?;
            crate::serve::serve(listener, app, args.limits.clone(), shutdown_signal()).await
        }
        None => {
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            crate::serve::serve(listener, app, args.limits.clone(), shutdown_signal()).await
        }
    }
    // Runners keep going in their own process groups; they report back to the next server.
    for task in background {
        task.abort();
    }
    tarn_for_shutdown.step_down().await;
    store.close().await;
    drop(lock);
    eprintln!("Tarn stopped.");
    Ok(())
}

pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Turns single sign-on on: the client secret from its file or TARN_OIDC_CLIENT_SECRET (then
/// kept in the vault), or the one kept before.
async fn enable_sso(tarn: &Tarn, issuer: &str, sso: &crate::SsoArgs) -> anyhow::Result<()> {
    let secret = match &sso.oidc_client_secret_file {
        Some(file) => Some(
            std::fs::read_to_string(file)
                .with_context(|| {
                    format!("cannot read --oidc-client-secret-file {}", file.display())
                })?
                .trim()
                .to_string(),
        ),
        None => std::env::var("TARN_OIDC_CLIENT_SECRET").ok(),
    };
    let lifetime = tarn_core::parse_lifetime_ms(&sso.oidc_cli_token_lifetime)
        .map_err(|e| anyhow::anyhow!("--oidc-cli-token-lifetime: {e}"))?;
    let settings = tarn_core::oidc::OidcSettings {
        issuer: issuer.trim_end_matches('/').to_string(),
        client_id: sso.oidc_client_id.clone().unwrap_or_default(),
        client_secret: String::new(),
        display_name: sso.oidc_name.clone(),
        user_claim: sso.oidc_user_claim.clone(),
        groups_claim: sso.oidc_groups_claim.clone(),
        cli_token_lifetime_ms: lifetime,
    };
    tarn.users
        .enable_sso(settings, secret.as_deref())
        .await
        .map_err(|e| anyhow::anyhow!("single sign-on: {e}"))
}
