//! Operator and agent commands over a data directory: `serve`, `tenant`,
//! `principal`, `tool`, `agent`, `grant`, `credential`, `token`, `actions`,
//! `call`, `inventory` and `history`.
//!
//! Each command opens the data directory, authenticates the key it was given
//! and calls one `warden-service` operation, which checks the caller's role.
//! Output is a readable table, or JSON with `--json`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use warden_service::approvals::{ApprovalView, Vote};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use warden_policy::Grant;
use warden_service::{Config, Error};

use crate::operator::{GrantInput, Operator, Remote, Target};

/// Options every data-directory command shares.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Data directory (databases, per-tenant secrets). Default:
    /// `$XDG_DATA_HOME/warden`, else `~/.local/share/warden`.
    #[arg(long, env = "WARDEN_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Operator key: the admin key or a principal's API key.
    #[arg(long, env = "WARDEN_KEY", global = true, hide_env_values = true)]
    pub key: Option<String>,
    /// Run operator and agent commands against this running server's HTTP
    /// API (e.g. `http://127.0.0.1:7070`) instead of the local data directory.
    #[arg(long, env = "WARDEN_SERVER", global = true)]
    pub server: Option<String>,
    /// Config file with `server` and `key` (default
    /// `$XDG_CONFIG_HOME/warden/config.toml`, else `~/.config/warden/config.toml`).
    #[arg(long, env = "WARDEN_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Keep the store in this PostgreSQL database (`postgres://…` of the
    /// application role, which must not own the tables) instead of the
    /// SQLite files in the data directory. Several nodes may share it.
    #[arg(long, env = "WARDEN_DATABASE", global = true, hide_env_values = true)]
    pub database: Option<String>,
    /// Connections this process keeps to PostgreSQL.
    #[arg(long, env = "WARDEN_DB_POOL", global = true, default_value_t = 16)]
    pub db_pool: u32,
}

/// `--database` checked: a PostgreSQL URL, or nothing (SQLite).
pub(crate) fn postgres_options(
    common: &Common,
) -> anyhow::Result<Option<warden_store::PostgresOptions>> {
    let Some(url) = common.database.as_deref().filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        bail!(
            "--database must be a postgres:// URL (SQLite, the default, needs no --database: it lives in the data directory)"
        );
    }
    if !(1..=1000).contains(&common.db_pool) {
        bail!("--db-pool must be 1-1000");
    }
    Ok(Some(warden_store::PostgresOptions {
        url: url.to_owned(),
        max_connections: common.db_pool,
    }))
}

/// `warden db migrate`: brings a PostgreSQL database to this build's schema,
/// as the tables' owner.
pub async fn db_migrate(owner_url: &str) -> anyhow::Result<ExitCode> {
    if !(owner_url.starts_with("postgres://") || owner_url.starts_with("postgresql://")) {
        bail!("--owner must be a postgres:// URL of the role that owns Warden's tables");
    }
    warden_store::Store::migrate_postgres(owner_url)
        .await
        .context("migrating the PostgreSQL database")?;
    eprintln!("warden: the PostgreSQL schema is current");
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
pub enum TenantCmd {
    /// Create a tenant (admin key).
    Create { name: String },
    /// List tenants (admin key).
    List,
    /// Show the tenant's settings and who changed them.
    Settings,
    /// Change a tenant setting (deployer); the change is recorded.
    Set { setting: String, value: String },
}

#[derive(Debug, Subcommand)]
pub enum PrincipalCmd {
    /// Add a principal and print its API key once (deployer; the admin key
    /// adds a tenant's first deployer).
    Add {
        name: String,
        /// A role: viewer, builder, approver or deployer. Repeat for several.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// The tenant (needed with the admin key).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List the tenant's principals.
    List,
}

#[derive(Debug, Subcommand)]
pub enum ToolCmd {
    /// Publish a tool version (builder).
    Publish {
        /// The component (`.wasm`).
        component: PathBuf,
        /// Its `tool.toml`.
        #[arg(long)]
        manifest: PathBuf,
    },
    /// Make a published version live (deployer, not its publisher).
    Deploy { tool: String, version: String },
    /// Make an earlier version live again (deployer).
    Rollback {
        tool: String,
        /// The version; default: the one live before the current one.
        #[arg(long)]
        to: Option<String>,
    },
    /// List tools, versions and which is live.
    List,
}

#[derive(Debug, Subcommand)]
pub enum AgentCmd {
    /// Draft an agent (builder).
    Create {
        name: String,
        #[arg(long)]
        purpose: String,
        /// Owning principal; default: you.
        #[arg(long)]
        owner: Option<String>,
        /// Days until the agent must be renewed (default 90).
        #[arg(long)]
        renew_days: Option<u32>,
    },
    /// Activate a draft or suspended agent (deployer).
    Activate { name: String },
    /// Suspend an agent (deployer).
    Suspend {
        name: String,
        #[arg(long, default_value = "suspended by an operator")]
        reason: String,
    },
    /// Move the renewal date to N days from now (deployer).
    Renew {
        name: String,
        #[arg(long, default_value_t = 90)]
        days: u32,
    },
    /// Decommission an agent: revoke its credentials, tokens and grants (deployer).
    Decommission {
        name: String,
        #[arg(long, default_value = "decommissioned by an operator")]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum GrantCmd {
    /// Grant an agent a tool (deployer). Replaces its previous grant on the tool.
    Add {
        #[arg(long)]
        agent: String,
        #[arg(long)]
        tool: String,
        /// Grant file (TOML: actions, limits, fs, http, kv, secrets, log, rate).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Granted actions, comma separated (instead of `actions` in the file).
        #[arg(long, value_delimiter = ',')]
        actions: Option<Vec<String>>,
        /// Days until the grant expires (default 90).
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// Revoke an agent's grant on a tool (deployer).
    Revoke {
        #[arg(long)]
        agent: String,
        #[arg(long)]
        tool: String,
    },
    /// List grants.
    List {
        #[arg(long)]
        agent: Option<String>,
        /// Include revoked grants.
        #[arg(long)]
        history: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum CredentialCmd {
    /// Issue an agent credential and print it once (deployer).
    Issue {
        #[arg(long)]
        agent: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Write an export bundle (entries, checkpoints, public keys) for offline
    /// verification (viewer).
    Export {
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Verify an export bundle offline: chain, sequence, HMACs (with
    /// `--keys`), key rotations, checkpoint signatures and Merkle roots.
    /// Needs no server and no data directory.
    Verify {
        bundle: PathBuf,
        /// The tenant's audit key file, to check HMACs too.
        #[arg(long)]
        keys: Option<PathBuf>,
        /// The verifier key you trust for the log's first checkpoints
        /// (`warden/<tenant>+<id>+<key>`); default: the bundle's own.
        #[arg(long)]
        trust: Option<String>,
    },
    /// Print the latest signed checkpoint (viewer).
    Checkpoint,
    /// List entries (viewer).
    Entries {
        #[arg(long, default_value_t = 0)]
        from: u64,
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// Print an inclusion proof (`--seq`) or a consistency proof (`--old`)
    /// as JSON (viewer).
    Prove {
        #[arg(long, conflicts_with = "old")]
        seq: Option<u64>,
        #[arg(long)]
        size: Option<u64>,
        #[arg(long)]
        old: Option<u64>,
        #[arg(long)]
        new: Option<u64>,
    },
    /// Rotate the tenant's audit keys now (deployer); the rotation entry is
    /// sealed by the old and the new keys.
    RotateKey {
        #[arg(long, default_value = "rotated by an operator")]
        reason: String,
    },
    /// Re-execute a recorded invocation with its imports answered from the
    /// journal, and check that the import sequence, the outcome and the
    /// output digest match the trail (viewer). Exit 1 on a divergence.
    Replay {
        /// The invocation id (`inv-...`, in the invocation's audit entries).
        invocation: String,
        /// Replay against another stored component, by SHA-256.
        #[arg(long)]
        component: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Upload a new version of the tenant's Cedar policy set (deployer). It
    /// is validated against Warden's schema first; an invalid set is refused
    /// and the version in force stays. An empty file turns the policy layer
    /// off (grants alone decide).
    Set {
        /// The Cedar policy file.
        file: PathBuf,
    },
    /// Print the policy set in force, or an older version.
    Show {
        #[arg(long)]
        version: Option<i64>,
    },
    /// Decide a hypothetical call (grant, then policy) and say why.
    Test {
        #[arg(long)]
        agent: String,
        #[arg(long)]
        tool: String,
        #[arg(long)]
        action: String,
        /// The call's arguments as JSON.
        #[arg(long)]
        args: Option<String>,
        /// Decide this import call instead, as JSON (e.g.
        /// `{"op":"http-request","scheme":"https","host":"api.example.com","port":443,"method":"GET","path":"/"}`).
        #[arg(long)]
        import: Option<String>,
        /// The data session's tier so far: public, internal, confidential, restricted.
        #[arg(long)]
        session_tier: Option<String>,
        /// Counters before the call, as JSON (`{"minute":3,"writes_today":10}`).
        #[arg(long)]
        usage: Option<String>,
        /// The time, Unix seconds (default now).
        #[arg(long)]
        now: Option<i64>,
        /// Test this candidate policy file instead of the set in force.
        #[arg(long)]
        policy: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApprovalCmd {
    /// Pending approvals you may decide (approver), with the exact payload;
    /// `--all` adds the ones you may not, saying why. Viewers see all.
    List {
        #[arg(long)]
        all: bool,
    },
    /// One approval with its votes and, once run, its result.
    Show { id: String },
    /// Vote to approve (as the principal whose key is used). On quorum the
    /// held call runs once, now, and its outcome is printed.
    Approve {
        id: String,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Vote to reject: any rejection vetoes.
    Reject {
        id: String,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// The requesting agent cancels its pending approval.
    Cancel {
        id: String,
        #[arg(long, env = "WARDEN_TOKEN", hide_env_values = true)]
        token: String,
    },
    /// The requesting agent waits (up to 60 s) for the held call's end and
    /// prints it.
    Wait {
        id: String,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        #[arg(long, env = "WARDEN_TOKEN", hide_env_values = true)]
        token: String,
    },
}

/// Exit codes of the data-directory commands (README, "Exit codes").
mod exit {
    pub const FAILED: u8 = 1;
    pub const INVALID: u8 = 2;
    pub const REFUSED: u8 = 3;
}

/// The default data directory.
pub fn default_data_dir() -> anyhow::Result<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("warden"));
    }
    match std::env::var_os("HOME") {
        Some(h) => Ok(PathBuf::from(h).join(".local/share/warden")),
        None => bail!("no data directory: set --data-dir or WARDEN_DATA_DIR"),
    }
}

pub(crate) async fn open(common: &Common) -> anyhow::Result<warden_service::Opened> {
    let dir = match &common.data_dir {
        Some(d) => d.clone(),
        None => default_data_dir()?,
    };
    let mut config = Config::new(dir.clone());
    config.cache_dir = crate::cache_dir();
    config.database = postgres_options(common)?;
    if let Some(env) = std::env::var("WARDEN_ENV").ok().filter(|e| !e.is_empty()) {
        config.env = env;
    }
    let shared = config.database.is_some();
    warden_service::Warden::open(config).await.with_context(|| {
        if shared {
            format!(
                "opening the PostgreSQL database (node files in `{}`)",
                dir.display()
            )
        } else {
            format!("opening data directory `{}`", dir.display())
        }
    })
}

/// Prints an error from the service and returns its exit code.
fn fail(e: &Error) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(match e {
        Error::Unauthenticated(_) | Error::Forbidden(_) => exit::REFUSED,
        Error::Invalid(_) | Error::NotFound(_) | Error::Conflict(_) => exit::INVALID,
        Error::Internal(_) => exit::FAILED,
    })
}

pub(crate) fn announce_bootstrap(key: &str, dir: &Path) {
    eprintln!(
        "\nWarden created a new data directory at {}.\n\
         This is the one-time ADMIN KEY. It is shown only now and stored only as a hash:\n\n    {key}\n\n\
         It creates tenants and each tenant's first deployer, e.g.\n\
         \x20   export WARDEN_KEY={key}\n\
         \x20   warden tenant create acme\n\
         \x20   warden principal add alice --role deployer --tenant acme\n",
        dir.display()
    );
}

/// Runs one operator command: locally on the data directory, or against
/// the server named by `--server` (see `operator.rs`).
macro_rules! with_operator {
    ($common:expr, |$op:ident| $body:expr) => {{
        let op = match Operator::connect($common).await? {
            Ok(o) => o,
            Err(e) => return Ok(fail(&e)),
        };
        let result = {
            let $op = &op;
            $body
        };
        op.close().await;
        match result {
            Ok(code) => Ok(code),
            Err(e) => Ok(fail(&e)),
        }
    }};
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<ExitCode, Error> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value).map_err(|e| Error::Internal(e.to_string()))?;
    let _ = writeln!(out);
    Ok(ExitCode::SUCCESS)
}

fn say(json: bool, value: serde_json::Value, text: &str) -> Result<ExitCode, Error> {
    if json {
        print_json(&value)
    } else {
        println!("{text}");
        Ok(ExitCode::SUCCESS)
    }
}

/// A plain text table: header, then rows, columns padded to fit.
fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let s: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    if rows.is_empty() {
        println!("(none)");
    }
}

/// `YYYY-MM-DD HH:MM` in UTC from Unix seconds.
pub fn date(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

pub async fn serve(
    common: &Common,
    listen: &str,
    allowed_origins: Vec<String>,
) -> anyhow::Result<ExitCode> {
    let opened = open(common).await?;
    let w = std::sync::Arc::new(opened.warden);
    match &opened.bootstrap_key {
        Some(k) => announce_bootstrap(k, w.data_dir()),
        None => eprintln!(
            "warden: data directory {} (the admin key was shown on the first start)",
            w.data_dir().display()
        ),
    }
    // Held calls after a restart: approved ones run, in-flight ones are
    // aborted and recorded, overdue ones expire.
    match w.resume_approvals(true).await {
        Ok(r) => {
            for id in &r.aborted {
                tracing::warn!(approval = %id, "approval aborted: the host restarted while it was in flight");
            }
            for id in &r.executed {
                tracing::info!(approval = %id, "approved call run after the restart");
            }
        }
        Err(e) => tracing::error!(error = %e, "resuming approvals failed"),
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let addr = listener.local_addr()?;
    let approvals = {
        let w = w.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                if let Err(e) = w.resume_approvals(false).await {
                    tracing::error!(error = %e, "approval sweep failed");
                }
            }
        })
    };
    let sweeper = {
        let w = w.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                match w.sweep().await {
                    Ok(s) => {
                        for (tenant, agent) in s {
                            tracing::warn!(%tenant, %agent, "agent suspended: renewal date passed");
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "renewal sweep failed"),
                }
            }
        })
    };
    let state = warden_rpc::AppState::new(w.clone(), allowed_origins);
    eprintln!(
        "warden: serving on http://{addr} (API /v1, MCP /mcp, /metrics, /openapi.json). Ctrl-C stops."
    );
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let served = warden_rpc::serve(listener, state, shutdown).await;
    sweeper.abort();
    approvals.abort();
    w.close().await;
    served.context("serving HTTP")?;
    Ok(ExitCode::SUCCESS)
}

/// `warden mcp`: MCP over stdio for the agent whose token is given.
pub async fn mcp(common: &Common, token: String) -> anyhow::Result<ExitCode> {
    let opened = open(common).await?;
    let w = std::sync::Arc::new(opened.warden);
    // Refuse a bad token before speaking MCP at all.
    if let Err(e) = w.authenticate_agent(&token).await {
        return Ok(fail(&e));
    }
    let state = warden_rpc::AppState::new(w.clone(), Vec::new());
    warden_rpc::mcp::serve_stdio(state, token)
        .await
        .context("serving MCP on stdio")?;
    w.close().await;
    Ok(ExitCode::SUCCESS)
}

pub async fn tenant(common: &Common, cmd: TenantCmd) -> anyhow::Result<ExitCode> {
    let json = common.json;
    with_operator!(common, |op| match &cmd {
        TenantCmd::Create { name } => match op.create_tenant(name).await {
            Ok(()) => say(
                json,
                serde_json::json!({ "tenant": name }),
                &format!(
                    "created tenant `{name}`; next: warden principal add <name> --role deployer --tenant {name}"
                ),
            ),
            Err(e) => Err(e),
        },
        TenantCmd::List => match op.tenants().await {
            Ok(t) if json => print_json(&t),
            Ok(t) => {
                table(
                    &["TENANT"],
                    &t.into_iter().map(|n| vec![n]).collect::<Vec<_>>(),
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => Err(e),
        },
        TenantCmd::Settings => match op.settings().await {
            Ok(s) if json => print_json(&s),
            Ok(s) => {
                println!("allow_self_deploy     {}", s.allow_self_deploy);
                println!("allow_owner_approval  {}", s.allow_owner_approval);
                println!("idle_days             {}", s.idle_days);
                if !s.changes.is_empty() {
                    println!();
                    table(
                        &["SETTING", "VALUE", "CHANGED BY", "AT"],
                        &s.changes
                            .iter()
                            .map(|(k, v, by, at)| vec![k.clone(), v.clone(), by.clone(), date(*at)])
                            .collect::<Vec<_>>(),
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => Err(e),
        },
        TenantCmd::Set { setting, value } => match op.set_setting(setting, value).await {
            Ok(()) => say(
                json,
                serde_json::json!({ "setting": setting, "value": value }),
                &format!("set `{setting}` to `{value}` (recorded)"),
            ),
            Err(e) => Err(e),
        },
    })
}

pub async fn principal(common: &Common, cmd: PrincipalCmd) -> anyhow::Result<ExitCode> {
    let json = common.json;
    with_operator!(common, |op| match &cmd {
        PrincipalCmd::Add {
            name,
            roles,
            tenant,
        } => {
            let roles: Vec<String> = roles
                .iter()
                .flat_map(|r| r.split(','))
                .map(|r| r.trim().to_owned())
                .collect();
            match op.add_principal(tenant.as_deref(), name, &roles).await {
                Ok((p, key)) => say(
                    json,
                    serde_json::json!({ "principal": p, "api_key": key }),
                    &format!(
                        "added principal `{}` ({}).\nAPI key (shown once, stored only as a hash):\n\n    {key}\n",
                        p.name,
                        p.roles.join(", ")
                    ),
                ),
                Err(e) => Err(e),
            }
        }
        PrincipalCmd::List => match op.inventory().await {
            Ok(inv) if json => print_json(&inv.principals),
            Ok(inv) => {
                table(
                    &["PRINCIPAL", "ROLES", "ADDED BY", "ADDED"],
                    &inv.principals
                        .iter()
                        .map(|p| {
                            vec![
                                p.name.clone(),
                                p.roles.join(","),
                                p.created_by.clone(),
                                date(p.created_at),
                            ]
                        })
                        .collect::<Vec<_>>(),
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => Err(e),
        },
    })
}

/// Parses a JSON flag, naming it when it does not parse.
fn json_flag<T: serde::de::DeserializeOwned>(
    flag: &str,
    value: Option<&str>,
) -> anyhow::Result<Option<T>> {
    value
        .map(|v| serde_json::from_str(v).with_context(|| format!("--{flag} is not valid here")))
        .transpose()
}

pub async fn policy(common: &Common, cmd: PolicyCmd) -> anyhow::Result<ExitCode> {
    let json = common.json;
    let text = |p: &Path| -> anyhow::Result<String> {
        String::from_utf8(read(p, "policy file")?)
            .with_context(|| format!("policy file `{}` is not UTF-8", p.display()))
    };
    let upload = match &cmd {
        PolicyCmd::Set { file } => Some(text(file)?),
        _ => None,
    };
    let test = match &cmd {
        PolicyCmd::Test {
            agent,
            tool,
            action,
            args,
            import,
            session_tier,
            usage,
            now,
            policy,
        } => Some(warden_service::PolicyTest {
            agent: agent.clone(),
            tool: tool.clone(),
            action: action.clone(),
            args: json_flag("args", args.as_deref())?,
            import: json_flag("import", import.as_deref())?,
            session_tier: session_tier
                .as_deref()
                .map(|t| serde_json::from_value(serde_json::Value::String(t.to_owned())))
                .transpose()
                .context("--session-tier must be public, internal, confidential or restricted")?,
            usage: json_flag("usage", usage.as_deref())?,
            now: *now,
            policy: policy.as_deref().map(text).transpose()?,
        }),
        _ => None,
    };
    with_operator!(common, |op| match (&cmd, &upload, &test) {
        (PolicyCmd::Set { .. }, Some(text), _) => match op.set_policy(text).await {
            Ok(r) if json => print_json(&r),
            Ok(r) => {
                println!(
                    "policy version {} in force (sha256 {}){}",
                    r.version,
                    r.sha256,
                    if r.text.trim().is_empty() {
                        "; it is empty, so grants alone decide"
                    } else {
                        ""
                    }
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => Err(e),
        },
        (PolicyCmd::Show { version }, _, _) => match op.policy(*version).await {
            Ok(r) if json => print_json(&r),
            Ok(None) => {
                println!("no policy set: grants alone decide");
                Ok(ExitCode::SUCCESS)
            }
            Ok(Some(r)) => {
                println!(
                    "// policy version {} set by {} at {} (sha256 {})",
                    r.version,
                    r.created_by,
                    date(r.created_at),
                    r.sha256
                );
                print!("{}", r.text);
                if !r.text.ends_with('\n') {
                    println!();
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => Err(e),
        },
        (PolicyCmd::Test { .. }, _, Some(t)) => match op.test_policy(t).await {
            Ok(e) if json => print_json(&e),
            Ok(e) => {
                println!("{}: {} [{}]", e.decision.to_uppercase(), e.reason, e.rule);
                if !e.policies.is_empty() {
                    println!("policies: {}", e.policies.join(", "));
                }
                match e.policy_version {
                    Some(v) => println!("policy version: {v}"),
                    None if t.policy.is_some() => println!("policy: the candidate file"),
                    None => {}
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => Err(e),
        },
        _ => Err(Error::Internal("unreachable policy command".into())),
    })
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {what} `{}`", path.display()))
}

pub async fn tool(common: &Common, cmd: ToolCmd) -> anyhow::Result<ExitCode> {
    let json = common.json;
    let files = match &cmd {
        ToolCmd::Publish {
            component,
            manifest,
        } => {
            let bytes = read(component, "component")?;
            let text = String::from_utf8(read(manifest, "manifest")?)
                .with_context(|| format!("manifest `{}` is not UTF-8", manifest.display()))?;
            Some((bytes, text))
        }
        _ => None,
    };
    with_operator!(common, |op| match (&cmd, &files) {
        (ToolCmd::Publish { .. }, Some((bytes, manifest))) => {
            match op.publish_tool(bytes, manifest).await {
                Ok(v) => say(
                    json,
                    serde_json::to_value(&v).unwrap_or_default(),
                    &format!(
                        "published `{}` {} (sha256 {}); a deployer other than you deploys it with: warden tool deploy {} {}",
                        v.tool, v.version, v.sha256, v.tool, v.version
                    ),
                ),
                Err(e) => Err(e),
            }
        }
        (ToolCmd::Deploy { tool, version }, _) => match op.deploy_tool(tool, version).await {
            Ok(d) => say(
                json,
                serde_json::to_value(&d).unwrap_or_default(),
                &format!("`{}` {} is live", d.tool, d.version),
            ),
            Err(e) => Err(e),
        },
        (ToolCmd::Rollback { tool, to }, _) => {
            match op.rollback_tool(tool, to.as_deref()).await {
                Ok(d) => say(
                    json,
                    serde_json::to_value(&d).unwrap_or_default(),
                    &format!("rolled `{}` back; {} is live", d.tool, d.version),
                ),
                Err(e) => Err(e),
            }
        }
        (ToolCmd::Publish { .. }, None) => {
            Err(Error::Invalid("no component to publish".into()))
        }
        (ToolCmd::List, _) => match op.inventory().await {
            Ok(inv) if json => print_json(&inv.tools),
            Ok(inv) => {
                let mut rows = Vec::new();
                for t in &inv.tools {
                    for v in &t.versions {
                        rows.push(vec![
                            t.tool.clone(),
                            v.version.clone(),
                            if t.live.as_deref() == Some(v.version.as_str()) {
                                "live".into()
                            } else {
                                String::new()
                            },
                            v.published_by.clone(),
                            date(v.published_at),
                            v.sha256[..16].to_owned(),
                        ]);
                    }
                }
                table(
                    &[
                        "TOOL",
                        "VERSION",
                        "LIVE",
                        "PUBLISHED BY",
                        "PUBLISHED",
                        "SHA256",
                    ],
                    &rows,
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => Err(e),
        },
    })
}

fn agent_line(a: &warden_service::AgentRecord, verb: &str) -> String {
    format!(
        "agent `{}` {verb}: status {}, renew by {}",
        a.name,
        a.status,
        date(a.renew_by)
    )
}

pub async fn agent(common: &Common, cmd: AgentCmd) -> anyhow::Result<ExitCode> {
    let json = common.json;
    with_operator!(common, |op| {
        let (result, verb) = match &cmd {
            AgentCmd::Create {
                name,
                purpose,
                owner,
                renew_days,
            } => (
                op.create_agent(name, purpose, owner.as_deref(), *renew_days)
                    .await,
                "drafted",
            ),
            AgentCmd::Activate { name } => (
                op.change_agent(name, "activate", None, None).await,
                "activated",
            ),
            AgentCmd::Suspend { name, reason } => (
                op.change_agent(name, "suspend", Some(reason), None).await,
                "suspended",
            ),
            AgentCmd::Renew { name, days } => (
                op.change_agent(name, "renew", None, Some(*days)).await,
                "renewed",
            ),
            AgentCmd::Decommission { name, reason } => (
                op.change_agent(name, "decommission", Some(reason), None)
                    .await,
                "decommissioned (credentials, tokens and grants revoked)",
            ),
        };
        match result {
            Ok(a) => say(
                json,
                serde_json::to_value(&a).unwrap_or_default(),
                &agent_line(&a, verb),
            ),
            Err(e) => Err(e),
        }
    })
}

pub async fn grant(common: &Common, cmd: GrantCmd) -> anyhow::Result<ExitCode> {
    let json = common.json;
    let input = match &cmd {
        GrantCmd::Add { file, actions, .. } => {
            let toml = match file {
                Some(path) => Some(
                    String::from_utf8(read(path, "grant file")?)
                        .with_context(|| format!("grant file `{}` is not UTF-8", path.display()))?,
                ),
                None => None,
            };
            let input = GrantInput {
                toml,
                actions: actions.clone(),
            };
            // Check here too, so a bad file is named before any network call.
            if let Err(e) = input.to_grant() {
                match file {
                    Some(path) => bail!("grant file `{}`: {e}", path.display()),
                    None => bail!("{e}"),
                }
            }
            Some(input)
        }
        _ => None,
    };
    with_operator!(common, |op| match &cmd {
        GrantCmd::Add {
            agent,
            tool,
            expires_in_days,
            ..
        } => match input.as_ref() {
            None => Err(Error::Invalid("no grant to add".into())),
            Some(g) => match op.add_grant(agent, tool, g, *expires_in_days).await {
                Ok(r) => say(
                    json,
                    serde_json::to_value(&r).unwrap_or_default(),
                    &format!(
                        "granted `{}` on `{}` ({}) until {}",
                        r.agent,
                        r.tool,
                        serde_json::from_str::<Grant>(&r.spec)
                            .map_or_else(|_| "?".into(), |g| describe_actions(&g)),
                        date(r.expires_at)
                    ),
                ),
                Err(e) => Err(e),
            },
        },
        GrantCmd::Revoke { agent, tool } => match op.revoke_grant(agent, tool).await {
            Ok(()) => say(
                json,
                serde_json::json!({ "revoked": { "agent": agent, "tool": tool } }),
                &format!("revoked the grant of `{agent}` on `{tool}`; its next call is denied"),
            ),
            Err(e) => Err(e),
        },
        GrantCmd::List { agent, history } => {
            match op.grants(agent.as_deref(), *history).await {
                Ok(g) if json => print_json(&g),
                Ok(g) => {
                    let now = op.now();
                    let rows: Vec<Vec<String>> = g
                        .iter()
                        .map(|r| {
                            let spec: Option<Grant> = serde_json::from_str(&r.spec).ok();
                            let state = if r.revoked_at.is_some() {
                                "revoked"
                            } else if r.expires_at <= now {
                                "expired"
                            } else {
                                "live"
                            };
                            vec![
                                r.agent.clone(),
                                r.tool.clone(),
                                spec.as_ref().map_or("?".into(), describe_actions),
                                spec.as_ref().map_or("?".into(), describe_caps),
                                state.into(),
                                date(r.expires_at),
                                r.created_by.clone(),
                            ]
                        })
                        .collect();
                    table(
                        &[
                            "AGENT",
                            "TOOL",
                            "ACTIONS",
                            "CAPABILITIES",
                            "STATE",
                            "EXPIRES",
                            "GRANTED BY",
                        ],
                        &rows,
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => Err(e),
            }
        }
    })
}

fn describe_actions(g: &Grant) -> String {
    match &g.actions {
        None => "all actions".into(),
        Some(a) => a.iter().cloned().collect::<Vec<_>>().join(","),
    }
}

fn describe_caps(g: &Grant) -> String {
    let caps: Vec<String> = g.capabilities().iter().map(|c| c.to_string()).collect();
    if caps.is_empty() {
        "-".into()
    } else {
        caps.join(",")
    }
}

pub async fn credential(common: &Common, cmd: CredentialCmd) -> anyhow::Result<ExitCode> {
    let json = common.json;
    with_operator!(common, |op| match &cmd {
        CredentialCmd::Issue { agent } => match op.issue_credential(agent).await {
            Ok(c) => say(
                json,
                serde_json::json!({ "agent": agent, "credential": c }),
                &format!(
                    "credential for agent `{agent}` (shown once, stored only as a hash):\n\n    {c}\n\n\
                     The agent exchanges it for a one-hour access token: warden token --credential <it>"
                ),
            ),
            Err(e) => Err(e),
        },
    })
}

pub async fn inventory(common: &Common) -> anyhow::Result<ExitCode> {
    let json = common.json;
    with_operator!(common, |op| match op.inventory().await {
        Ok(inv) if json => print_json(&inv),
        Ok(inv) => {
            println!("tenant {}\n", inv.tenant);
            table(
                &[
                    "AGENT",
                    "OWNER",
                    "STATUS",
                    "RENEW BY",
                    "LAST ACTIVE",
                    "FLAGS",
                    "GRANTS",
                    "PURPOSE",
                ],
                &inv.agents
                    .iter()
                    .map(|a| {
                        let mut flags = Vec::new();
                        if a.idle {
                            flags.push("idle");
                        }
                        if a.overdue {
                            flags.push("renewal-overdue");
                        }
                        vec![
                            a.agent.name.clone(),
                            a.agent.owner.clone(),
                            a.agent.status.to_string(),
                            date(a.agent.renew_by),
                            a.agent.last_active_at.map_or("never".into(), date),
                            if flags.is_empty() {
                                "-".into()
                            } else {
                                flags.join(",")
                            },
                            if a.grants.is_empty() {
                                "-".into()
                            } else {
                                a.grants.join(",")
                            },
                            a.agent.purpose.clone(),
                        ]
                    })
                    .collect::<Vec<_>>(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(e),
    })
}

pub async fn history(common: &Common) -> anyhow::Result<ExitCode> {
    let json = common.json;
    with_operator!(common, |op| match op.events().await {
        Ok(ev) if json => print_json(&ev),
        Ok(ev) => {
            table(
                &["#", "AT", "ACTOR", "ACTION", "SUBJECT", "DETAIL"],
                &ev.iter()
                    .map(|e| {
                        vec![
                            e.seq.to_string(),
                            date(e.at),
                            e.actor.clone(),
                            e.action.clone(),
                            e.subject.clone(),
                            e.detail.to_string(),
                        ]
                    })
                    .collect::<Vec<_>>(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(e),
    })
}

// ---- agent commands --------------------------------------------------------------

/// `warden token`: exchange a credential for an access token.
pub async fn token(
    common: &Common,
    credential: &str,
    ttl_secs: Option<u64>,
    tools: Option<Vec<String>>,
) -> anyhow::Result<ExitCode> {
    let target = Target::resolve(common)?;
    let r = if let Some(server) = &target.server {
        Remote::new(server, None)?
            .token(credential, ttl_secs, tools)
            .await
    } else {
        let opened = open(common).await?;
        let w = opened.warden;
        let r = w
            .exchange_credential(credential, ttl_secs.map(Duration::from_secs), tools)
            .await;
        w.close().await;
        r
    };
    match r {
        Ok(t) if common.json => Ok(print_json(&t).unwrap_or(ExitCode::FAILURE)),
        Ok(t) => {
            println!("{}", t.token);
            eprintln!(
                "access token for agent `{}` in tenant `{}`, valid until {}",
                t.agent,
                t.tenant,
                date(t.expires_at)
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Ok(fail(&e)),
    }
}

/// `warden actions`: what the token's agent may call.
pub async fn actions(common: &Common, token: &str) -> anyhow::Result<ExitCode> {
    let target = Target::resolve(common)?;
    let r = if let Some(server) = &target.server {
        Remote::new(server, Some(token.to_owned()))?.actions().await
    } else {
        let opened = open(common).await?;
        let w = opened.warden;
        let r = match w.authenticate_agent(token).await {
            Ok(s) => w.granted_actions(&s).await,
            Err(e) => Err(e),
        };
        w.close().await;
        r
    };
    match r {
        Ok(a) if common.json => Ok(print_json(&a).unwrap_or(ExitCode::FAILURE)),
        Ok(a) => {
            table(
                &["TOOL", "VERSION", "ACTION", "EFFECT", "DESCRIPTION"],
                &a.iter()
                    .map(|a| {
                        vec![
                            a.tool.clone(),
                            a.version.clone(),
                            a.action.clone(),
                            format!("{:?}", a.effect).to_lowercase(),
                            a.description.clone(),
                        ]
                    })
                    .collect::<Vec<_>>(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Ok(fail(&e)),
    }
}

/// `warden call`: run one granted action as the token's agent.
pub async fn call(
    common: &Common,
    token: &str,
    tool: &str,
    action: &str,
    input: &str,
) -> anyhow::Result<ExitCode> {
    let input = crate::read_input(input)?;
    let target = Target::resolve(common)?;
    if let Some(server) = &target.server {
        let value: serde_json::Value =
            serde_json::from_str(&input).with_context(|| "--input is not JSON".to_string())?;
        return match Remote::new(server, Some(token.to_owned()))?
            .call(tool, action, value)
            .await
        {
            Ok(answer) => crate::print_answer(&answer, common.json),
            Err(e) => Ok(fail(&e)),
        };
    }
    let opened = open(common).await?;
    let w = opened.warden;
    let r = match w.authenticate_agent(token).await {
        Ok(s) => w.invoke(&s, tool, action, &input).await,
        Err(e) => Err(e),
    };
    w.close().await;
    match r {
        Ok(report) => crate::print_report(&report, common.json),
        Err(e) => Ok(fail(&e)),
    }
}

// ---- approvals ------------------------------------------------------------------------

fn print_approval(v: &ApprovalView) {
    let a = &v.approval;
    println!(
        "{} [{}] {} {}/{} by agent `{}`: {} of {} approvals; expires {}",
        a.id,
        a.kind,
        a.status,
        a.tool,
        a.action,
        a.agent,
        v.approvals,
        a.required,
        date(a.expires_at)
    );
    println!("  why held: {} [{}]", a.reason, a.rule);
    println!(
        "  tool version {} (component {}), policy version {}",
        a.version, a.component, a.policy_version
    );
    println!("  input: {}", a.input);
    if let Some(i) = &a.import {
        println!("  import call: {i}");
    }
    println!("  payload sha256: {}", a.payload_sha256);
    for vote in &a.votes {
        println!(
            "  {} by principal:{} at {}{}",
            vote.vote,
            vote.principal,
            date(vote.at),
            if vote.comment.is_empty() {
                String::new()
            } else {
                format!(": {}", vote.comment)
            }
        );
    }
    if let Some(false) = v.may_decide {
        println!(
            "  you may not decide it: {}",
            v.why_not.as_deref().unwrap_or("")
        );
    }
    if let Some(r) = &a.result {
        println!(
            "  result: {}",
            r.get("outcome").and_then(|o| o.as_str()).unwrap_or("?")
        );
        if let Some(o) = r.get("output").filter(|o| !o.is_null()) {
            println!("  output: {o}");
        }
        if let Some(reason) = r.get("reason").and_then(|o| o.as_str()) {
            println!("  reason: {reason}");
        }
    }
}

pub async fn approval(common: &Common, cmd: ApprovalCmd) -> anyhow::Result<ExitCode> {
    let json = common.json;
    let show = |v: &ApprovalView| -> Result<ExitCode, Error> {
        if json {
            return print_json(v);
        }
        print_approval(v);
        Ok(ExitCode::SUCCESS)
    };
    if let ApprovalCmd::Cancel { id, token } | ApprovalCmd::Wait { id, token, .. } = &cmd {
        let wait = match &cmd {
            ApprovalCmd::Wait { seconds, .. } => Some(*seconds),
            _ => None,
        };
        let target = Target::resolve(common)?;
        let r = if let Some(server) = &target.server {
            let remote = Remote::new(server, Some(token.to_owned()))?;
            match wait {
                Some(s) => remote.agent_approval(id, s).await,
                None => remote.cancel_approval(id).await,
            }
        } else {
            let opened = open(common).await?;
            let w = opened.warden;
            let r = match w.authenticate_agent(token).await {
                Ok(s) => match wait {
                    Some(secs) => w.agent_approval(&s, id, Duration::from_secs(secs)).await,
                    None => w.cancel_approval(&s, id).await,
                },
                Err(e) => Err(e),
            };
            w.close().await;
            r
        };
        return match r {
            Ok(v) => Ok(show(&v).unwrap_or(ExitCode::FAILURE)),
            Err(e) => Ok(fail(&e)),
        };
    }
    with_operator!(common, |op| match &cmd {
        ApprovalCmd::List { all } => match op.approvals(*all).await {
            Ok(list) if json => print_json(&list),
            Ok(list) => {
                if list.is_empty() {
                    println!("no pending approval for you to decide");
                }
                for v in &list {
                    print_approval(v);
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => Err(e),
        },
        ApprovalCmd::Show { id } => op.approval(id).await.and_then(|v| show(&v)),
        ApprovalCmd::Approve { id, comment } => op
            .decide_approval(id, Vote::Approve, comment)
            .await
            .and_then(|v| show(&v)),
        ApprovalCmd::Reject { id, comment } => op
            .decide_approval(id, Vote::Reject, comment)
            .await
            .and_then(|v| show(&v)),
        ApprovalCmd::Cancel { .. } | ApprovalCmd::Wait { .. } =>
            Err(Error::Internal("unreachable approval command".into())),
    })
}

// ---- audit ---------------------------------------------------------------------------

pub async fn audit(common: &Common, cmd: AuditCmd) -> anyhow::Result<ExitCode> {
    let json = common.json;
    if let AuditCmd::Verify {
        bundle,
        keys,
        trust,
    } = &cmd
    {
        return audit_verify(bundle, keys.as_deref(), trust.as_deref(), json);
    }
    with_operator!(common, |op| match &cmd {
        AuditCmd::Export { out } => match op.audit_export().await {
            Ok(b) => {
                let text =
                    serde_json::to_vec_pretty(&b).map_err(|e| Error::Internal(e.to_string()))?;
                match out {
                    Some(path) => {
                        std::fs::write(path, &text).map_err(|e| {
                            Error::Internal(format!("writing `{}`: {e}", path.display()))
                        })?;
                        eprintln!(
                            "exported {} entries and {} checkpoints of tenant `{}` to {}",
                            b.records.len(),
                            b.checkpoints.len(),
                            b.tenant,
                            path.display()
                        );
                    }
                    None => {
                        let mut o = std::io::stdout().lock();
                        let _ = o.write_all(&text);
                        let _ = writeln!(o);
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => Err(e),
        },
        AuditCmd::Checkpoint => match op.audit_checkpoint().await {
            Ok(n) if json => print_json(&serde_json::json!({ "checkpoint": n })),
            Ok(n) => {
                print!("{n}");
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => Err(e),
        },
        AuditCmd::Entries { from, limit } => match op.audit_entries(*from, *limit).await {
            Ok(r) if json => print_json(&r),
            Ok(r) => {
                for rec in r {
                    println!("{}", rec.body);
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => Err(e),
        },
        AuditCmd::Prove {
            seq,
            size,
            old,
            new,
        } => match (seq, old) {
            (Some(seq), _) => match op.audit_inclusion(*seq, *size).await {
                Ok(p) => print_json(&p),
                Err(e) => Err(e),
            },
            (None, Some(old)) => match op.audit_consistency(*old, *new).await {
                Ok(p) => print_json(&p),
                Err(e) => Err(e),
            },
            (None, None) => Err(Error::Invalid(
                "give --seq (inclusion proof) or --old (consistency proof)".into(),
            )),
        },
        AuditCmd::RotateKey { reason } => match op.audit_rotate(reason).await {
            Ok(seq) => say(
                json,
                serde_json::json!({ "rotated": true, "seq": seq }),
                &format!(
                    "audit keys rotated; rotation entry {seq} is sealed by the old and the new keys"
                ),
            ),
            Err(e) => Err(e),
        },
        AuditCmd::Replay {
            invocation,
            component,
        } => match op.audit_replay(invocation, component.as_deref()).await {
            Ok(r) => {
                let code = if r.matched {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(exit::FAILED)
                };
                if json {
                    print_json(&r)?;
                } else if let Some(d) = &r.divergence {
                    println!(
                        "DIVERGED: invocation {} ({} {}) replayed on component {}: {d}",
                        r.invocation, r.tool, r.action, r.component
                    );
                } else {
                    println!(
                        "OK: invocation {} ({} {}) replayed on component {}: {} import calls, outcome `{}` and output sha256 {} match",
                        r.invocation,
                        r.tool,
                        r.action,
                        r.component,
                        r.imports,
                        r.outcome,
                        r.output_sha256.as_deref().unwrap_or("(none)")
                    );
                }
                Ok(code)
            }
            Err(e) => Err(e),
        },
        AuditCmd::Verify { .. } => Err(Error::Invalid("verify runs offline".into())),
    })
}

/// `warden audit verify`: offline, from files only.
fn audit_verify(
    bundle: &Path,
    keys: Option<&Path>,
    trust: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let text = read(bundle, "audit bundle")?;
    let b: warden_audit::Bundle = match serde_json::from_slice(&text) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: `{}` is not an audit bundle: {e}", bundle.display());
            return Ok(ExitCode::from(exit::INVALID));
        }
    };
    let hmac = match keys {
        Some(k) => {
            let kf: warden_audit::KeyFile = serde_json::from_slice(&read(k, "audit key file")?)
                .with_context(|| format!("`{}` is not an audit key file", k.display()))?;
            kf.hmac_keys()
        }
        None => std::collections::HashMap::new(),
    };
    let v = warden_audit::verify(&b, &hmac, trust);
    if json {
        print_json(&v).map_err(|e| anyhow::anyhow!("{e}"))?;
    } else if let Some(f) = &v.failure {
        println!("FAILED at entry {}: {}", f.position, f.problem);
        println!(
            "verified before it: {} entries, {} checkpoints",
            v.entries, v.checkpoints
        );
    } else {
        println!(
            "OK: tenant `{}`: {} entries chained; {} HMACs checked{}; {} checkpoints verified (up to {} entries); {} key rotations",
            v.tenant,
            v.entries,
            v.hmac_checked,
            if keys.is_none() {
                " (pass --keys to check them)"
            } else {
                ""
            },
            v.checkpoints,
            v.checkpointed,
            v.rotations
        );
        if trust.is_none() {
            println!(
                "trusted the bundle's own first key {}; pin it with --trust",
                v.trusted
            );
        }
        if v.checkpointed < v.entries {
            println!(
                "note: entries after {} are not covered by a checkpoint",
                v.checkpointed
            );
        }
    }
    Ok(if v.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::FAILED)
    })
}
