//! What each CLI command does. Files are validated here first (so errors carry lines and
//! columns and nothing is sent), then sent to the server, which validates again.

use crate::ComputeCmd;
use crate::client::{self, Client, enc};
use crate::output::{self, Format};
use crate::{
    AssetCmd, AuditCmd, BackupCmd, Cli, Command, ConnectionCmd, DatastoreCmd, RegistryCmd,
    ResourceCmd, RoleCmd, ScheduleCmd, ServerCmd, SpCmd, StoreCmd, TokenCmd, UserCmd, Where,
    WorkspaceCmd,
};
use anyhow::{Context, bail};
use serde_json::{Value as Json, json};
use std::path::Path;
use std::process::ExitCode;
use tarn_spec::{Document, Kind, Node};

/// Errors already printed in full (validation reports); `main` only sets the exit code.
#[derive(Debug)]
pub struct Reported(pub String);

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Reported {}

/// One line per cause, with validation details spelled out.
pub fn describe(e: &anyhow::Error) -> String {
    let mut out = format!("{e:#}");
    if let Some(api) = e.downcast_ref::<client::ApiError>()
        && api.details.len() > 1
    {
        for d in &api.details {
            out.push_str(&format!(
                "\n  {}: {}",
                d["path"].as_str().unwrap_or(""),
                d["message"].as_str().unwrap_or("")
            ));
        }
    }
    out
}

/// Reads and validates a YAML file; prints warnings; fails with every error.
pub(crate) fn load(file: &Path, kind: Option<Kind>, sets: &[String]) -> anyhow::Result<Document> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let name = file.display().to_string();
    match tarn_spec::validate_yaml(&text, kind, sets) {
        Ok(doc) => {
            let mut shown = SHOWN_WARNINGS.lock().expect("warnings lock");
            for w in &doc.warnings {
                output::warn(&w.render(&name));
                shown.insert(w.message.clone());
            }
            Ok(doc)
        }
        Err(errors) => {
            let lines: Vec<String> = errors.iter().map(|d| d.render(&name)).collect();
            bail!(Reported(format!(
                "{} is invalid:\n{}",
                name,
                lines.join("\n")
            )))
        }
    }
}

/// The messages of the warnings `load` printed: the server's copies of them (whose paths may
/// run from another file's root) are not printed again.
static SHOWN_WARNINGS: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Prints the server's warnings about a document (its checks' too, e.g. a storage or cluster
/// that cannot be reached yet), but not those `load` printed already, with their lines.
pub(crate) fn print_warnings(value: &Json) {
    let shown = SHOWN_WARNINGS.lock().expect("warnings lock");
    for w in value["warnings"].as_array().into_iter().flatten() {
        let message = w["message"].as_str().unwrap_or("");
        if !shown.contains(message) {
            let path = w["path"].as_str().unwrap_or("");
            output::warn(&format!("warning: {path}: {message}"));
        }
    }
}

/// Applies `--set` overrides to a JSON spec (for `update`), with the same rules as for files.
fn apply_sets(spec: &Json, sets: &[String]) -> anyhow::Result<Json> {
    let mut node = Node::from_json(spec);
    for set in sets {
        tarn_spec::apply_set(&mut node, set).map_err(|d| anyhow::anyhow!("{}", d.message))?;
    }
    Ok(node.to_json())
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = cli.global.clone();
    let home = g.home();
    let client = || Client::new(g.server.as_deref(), g.token.as_deref(), &home);
    let default_ws = |given: Option<String>| -> String {
        given
            .or_else(|| client::read_config(&home).workspace)
            .unwrap_or_else(|| "default".into())
    };
    match cli.command {
        Command::Up(up) => {
            let store = match up.store.as_deref() {
                Some(url) => Some(tarn_store::Location::parse(url).map_err(anyhow::Error::msg)?),
                None => None,
            };
            crate::server::up(crate::server::UpArgs {
                home: home.clone(),
                store,
                host: up.host,
                port: up.port,
                public_url: up.public_url,
                advertise_url: up.advertise_url,
                vault_key_file: up.vault_key_file,
                no_isolation: up.no_isolation,
                tls: up.tls_cert.zip(up.tls_key),
                insecure_http: up.insecure_http,
                audit_retention_ms: tarn_core::parse_lifetime_ms(&up.audit_retention)
                    .map_err(|e| anyhow::anyhow!("--audit-retention: {e}"))?,
                limits: {
                    let duration =
                        |flag: &str, text: &str| -> anyhow::Result<std::time::Duration> {
                            let ms = tarn_core::parse_lifetime_ms(text)
                                .map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
                            Ok(std::time::Duration::from_millis(ms as u64))
                        };
                    let fds = crate::serve::raise_fd_limit();
                    crate::serve::Limits {
                        max_connections: up
                            .max_connections
                            .unwrap_or_else(|| crate::serve::default_max_connections(fds))
                            .max(1),
                        header_timeout: duration("--header-timeout", &up.header_timeout)?,
                        body_idle_timeout: duration("--body-timeout", &up.body_timeout)?,
                    }
                },
                backups: match (&up.backup_every, &up.backup_to) {
                    (Some(every), Some(to)) => Some(tarn_core::backup::Schedule {
                        every: std::time::Duration::from_millis(
                            tarn_core::parse_lifetime_ms(every)
                                .map_err(|e| anyhow::anyhow!("--backup-every: {e}"))?
                                as u64,
                        ),
                        to: tarn_core::backup::Destination::parse(to, Some(&up.backup_workspace))
                            .map_err(|e| anyhow::anyhow!("--backup-to: {e}"))?,
                        keep: up.backup_keep.max(1),
                        passphrase: match &up.backup_passphrase_file {
                            Some(file) => {
                                let pass = crate::backup::passphrase(Some(file))?
                                    .context("--backup-passphrase-file")?;
                                tarn_core::backup::check_passphrase(&pass).map_err(|e| {
                                    anyhow::anyhow!("--backup-passphrase-file: {e}")
                                })?;
                                Some(pass)
                            }
                            None => None,
                        },
                    }),
                    _ => None,
                },
                artifact_store: up
                    .artifact_store
                    .map(|dir| std::path::absolute(&dir))
                    .transpose()
                    .context("--artifact-store")?,
                sso: up.sso,
            })
            .await?;
        }
        Command::Validate(v) => {
            let kind = match v.kind.as_deref() {
                Some(k) => Some(Kind::from_group(k).with_context(|| format!("unknown --kind {k:?}: use a CLI group such as compute, data, job or online-deployment"))?),
                None => None,
            };
            let doc = load(&v.file, kind, &v.sets)?;
            let mut out = serde_json::Map::new();
            out.insert("kind".into(), json!(doc.kind.group()));
            if let Json::Object(spec) = doc.spec {
                out.extend(spec);
            }
            output::print_one(
                match g.output {
                    Some(Format::Json) => Format::Json,
                    _ => Format::Yaml,
                },
                &Json::Object(out),
            );
        }
        Command::Configure(c) => {
            let mut config = client::read_config(&home);
            for pair in &c.defaults {
                match pair.split_once('=') {
                    Some(("workspace", w)) => {
                        config.workspace = Some(w.to_string()).filter(|w| !w.is_empty())
                    }
                    _ => bail!("unknown default {pair:?}: use workspace=<name>"),
                }
            }
            std::fs::create_dir_all(&home)?;
            std::fs::write(
                client::config_path(&home),
                serde_json::to_string_pretty(&config)?,
            )?;
            println!("defaults saved to {}", client::config_path(&home).display());
        }
        Command::Workspace(cmd) => workspace(&client()?, cmd, g.output, &default_ws).await?,
        Command::Datastore(DatastoreCmd::Resource(cmd)) => {
            resource(&client()?, Kind::Datastore, cmd, &g, &default_ws).await?
        }
        Command::Datastore(cmd) => datastore_files(&client()?, cmd, &g, &default_ws).await?,
        Command::Registry(cmd) => registry(&client()?, cmd, g.output).await?,
        Command::Connection(ConnectionCmd::Resource(cmd)) => {
            resource(&client()?, Kind::Connection, cmd, &g, &default_ws).await?
        }
        Command::Schedule(ScheduleCmd::Resource(cmd)) => {
            resource(&client()?, Kind::Schedule, cmd, &g, &default_ws).await?
        }
        Command::Schedule(ScheduleCmd::Enable { name, at }) => {
            set_schedule_enabled(
                &client()?,
                &default_ws(at.workspace),
                &name,
                "enable",
                g.output,
            )
            .await?
        }
        Command::Schedule(ScheduleCmd::Disable { name, at }) => {
            set_schedule_enabled(
                &client()?,
                &default_ws(at.workspace),
                &name,
                "disable",
                g.output,
            )
            .await?
        }
        Command::Data(AssetCmd::Resource(cmd)) => {
            resource(&client()?, Kind::Data, cmd, &g, &default_ws).await?
        }
        Command::Model(AssetCmd::Resource(cmd)) => {
            resource(&client()?, Kind::Model, cmd, &g, &default_ws).await?
        }
        Command::Data(AssetCmd::Download {
            name,
            pick,
            download_path,
            workspace,
        }) => {
            let version = pick.version()?;
            download_asset(
                &client()?,
                Kind::Data,
                &name,
                version.as_deref(),
                &download_path,
                &default_ws(workspace),
                g.quiet,
            )
            .await?
        }
        Command::Model(AssetCmd::Download {
            name,
            pick,
            download_path,
            workspace,
        }) => {
            let version = pick.version()?;
            download_asset(
                &client()?,
                Kind::Model,
                &name,
                version.as_deref(),
                &download_path,
                &default_ws(workspace),
                g.quiet,
            )
            .await?
        }
        Command::Compute(ComputeCmd::Resource(cmd)) => {
            resource(&client()?, Kind::Compute, cmd, &g, &default_ws).await?
        }
        Command::Compute(ComputeCmd::Attach {
            file,
            sets,
            workspace,
        }) => {
            let create = ResourceCmd::Create {
                file: Some(file),
                name: None,
                fields: Box::default(),
                sets,
                skip_check: false,
                all_traffic: false,
                no_wait: false,
                set_default: false,
                at: Where {
                    workspace,
                    endpoint: None,
                    registry: None,
                },
            };
            resource(&client()?, Kind::Compute, create, &g, &default_ws).await?
        }
        Command::Compute(ComputeCmd::Detach {
            name,
            yes,
            workspace,
        }) => {
            let delete = ResourceCmd::Delete {
                name,
                yes,
                at: Where {
                    workspace,
                    endpoint: None,
                    registry: None,
                },
            };
            resource(&client()?, Kind::Compute, delete, &g, &default_ws).await?
        }
        Command::Compute(ComputeCmd::ListNodes { name, workspace }) => {
            crate::jobs::list_nodes(&client()?, &default_ws(workspace), &name, g.output).await?
        }
        Command::Job(cmd) => return crate::jobs::job(&client()?, cmd, &g, &default_ws).await,
        Command::Runner(cmd) => return crate::runner::run(cmd).await,
        Command::Sandbox(_) => unreachable!("tarn sandbox runs before the async runtime"),
        Command::Replica(cmd) => return crate::replica::run(cmd).await,
        Command::Instance(cmd) => return crate::instance::run(cmd).await,
        Command::Compute(ComputeCmd::Start(a)) => {
            instance_action(&client()?, a, "start", &g, &default_ws).await?
        }
        Command::Compute(ComputeCmd::Stop(a)) => {
            instance_action(&client()?, a, "stop", &g, &default_ws).await?
        }
        Command::Compute(ComputeCmd::Restart(a)) => {
            instance_action(&client()?, a, "restart", &g, &default_ws).await?
        }
        Command::Compute(ComputeCmd::GetLogs {
            name,
            workspace,
            lines,
        }) => {
            let ws = default_ws(workspace);
            let resp = client()?
                .get_raw(&format!(
                    "/workspaces/{}/computes/{}/logs?lines={lines}",
                    enc(&ws),
                    enc(&name)
                ))
                .await?;
            println!("{}", resp.text().await?);
        }
        Command::Setup => setup(&home)?,
        Command::Quickstart(cmd) => return crate::quickstart::run(cmd, &g).await,
        Command::Environment(cmd) => {
            resource(&client()?, Kind::Environment, cmd, &g, &default_ws).await?
        }
        Command::Component(cmd) => {
            resource(&client()?, Kind::Component, cmd, &g, &default_ws).await?
        }
        Command::OnlineEndpoint(cmd) => {
            crate::endpoints::endpoint(&client()?, cmd, &g, &default_ws).await?
        }
        Command::OnlineDeployment(cmd) => {
            crate::endpoints::deployment(&client()?, cmd, &g, &default_ws).await?
        }
        Command::BatchEndpoint(cmd) => {
            return crate::endpoints::batch_endpoint(&client()?, cmd, &g, &default_ws).await;
        }
        Command::BatchDeployment(cmd) => {
            crate::endpoints::batch_deployment(&client()?, cmd, &g, &default_ws).await?
        }
        Command::User(cmd) => {
            let c = client()?;
            match cmd {
                UserCmd::Create { name, admin } => {
                    let token = c
                        .post("/users", &json!({"name": name, "admin": admin}))
                        .await?;
                    print_token(&token, g.output);
                }
                UserCmd::List => {
                    let list = c.get("/users").await?;
                    output::print_list(
                        g.output.unwrap_or(Format::Table),
                        list_items(&list),
                        &["name", "is_admin", "disabled", "created_at"],
                    );
                }
                UserCmd::Show { name } => show_user(&c, &name, g.output).await?,
                UserCmd::Disable { name, cancel_jobs } => {
                    let out = c
                        .post(
                            &format!("/users/{}/disable", enc(&name)),
                            &json!({"cancel_jobs": cancel_jobs}),
                        )
                        .await?;
                    output::print_one(g.output.unwrap_or(Format::Yaml), &out);
                }
                UserCmd::Enable { name } => {
                    let out = c
                        .post(&format!("/users/{}/enable", enc(&name)), &json!({}))
                        .await?;
                    output::print_one(g.output.unwrap_or(Format::Yaml), &out);
                }
                UserCmd::Delete { name } => {
                    c.delete(&format!("/users/{}", enc(&name))).await?;
                    eprintln!("user {name:?} deleted");
                }
            }
        }
        Command::Audit(AuditCmd::List {
            user,
            workspace,
            since,
            limit,
        }) => {
            let mut query = format!("/audit?limit={limit}");
            for (k, v) in [("user", user), ("workspace", workspace), ("since", since)] {
                if let Some(v) = v {
                    query.push_str(&format!("&{k}={}", enc(&v)));
                }
            }
            let list = client()?.get(&query).await?;
            output::print_list(
                g.output.unwrap_or(Format::Table),
                list_items(&list),
                &[
                    "at",
                    "actor",
                    "actor_kind",
                    "address",
                    "method",
                    "path",
                    "status",
                    "changes",
                ],
            );
        }
        Command::Login => crate::login::login(g.server.as_deref(), &home).await?,
        Command::Logout => crate::login::logout(&home).await?,
        Command::Sp(cmd) => {
            let c = client()?;
            match cmd {
                SpCmd::Create { name } => {
                    let token = c
                        .post(
                            "/users",
                            &json!({"name": name, "kind": "service_principal"}),
                        )
                        .await?;
                    print_token(&token, g.output);
                }
                SpCmd::List => {
                    let list = c.get("/users?kind=service_principal").await?;
                    output::print_list(
                        g.output.unwrap_or(Format::Table),
                        list_items(&list),
                        &["name", "disabled", "created_at"],
                    );
                }
                SpCmd::Show { name } => show_user(&c, &name, g.output).await?,
                SpCmd::Delete { name } => {
                    c.delete(&format!("/users/{}", enc(&name))).await?;
                    eprintln!("service principal {name:?} deleted");
                }
            }
        }
        Command::Token(cmd) => match cmd {
            TokenCmd::Create {
                user,
                description,
                expires_in,
                workspace,
                role,
            } => {
                let token = client()?
                        .post(
                            "/tokens",
                            &json!({"user": user, "description": description,
                                    "expires_in": expires_in, "workspace": workspace, "role": role}),
                        )
                        .await?;
                print_token(&token, g.output);
            }
            TokenCmd::List { user, all } => {
                let mut query = format!("/tokens?all={all}");
                if let Some(user) = user {
                    query.push_str(&format!("&user={}", enc(&user)));
                }
                let list = client()?.get(&query).await?;
                output::print_list(
                    g.output.unwrap_or(Format::Table),
                    list_items(&list),
                    &[
                        "id",
                        "user",
                        "description",
                        "created_at",
                        "last_used_at",
                        "expires_at",
                        "limited_to",
                    ],
                );
            }
            TokenCmd::Revoke { id } => {
                client()?.delete(&format!("/tokens/{}", enc(&id))).await?;
                eprintln!("token {id} revoked");
            }
            TokenCmd::Generate => println!("{}", tarn_core::new_token_text()),
        },
        Command::Role(cmd) => {
            let c = client()?;
            match cmd {
                RoleCmd::Assign {
                    user,
                    group,
                    role,
                    workspace,
                    registry,
                } => {
                    let ws = in_registry(registry).unwrap_or_else(|| default_ws(workspace));
                    let out = c
                        .put(
                            &format!("/workspaces/{}/role-assignments", enc(&ws)),
                            &json!({"user": user, "group": group, "role": role}),
                        )
                        .await?;
                    output::print_one(g.output.unwrap_or(Format::Yaml), &out);
                }
                RoleCmd::List {
                    workspace,
                    registry,
                } => {
                    let ws = in_registry(registry).unwrap_or_else(|| default_ws(workspace));
                    let list = c
                        .get(&format!("/workspaces/{}/role-assignments", enc(&ws)))
                        .await?;
                    output::print_list(
                        g.output.unwrap_or(Format::Table),
                        list_items(&list),
                        &["user", "group", "role", "created_at"],
                    );
                }
                RoleCmd::Create { file } => {
                    let text = std::fs::read_to_string(&file)
                        .with_context(|| format!("cannot read {}", file.display()))?;
                    let doc = tarn_spec::Node::from_yaml(&text).map_err(|e| {
                        anyhow::anyhow!("{}: invalid YAML or JSON: {}", file.display(), e.message)
                    })?;
                    let out = c
                        .post("/role-definitions", &doc.to_json())
                        .await
                        .with_context(|| file.display().to_string())?;
                    for w in out["warnings"].as_array().into_iter().flatten() {
                        eprintln!(
                            "warning: {}: {}: {}",
                            file.display(),
                            w["path"].as_str().unwrap_or_default(),
                            w["message"].as_str().unwrap_or_default()
                        );
                    }
                    output::print_one(g.output.unwrap_or(Format::Yaml), &out);
                }
                RoleCmd::Definitions => {
                    let list = c.get("/role-definitions").await?;
                    output::print_list(
                        g.output.unwrap_or(Format::Table),
                        list_items(&list),
                        &["name", "custom", "description"],
                    );
                }
                RoleCmd::Show { name } => {
                    let out = c.get(&format!("/role-definitions/{}", enc(&name))).await?;
                    output::print_one(g.output.unwrap_or(Format::Yaml), &out);
                }
                RoleCmd::DeleteDefinition { name } => {
                    c.delete(&format!("/role-definitions/{}", enc(&name)))
                        .await?;
                    eprintln!("role {name:?} deleted");
                }
                RoleCmd::Delete {
                    user,
                    group,
                    workspace,
                    registry,
                } => {
                    let ws = in_registry(registry).unwrap_or_else(|| default_ws(workspace));
                    let (path, who) = match (user, group) {
                        (Some(user), _) => (
                            format!("/workspaces/{}/role-assignments/{}", enc(&ws), enc(&user)),
                            format!("{user:?}"),
                        ),
                        (None, Some(group)) => (
                            format!(
                                "/workspaces/{}/group-role-assignments/{}",
                                enc(&ws),
                                enc(&group)
                            ),
                            format!("group {group:?}"),
                        ),
                        (None, None) => bail!("name --user or --group"),
                    };
                    c.delete(&path).await?;
                    eprintln!("removed the role of {who} in workspace {ws:?}");
                }
            }
        }
        Command::Server(ServerCmd::Status) => {
            let c = client()?;
            // Administrators also see the background tasks; others the health answer.
            let status = match c.get("/server/status").await {
                Ok(status) => status,
                Err(_) => c.get("/health").await?,
            };
            output::print_one(g.output.unwrap_or(Format::Yaml), &status);
        }
        Command::Store(StoreCmd::Migrate { from, to }) => {
            let from = match from {
                Some(url) => tarn_store::Location::parse(&url).map_err(anyhow::Error::msg)?,
                None => tarn_store::Location::Sqlite(home.join("tarn.db")),
            };
            let to = tarn_store::Location::parse(&to).map_err(anyhow::Error::msg)?;
            crate::store::migrate(&from, &to).await?;
        }
        Command::Backup(BackupCmd::Create {
            to,
            workspace,
            include_vault_key,
            passphrase_file,
        }) => {
            let passphrase = if include_vault_key {
                Some(
                    crate::backup::passphrase(passphrase_file.as_deref())?.context(
                        "--include-vault-key needs a passphrase: --passphrase-file FILE or TARN_BACKUP_PASSPHRASE",
                    )?,
                )
            } else {
                None
            };
            let workspace = to.starts_with("azureml://").then(|| default_ws(workspace));
            let made = crate::backup::create(&client()?, &to, workspace, passphrase).await?;
            output::print_one(g.output.unwrap_or(Format::Yaml), &made);
        }
        Command::Backup(BackupCmd::List { from }) => {
            let list = crate::backup::list(&from)?;
            output::print_list(
                g.output.unwrap_or(Format::Table),
                &list,
                &[
                    "name",
                    "created_at",
                    "source_store",
                    "rows",
                    "bytes",
                    "vault_key",
                ],
            );
        }
        Command::Backup(BackupCmd::Restore {
            from,
            store,
            vault_key_file,
            passphrase_file,
        }) => {
            let store = match store.as_deref() {
                Some(url) => Some(tarn_store::Location::parse(url).map_err(anyhow::Error::msg)?),
                None => None,
            };
            crate::backup::restore(crate::backup::RestoreArgs {
                from,
                home: home.clone(),
                store,
                vault_key_file,
                passphrase: crate::backup::passphrase(passphrase_file.as_deref())?,
            })
            .await?;
        }
        Command::Bench(b) => crate::bench::run(b).await?,
    }
    Ok(ExitCode::SUCCESS)
}

fn print_token(token: &Json, format: Option<Format>) {
    if format.is_some() {
        output::print_one(format.unwrap_or(Format::Yaml), token);
        return;
    }
    println!("{}", token["token"].as_str().unwrap_or_default());
    let expiry = token["expires_at"]
        .as_str()
        .map(|at| format!(", expires {at}"))
        .unwrap_or_default();
    eprintln!(
        "token {} for {:?}{expiry}: shown once, store it now (it is kept only as a hash)",
        token["id"].as_str().unwrap_or_default(),
        token["user"].as_str().unwrap_or_default()
    );
}

/// A user or service principal with their role assignments everywhere.
async fn show_user(c: &Client, name: &str, format: Option<Format>) -> anyhow::Result<()> {
    let user = c.get(&format!("/users/{}", enc(name))).await?;
    output::print_one(format.unwrap_or(Format::Yaml), &user);
    Ok(())
}

/// A workspace's `artifact_store` from `--artifact-store`: a datastore YAML (or JSON) file, or
/// else a folder (on the server's machine), made absolute.
pub fn artifact_store_spec(arg: &Path) -> anyhow::Result<Json> {
    let datastore_file = arg.is_file()
        && arg
            .extension()
            .is_some_and(|e| matches!(e.to_str(), Some("yml" | "yaml" | "json")));
    if datastore_file {
        return Ok(with_secrets(&load(arg, Some(Kind::Datastore), &[])?));
    }
    let path =
        std::path::absolute(arg).with_context(|| format!("--artifact-store {}", arg.display()))?;
    Ok(json!({"type": "local", "path": path.display().to_string()}))
}

fn list_items(list: &Json) -> &[Json] {
    list["value"].as_array().map(Vec::as_slice).unwrap_or(&[])
}

async fn workspace(
    c: &Client,
    cmd: WorkspaceCmd,
    format: Option<Format>,
    default_ws: &dyn Fn(Option<String>) -> String,
) -> anyhow::Result<()> {
    match cmd {
        WorkspaceCmd::Create {
            file,
            name,
            sets,
            storage,
            artifact_store,
        } => {
            let spec = match file {
                Some(file) => {
                    let mut sets = sets;
                    if let Some(n) = name {
                        sets.push(format!("name={n}"));
                    }
                    with_secrets(&load(&file, Some(Kind::Workspace), &sets)?)
                }
                None => {
                    let mut node = Node::from_json(&json!({"name": name}));
                    for s in &sets {
                        tarn_spec::apply_set(&mut node, s)
                            .map_err(|d| anyhow::anyhow!("{}", d.message))?;
                    }
                    let doc =
                        tarn_spec::validate(&node, Some(Kind::Workspace)).map_err(|errs| {
                            anyhow::anyhow!(
                                errs.iter()
                                    .map(|d| d.render("--name"))
                                    .collect::<Vec<_>>()
                                    .join("\n")
                            )
                        })?;
                    doc.spec
                }
            };
            let mut spec = spec;
            if let Some(storage) = storage {
                spec["storage"] = with_secrets(&load(&storage, Some(Kind::Datastore), &[])?);
            }
            if let Some(store) = artifact_store {
                spec["artifact_store"] = artifact_store_spec(&store)?;
            }
            let out = c.post("/workspaces", &spec).await?;
            print_warnings(&out);
            output::print_one(format.unwrap_or(Format::Yaml), &out);
        }
        WorkspaceCmd::List => {
            let list = c.get("/workspaces").await?;
            output::print_list(
                format.unwrap_or(Format::Table),
                list_items(&list),
                &[
                    "name",
                    "description",
                    "default_datastore",
                    "mlflow_tracking_uri",
                ],
            );
        }
        WorkspaceCmd::Show { name } => {
            let ws = default_ws(name);
            let out = c.get(&format!("/workspaces/{}", enc(&ws))).await?;
            output::print_one(format.unwrap_or(Format::Yaml), &out);
        }
        WorkspaceCmd::Update {
            name,
            file,
            sets,
            artifact_store,
        } => {
            let ws = default_ws(name);
            let mut spec = match file {
                Some(file) => load(&file, Some(Kind::Workspace), &sets)?.spec,
                None => apply_sets(
                    &c.get(&format!("/workspaces/{}", enc(&ws))).await?["spec"],
                    &sets,
                )?,
            };
            if let Some(store) = artifact_store {
                spec["artifact_store"] = artifact_store_spec(&store)?;
            }
            let out = c.put(&format!("/workspaces/{}", enc(&ws)), &spec).await?;
            print_warnings(&out);
            output::print_one(format.unwrap_or(Format::Yaml), &out);
        }
        WorkspaceCmd::Delete {
            name,
            yes,
            all_resources,
        } => {
            if !yes {
                bail!(
                    "deleting workspace {name:?} removes everything in it: pass --yes to confirm"
                );
            }
            c.delete(&format!(
                "/workspaces/{}?all_resources={all_resources}",
                enc(&name)
            ))
            .await?;
            eprintln!(
                "deleted workspace {name:?}{}",
                if all_resources {
                    " and its storage"
                } else {
                    " (its storage is kept)"
                }
            );
        }
    }
    Ok(())
}

/// The collection URL for `kind` in a workspace (under an endpoint for deployments).
pub(crate) fn collection_url(
    kind: Kind,
    ws: &str,
    endpoint: Option<&str>,
) -> anyhow::Result<String> {
    match kind.parent() {
        None => Ok(format!("/workspaces/{}/{}", enc(ws), kind.collection())),
        Some(parent) => {
            let ep = endpoint.with_context(|| {
                format!(
                    "{}s live under an endpoint: pass --endpoint-name",
                    kind.noun()
                )
            })?;
            Ok(format!(
                "/workspaces/{}/{}/{}/deployments",
                enc(ws),
                parent.collection(),
                enc(ep)
            ))
        }
    }
}

/// The workspace a registry's assets and roles are reached as.
fn in_registry(registry: Option<String>) -> Option<String> {
    registry.map(|r| tarn_core::registries::workspace_of(&r))
}

/// `tarn registry create|show|list|delete`.
async fn registry(c: &Client, cmd: RegistryCmd, format: Option<Format>) -> anyhow::Result<()> {
    match cmd {
        RegistryCmd::Create { file } => {
            let doc = load(&file, Some(Kind::Registry), &[])?;
            let out = c.post("/registries", &doc.spec).await?;
            print_warnings(&out);
            output::print_one(format.unwrap_or(Format::Yaml), &out);
        }
        RegistryCmd::Show { name } => {
            let out = c.get(&format!("/registries/{}", enc(&name))).await?;
            output::print_one(format.unwrap_or(Format::Yaml), &out);
        }
        RegistryCmd::List => {
            let list = c.get("/registries").await?;
            output::print_list(
                format.unwrap_or(Format::Table),
                list_items(&list),
                &["name", "description", "uri", "created_at"],
            );
        }
        RegistryCmd::Delete { name, yes } => {
            if !yes {
                bail!("deleting registry {name:?} deletes its assets and their files: add --yes");
            }
            c.delete(&format!("/registries/{}", enc(&name))).await?;
            eprintln!("deleted registry {name:?}");
        }
    }
    Ok(())
}

/// `tarn schedule enable|disable`.
async fn set_schedule_enabled(
    c: &Client,
    ws: &str,
    name: &str,
    verb: &str,
    format: Option<Format>,
) -> anyhow::Result<()> {
    let out = c
        .post(
            &format!("/workspaces/{}/schedules/{}/{verb}", enc(ws), enc(name)),
            &json!({}),
        )
        .await?;
    output::print_one(format.unwrap_or(Format::Yaml), &out);
    Ok(())
}

fn version_query(version: Option<&str>) -> String {
    version
        .map(|v| format!("?version={}", enc(v)))
        .unwrap_or_default()
}

const LIST_COLUMNS: &[(Kind, &[&str])] = &[
    (
        Kind::Connection,
        &["name", "type", "spec.target", "created_at"],
    ),
    (
        Kind::Schedule,
        &[
            "name",
            "spec.trigger.type",
            "schedule.is_enabled",
            "schedule.next_run_times.0",
            "schedule.fired",
            "schedule.last_error",
        ],
    ),
    (
        Kind::Datastore,
        &["name", "type", "is_default", "spec.path", "created_at"],
    ),
    (
        Kind::Compute,
        &[
            "name",
            "type",
            "engine",
            "spec.min_instances",
            "spec.max_instances",
            "created_at",
        ],
    ),
    (
        Kind::OnlineEndpoint,
        &["name", "spec.auth_mode", "spec.traffic", "created_at"],
    ),
    (
        Kind::BatchEndpoint,
        &[
            "name",
            "spec.auth_mode",
            "spec.defaults.deployment_name",
            "created_at",
        ],
    ),
    (
        Kind::OnlineDeployment,
        &[
            "name",
            "endpoint_name",
            "type",
            "spec.model",
            "spec.instance_count",
        ],
    ),
    (
        Kind::BatchDeployment,
        &[
            "name",
            "endpoint_name",
            "type",
            "spec.model",
            "spec.compute",
        ],
    ),
];

pub(crate) async fn resource(
    c: &Client,
    kind: Kind,
    cmd: ResourceCmd,
    g: &crate::Global,
    default_ws: &dyn Fn(Option<String>) -> String,
) -> anyhow::Result<()> {
    let format = g.output;
    let where_ = |at: &Where| {
        let ws = match &at.registry {
            Some(r) => tarn_core::registries::workspace_of(r),
            None => default_ws(at.workspace.clone()),
        };
        (ws, at.endpoint.clone())
    };
    match cmd {
        ResourceCmd::Create {
            file,
            name,
            fields,
            sets,
            skip_check,
            all_traffic,
            no_wait,
            set_default,
            at,
        } => {
            let (ws, mut endpoint) = where_(&at);
            if set_default && kind != Kind::BatchDeployment {
                bail!("--set-default is for batch deployments");
            }
            if all_traffic && kind != Kind::OnlineDeployment {
                bail!("--all-traffic is for online deployments");
            }
            let mut sets = sets;
            if kind.parent().is_some()
                && let Some(ep) = &endpoint
            {
                sets.push(format!("endpoint_name={ep}"));
            }
            let doc = match &file {
                Some(file) => load(file, Some(kind), &sets)?,
                None => {
                    // The flags become the document's fields, checked as a file's would be.
                    let mut spec = json!({ "name": name });
                    let f = *fields;
                    let flags = [
                        ("version", f.version.map(Json::from)),
                        ("path", f.path.map(Json::from)),
                        ("type", f.type_.map(Json::from)),
                        ("description", f.description.map(Json::from)),
                        ("size", f.size.map(Json::from)),
                        ("min_instances", f.min_instances.map(Json::from)),
                        ("max_instances", f.max_instances.map(Json::from)),
                        ("conda_file", f.conda_file.map(Json::from)),
                        ("image", f.image.map(Json::from)),
                    ];
                    for (field, value) in flags {
                        if let Some(v) = value {
                            spec[field] = v;
                        }
                    }
                    let spec = apply_sets(&spec, &sets)?;
                    tarn_spec::validate(&Node::from_json(&spec), Some(kind)).map_err(|errors| {
                        let lines: Vec<String> = errors
                            .iter()
                            .map(|d| d.render("the command line"))
                            .collect();
                        anyhow::anyhow!(Reported(lines.join("\n")))
                    })?
                }
            };
            if endpoint.is_none() {
                endpoint = doc
                    .spec
                    .get("endpoint_name")
                    .and_then(Json::as_str)
                    .map(str::to_string);
            }
            let url = collection_url(kind, &ws, endpoint.as_deref())?;
            let mut spec = with_secrets(&doc);
            let base = file
                .as_deref()
                .and_then(Path::parent)
                .unwrap_or(Path::new("."));
            crate::assets::upload_local_paths(c, kind, &mut spec, base, &ws, g.quiet).await?;
            let url = if skip_check {
                format!("{url}?skip_check=true")
            } else {
                url
            };
            let mut out = c.post(&url, &spec).await?;
            print_warnings(&out);
            if kind == Kind::OnlineDeployment
                && let (Some(ep), Some(name)) = (endpoint.as_deref(), out["name"].as_str())
            {
                let name = name.to_string();
                if !no_wait {
                    out = crate::endpoints::wait_ready(c, &ws, ep, &name, g.quiet).await?;
                }
                if all_traffic {
                    crate::endpoints::all_traffic(c, &ws, ep, &name).await?;
                }
            }
            if set_default
                && let (Some(ep), Some(name)) = (endpoint.as_deref(), out["name"].as_str())
            {
                crate::endpoints::set_default(c, &ws, ep, name, g.quiet).await?;
            }
            output::print_one(format.unwrap_or(Format::Yaml), &out);
        }
        ResourceCmd::Show {
            name,
            pick,
            include_secrets,
            at,
        } => {
            let version = pick.version()?;
            let (ws, endpoint) = where_(&at);
            let base = format!(
                "{}/{}",
                collection_url(kind, &ws, endpoint.as_deref())?,
                enc(&name)
            );
            let out = if include_secrets {
                c.post(
                    &format!("{base}/list-secrets{}", version_query(version.as_deref())),
                    &json!({}),
                )
                .await?
            } else {
                c.get(&format!("{base}{}", version_query(version.as_deref())))
                    .await?
            };
            output::print_one(format.unwrap_or(Format::Yaml), &out);
        }
        ResourceCmd::List {
            name,
            include_archived,
            at,
        } => {
            let (ws, endpoint) = where_(&at);
            let mut url = collection_url(kind, &ws, endpoint.as_deref())?;
            let mut query = vec![];
            if let Some(n) = &name {
                query.push(format!("name={}", enc(n)));
            }
            if include_archived {
                query.push("include_archived=true".into());
            }
            if !query.is_empty() {
                url = format!("{url}?{}", query.join("&"));
            }
            let list = c.get(&url).await?;
            let columns = LIST_COLUMNS
                .iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, c)| *c)
                .unwrap_or(if kind.is_asset() {
                    &["name", "version", "type", "archived", "created_at"]
                } else {
                    &["name", "type", "created_at"]
                });
            output::print_list(format.unwrap_or(Format::Table), list_items(&list), columns);
        }
        ResourceCmd::Update {
            name,
            pick,
            file,
            sets,
            skip_check,
            traffic,
            mirror_traffic,
            no_wait,
            at,
        } => {
            let version = pick.version()?;
            let (ws, endpoint) = where_(&at);
            if (traffic.is_some() || mirror_traffic.is_some()) && kind != Kind::OnlineEndpoint {
                bail!("--traffic and --mirror-traffic are for online endpoints");
            }
            let url = format!(
                "{}/{}{}",
                collection_url(kind, &ws, endpoint.as_deref())?,
                enc(&name),
                version_query(version.as_deref())
            );
            let spec = match file {
                Some(file) => {
                    let doc = load(&file, Some(kind), &sets)?;
                    let mut spec = with_secrets(&doc);
                    let base = file.parent().unwrap_or(Path::new("."));
                    crate::assets::upload_local_paths(c, kind, &mut spec, base, &ws, g.quiet)
                        .await?;
                    spec
                }
                None => apply_sets(&c.get(&url).await?["spec"], &sets)?,
            };
            let mut spec = spec;
            if let Some(t) = &traffic {
                spec["traffic"] = crate::endpoints::parse_traffic(t)?;
            }
            if let Some(t) = &mirror_traffic {
                spec["mirror_traffic"] = crate::endpoints::parse_traffic(t)?;
            }
            let url = match (skip_check, url.contains('?')) {
                (false, _) => url,
                (true, true) => format!("{url}&skip_check=true"),
                (true, false) => format!("{url}?skip_check=true"),
            };
            let mut out = c.put(&url, &spec).await?;
            print_warnings(&out);
            if kind == Kind::OnlineDeployment
                && !no_wait
                && let Some(ep) = endpoint.as_deref()
            {
                out = crate::endpoints::wait_ready(c, &ws, ep, &name, g.quiet).await?;
            }
            output::print_one(format.unwrap_or(Format::Yaml), &out);
        }
        ResourceCmd::Delete { name, yes, at } => {
            let (ws, endpoint) = where_(&at);
            if !yes
                && kind.parent().is_none()
                && !kind.is_asset()
                && matches!(kind, Kind::OnlineEndpoint | Kind::BatchEndpoint)
            {
                bail!(
                    "deleting {} {name:?} also deletes its deployments: pass --yes to confirm",
                    kind.noun()
                );
            }
            c.delete(&format!(
                "{}/{}",
                collection_url(kind, &ws, endpoint.as_deref())?,
                enc(&name)
            ))
            .await?;
            eprintln!("deleted {} {name:?}", kind.noun());
        }
        ResourceCmd::Share {
            name,
            version,
            registry,
            share_with_name,
            share_with_version,
            workspace,
        } => {
            if !kind.is_asset() {
                bail!("only models, components, environments and data are shared to registries");
            }
            let ws = default_ws(workspace);
            let out = c
                .post(
                    &format!("{}/{}/share", collection_url(kind, &ws, None)?, enc(&name)),
                    &json!({
                        "version": version,
                        "registry_name": registry,
                        "share_with_name": share_with_name,
                        "share_with_version": share_with_version,
                    }),
                )
                .await?;
            output::print_one(format.unwrap_or(Format::Yaml), &out);
        }
        ResourceCmd::Archive { name, pick, at } => {
            let version = pick.version()?;
            set_archived(c, kind, &name, version.as_deref(), &where_(&at), "archive").await?
        }
        ResourceCmd::Restore { name, pick, at } => {
            let version = pick.version()?;
            set_archived(c, kind, &name, version.as_deref(), &where_(&at), "restore").await?
        }
    }
    Ok(())
}

/// Archives or restores (`verb`) one version of an asset, or all its versions.
async fn set_archived(
    c: &Client,
    kind: Kind,
    name: &str,
    version: Option<&str>,
    at: &(String, Option<String>),
    verb: &str,
) -> anyhow::Result<()> {
    let (ws, endpoint) = at;
    let url = format!(
        "{}/{}/{verb}{}",
        collection_url(kind, ws, endpoint.as_deref())?,
        enc(name),
        version_query(version)
    );
    c.post(&url, &json!({})).await?;
    let which = version
        .map(|v| format!(" version {v}"))
        .unwrap_or_else(|| " (all versions)".into());
    eprintln!("{verb}d {} {name:?}{which}", kind.noun());
    Ok(())
}

/// The document's spec with its secrets back in place (they were lifted out for display; the
/// server needs them to seal them in its vault).
pub(crate) fn with_secrets(doc: &Document) -> Json {
    let mut spec = doc.spec.clone();
    for (path, value) in &doc.secrets {
        set_dotted(&mut spec, path, value.clone());
    }
    spec
}

fn set_dotted(root: &mut Json, dotted: &str, value: Json) {
    let parts: Vec<&str> = dotted.split('.').collect();
    let mut current = root;
    for (i, part) in parts.iter().enumerate() {
        let Some(obj) = current.as_object_mut() else {
            return;
        };
        if i + 1 == parts.len() {
            obj.insert(part.to_string(), value);
            return;
        }
        current = obj.entry(part.to_string()).or_insert_with(|| json!({}));
    }
}

async fn datastore_files(
    c: &Client,
    cmd: DatastoreCmd,
    g: &crate::Global,
    default_ws: &dyn Fn(Option<String>) -> String,
) -> anyhow::Result<()> {
    match cmd {
        DatastoreCmd::Resource(_) => unreachable!("dispatched to `resource`"),
        DatastoreCmd::Upload {
            datastore,
            src,
            dest,
            workspace,
        } => {
            let ws = default_ws(workspace);
            let mut files = crate::transfer::scan(&src, false).await?;
            let (folder, target) = upload_target(src.is_file(), &dest);
            if let Some(name) = &target {
                files[0].rel = name.clone();
            }
            check_upload_dest(c, &ws, &datastore, &folder, target.as_deref()).await?;
            let total: u64 = files.iter().map(|f| f.size).sum();
            let bar = crate::transfer::progress(total, "uploading", g.quiet);
            let started = std::time::Instant::now();
            crate::transfer::upload(c, &ws, &datastore, &folder, &files, &bar).await?;
            bar.finish_and_clear();
            if !g.quiet {
                eprintln!(
                    "uploaded {} file(s), {} bytes, in {:.1} s",
                    files.len(),
                    total,
                    started.elapsed().as_secs_f64()
                );
            }
        }
        DatastoreCmd::Rm {
            datastore,
            path,
            recursive,
            workspace,
        } => {
            let ws = default_ws(workspace);
            let trimmed = path.trim_end_matches('/');
            let kind = remote_kind(c, &ws, &datastore, trimmed).await?;
            let doomed: Vec<String> = match kind {
                Remote::Missing => bail!("nothing at {path:?} in datastore {datastore:?}"),
                Remote::File => vec![trimmed.to_string()],
                Remote::Folder if !recursive => bail!(
                    "{path:?} is a folder in datastore {datastore:?}; give --recursive to delete it and everything in it"
                ),
                Remote::Folder => crate::transfer::remote_files(c, &ws, &datastore, trimmed)
                    .await?
                    .into_iter()
                    .map(|f| f.path)
                    .collect(),
            };
            for file in &doomed {
                c.delete(&crate::transfer::file_url(&ws, &datastore, file))
                    .await?;
            }
            if !g.quiet {
                eprintln!(
                    "deleted {} file(s) from datastore {datastore:?}",
                    doomed.len()
                );
            }
        }
        DatastoreCmd::Download {
            datastore,
            src,
            dest,
            workspace,
        } => {
            let ws = default_ws(workspace);
            let files = crate::transfer::remote_files(c, &ws, &datastore, &src).await?;
            if files.is_empty() {
                bail!("nothing found at {src:?} in datastore {datastore:?}");
            }
            let total: u64 = files.iter().map(|f| f.size).sum();
            let bar = crate::transfer::progress(total, "downloading", g.quiet);
            let started = std::time::Instant::now();
            let base = if files.len() == 1 && files[0].path == src.trim_matches('/') {
                String::new()
            } else {
                src.clone()
            };
            crate::transfer::download(c, &ws, &datastore, &base, &files, &dest, &bar).await?;
            bar.finish_and_clear();
            if !g.quiet {
                eprintln!(
                    "downloaded {} file(s), {} bytes, in {:.1} s",
                    files.len(),
                    total,
                    started.elapsed().as_secs_f64()
                );
            }
        }
        DatastoreCmd::Ls {
            datastore,
            path,
            recursive,
            workspace,
        } => {
            let ws = default_ws(workspace);
            crate::transfer::check_path(&path)?;
            let url = format!(
                "/workspaces/{}/datastores/{}/ls?path={}&recursive={recursive}",
                enc(&ws),
                enc(&datastore),
                enc(&path)
            );
            let listing = c.get(&url).await?;
            match g.output.unwrap_or(Format::Table) {
                Format::Table => {
                    let mut rows: Vec<Json> = listing["folders"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|f| json!({"path": f, "size": "", "modified": ""}))
                        .collect();
                    rows.extend(listing["files"].as_array().into_iter().flatten().cloned());
                    output::print_list(Format::Table, &rows, &["path", "size", "modified"]);
                }
                other => output::print_one(other, &listing),
            }
        }
    }
    Ok(())
}

async fn download_asset(
    c: &Client,
    kind: Kind,
    name: &str,
    version: Option<&str>,
    download_path: &Path,
    ws: &str,
    quiet: bool,
) -> anyhow::Result<()> {
    let mut url = format!(
        "/workspaces/{}/{}/{}",
        enc(ws),
        kind.collection(),
        enc(name)
    );
    if let Some(v) = version {
        url.push_str(&format!("?version={}", enc(v)));
    }
    let asset = c.get(&url).await?;
    let path = asset["spec"]["path"]
        .as_str()
        .with_context(|| format!("{} {name:?} has no path", kind.noun()))?;
    let dest = download_path.join(name);
    let count = crate::assets::download_asset_path(c, ws, path, &dest, quiet).await?;
    if count == 0 {
        bail!("nothing found at {path}");
    }
    if !quiet {
        eprintln!(
            "downloaded {count} file(s) of {} {name:?} version {} to {}",
            kind.noun(),
            asset["version"].as_str().unwrap_or("?"),
            dest.display()
        );
    }
    Ok(())
}

/// `tarn compute start|stop|restart`: asks, then waits until the instance is Running (or
/// Stopped), printing its state as it changes; a Failed instance is an error with its log.
async fn instance_action(
    c: &Client,
    args: crate::InstanceArgs,
    action: &str,
    g: &crate::Global,
    default_ws: &dyn Fn(Option<String>) -> String,
) -> anyhow::Result<()> {
    let (ws, name, no_wait) = (&default_ws(args.workspace), &args.name, args.no_wait);
    let url = format!("/workspaces/{}/computes/{}", enc(ws), enc(name));
    c.post(&format!("{url}/{action}"), &json!({})).await?;
    let target = if action == "stop" {
        "Stopped"
    } else {
        "Running"
    };
    let started = std::time::Instant::now();
    let mut last = String::new();
    // A restart first leaves Running; wait to see it go.
    let mut left_running = action != "restart";
    loop {
        let out = c.get(&url).await?;
        let state = out["state"].as_str().unwrap_or("Stopped").to_string();
        if state != last && !g.quiet {
            eprintln!(
                "compute {name}: {state} ({:.1} s)",
                started.elapsed().as_secs_f64()
            );
        }
        last = state.clone();
        if state != "Running" {
            left_running = true;
        }
        if no_wait || (state == target && left_running) {
            output::print_one(g.output.unwrap_or(Format::Yaml), &out);
            return Ok(());
        }
        if state == "Failed" {
            bail!(
                "compute instance {name:?} failed: {}",
                out["error"].as_str().unwrap_or("(no reason given)")
            );
        }
        if started.elapsed() > std::time::Duration::from_secs(1800) {
            bail!("compute instance {name:?} is still {state} after 30 minutes");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// `tarn setup`: installs uv (which builds job environments) into `TARN_HOME/tools` unless one
/// is already on `PATH`, and says whether Spark jobs can run (they need Java).
pub(crate) fn setup(home: &Path) -> anyhow::Result<()> {
    match tarn_core::jobs::java_runtime() {
        Some(java) => println!("Java (for Spark jobs): {}", java.display()),
        None => println!(
            "Java (for Spark jobs): not found in JAVA_HOME or on PATH; Spark jobs are refused until \
             one is installed (Debian: apt-get install openjdk-17-jre-headless)"
        ),
    }
    if let Some(uv) = crate::runner::find_uv(Some(home)) {
        println!("uv is installed: {}", uv.display());
        return Ok(());
    }
    let tools = home.join("tools");
    println!("installing uv into {}", tools.display());
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let status = std::process::Command::new(python)
        .args(["-m", "venv"])
        .arg(&tools)
        .status()
        .context("cannot run python3 (install Python 3 first)")?;
    if !status.success() {
        bail!("python3 -m venv failed (on Debian: apt-get install python3-venv)");
    }
    let status = std::process::Command::new(tools.join("bin/pip"))
        .args(["install", "--quiet", "uv"])
        .status()
        .context("cannot run pip")?;
    if !status.success() {
        bail!("pip install uv failed");
    }
    println!("uv is installed: {}", tools.join("bin/uv").display());
    Ok(())
}

/// Where `datastore upload` puts things: a single file to a `--dest` without a trailing `/`
/// lands at exactly that path (as `cp` and `az storage blob upload --name` do); anything else
/// goes into the `--dest` folder. Returns the folder and, for a file, its name there.
fn upload_target(src_is_file: bool, dest: &str) -> (String, Option<String>) {
    if src_is_file && !dest.is_empty() && !dest.ends_with('/') {
        let (folder, name) = dest.rsplit_once('/').unwrap_or(("", dest));
        (folder.to_string(), Some(name.to_string()))
    } else {
        (dest.trim_end_matches('/').to_string(), None)
    }
}

/// What a path in a datastore is now.
#[derive(PartialEq)]
enum Remote {
    Missing,
    File,
    Folder,
}

async fn remote_kind(c: &Client, ws: &str, datastore: &str, path: &str) -> anyhow::Result<Remote> {
    if path.is_empty() {
        return Ok(Remote::Folder);
    }
    let files = crate::transfer::remote_files(c, ws, datastore, path).await?;
    Ok(match files.as_slice() {
        [] => Remote::Missing,
        [one] if one.path == path => Remote::File,
        _ => Remote::Folder,
    })
}

/// Refuses an upload whose destination is a file where a folder is needed (the folder itself,
/// or any folder above it), or a folder where a file is needed, naming the path, before
/// anything is sent.
async fn check_upload_dest(
    c: &Client,
    ws: &str,
    datastore: &str,
    folder: &str,
    file: Option<&str>,
) -> anyhow::Result<()> {
    if let Some(name) = file {
        let target = if folder.is_empty() {
            name.to_string()
        } else {
            format!("{folder}/{name}")
        };
        if remote_kind(c, ws, datastore, &target).await? == Remote::Folder {
            bail!(
                "{target:?} is a folder in datastore {datastore:?}; to upload into it, end --dest with `/` ({target}/)"
            );
        }
    }
    let mut above = String::new();
    for segment in folder.split('/').filter(|s| !s.is_empty()) {
        above = if above.is_empty() {
            segment.to_string()
        } else {
            format!("{above}/{segment}")
        };
        if c.head(&crate::transfer::file_url(ws, datastore, &above))
            .await?
            .is_some()
        {
            bail!(
                "{above:?} is a file in datastore {datastore:?}, but the upload needs a folder there"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::upload_target;

    #[test]
    fn a_file_lands_at_the_path_named_and_a_trailing_slash_means_into() {
        let t = |f, d| upload_target(f, d);
        assert_eq!(
            t(true, "raw/data.csv"),
            ("raw".into(), Some("data.csv".into()))
        );
        assert_eq!(t(true, "data.csv"), ("".into(), Some("data.csv".into())));
        assert_eq!(t(true, "raw/"), ("raw".into(), None));
        assert_eq!(t(true, ""), ("".into(), None));
        assert_eq!(t(false, "raw/x"), ("raw/x".into(), None));
    }
}
