//! `warden`: the command-line entry point.
//!
//! For tool authors: `warden run` runs one action of a component under a grant
//! file and `warden inspect` prints a component's actions and schemas. For
//! operators and agents: `warden serve` and the governance commands in `ops`,
//! which work on a data directory.

mod bench;
mod operator;
mod ops;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use warden_policy::{Grant, Limits, Manifest};
use warden_runtime::{Backends, Call, MemoryKv, Runtime, RuntimeConfig, SecretSource, Tool};

#[derive(Debug, Parser)]
#[command(
    name = "warden",
    version,
    about = "WebAssembly-sandboxed tool host for AI agents"
)]
struct Cli {
    #[command(flatten)]
    common: ops::Common,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum DbCommand {
    /// Create or update Warden's tables, row-level security policies and
    /// grants in a PostgreSQL database. Run as the role that owns the tables
    /// (never the one `serve --database` uses); the `warden_app` role must
    /// exist (see README, "PostgreSQL").
    Migrate {
        /// `postgres://…` of the owner role.
        #[arg(long, env = "WARDEN_DATABASE_OWNER", hide_env_values = true)]
        owner: String,
    },
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one action of a tool component under a grant.
    Run {
        /// The tool component (`.wasm`).
        component: PathBuf,
        /// The action to invoke.
        #[arg(long)]
        action: String,
        /// The action's input as JSON text (`-` reads standard input).
        #[arg(long, default_value = "{}")]
        input: String,
        /// Grant file (TOML). Without it the call gets no capability and the
        /// standard limits.
        #[arg(long)]
        grant: Option<PathBuf>,
        /// Persist the kv capability's store in this JSON file between runs.
        #[arg(long)]
        kv_file: Option<PathBuf>,
        /// The tool's `tool.toml`: refuse to run when the component disagrees
        /// with it or the grant is wider than it requests.
        #[arg(long)]
        manifest: Option<PathBuf>,
    },
    /// Open (on first start: create) the data directory, print the one-time
    /// admin key on first start, and keep agents' renewal state current.
    Serve {
        /// Address to listen on (loopback by default).
        #[arg(long, default_value = "127.0.0.1:7070", env = "WARDEN_LISTEN")]
        listen: String,
        /// A browser origin allowed to call /mcp (repeat). Without any, every
        /// request carrying an Origin header is refused.
        #[arg(long = "allowed-origin")]
        allowed_origins: Vec<String>,
    },
    /// Load test a server: N concurrent clients calling one action over HTTP
    /// (`--url`) or over MCP stdio (a `warden mcp` it starts), for a bounded
    /// time and count. Prints throughput and latency percentiles as JSON.
    Bench {
        /// Base URL of `warden serve`; without it, MCP over stdio.
        #[arg(long)]
        url: Option<String>,
        #[arg(long, env = "WARDEN_TOKEN", hide_env_values = true)]
        token: String,
        #[arg(long, default_value = "text")]
        tool: String,
        #[arg(long, default_value = "word_count")]
        action: String,
        #[arg(long, default_value = r#"{"text": "the quick brown fox"}"#)]
        input: String,
        /// Concurrent clients (HTTP) or requests in flight (MCP).
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Seconds to run at most.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Calls to make at most.
        #[arg(long, default_value_t = 1_000_000)]
        count: u64,
    },
    /// PostgreSQL schema: `warden db migrate --owner postgres://owner@…`.
    #[command(subcommand)]
    Db(DbCommand),
    /// (agent) Serve MCP over stdin/stdout for the token's agent.
    Mcp {
        #[arg(long, env = "WARDEN_TOKEN", hide_env_values = true)]
        token: String,
    },
    /// Tenants and their settings.
    #[command(subcommand)]
    Tenant(ops::TenantCmd),
    /// People and service accounts of a tenant, with their roles.
    #[command(subcommand)]
    Principal(ops::PrincipalCmd),
    /// The tool registry: publish, deploy, roll back.
    #[command(subcommand)]
    Tool(ops::ToolCmd),
    /// Agent identities and their lifecycle.
    #[command(subcommand)]
    Agent(ops::AgentCmd),
    /// Capability grants of agents on tools.
    #[command(subcommand)]
    Grant(ops::GrantCmd),
    /// Agent credentials.
    #[command(subcommand)]
    Credential(ops::CredentialCmd),
    /// The tenant's Cedar policy: set (validated, versioned), show, test.
    #[command(subcommand)]
    Policy(ops::PolicyCmd),
    /// Held calls: list the ones you may decide, show one, approve, reject;
    /// the requesting agent cancels or waits for the result.
    #[command(subcommand)]
    Approval(ops::ApprovalCmd),
    /// Agents, owners, status, renewal dates, idle flags and grants.
    Inventory,
    /// The tenant's governance history.
    History,
    /// The signed audit trail: export, verify offline, checkpoints, proofs,
    /// key rotation.
    #[command(subcommand)]
    Audit(ops::AuditCmd),
    /// (agent) Exchange a credential for a short-lived access token.
    Token {
        #[arg(long, env = "WARDEN_CREDENTIAL", hide_env_values = true)]
        credential: String,
        /// Token lifetime in seconds (default 3600, at most 86400).
        #[arg(long)]
        ttl_secs: Option<u64>,
        /// Narrow the token to these tools (repeat or comma-separate).
        #[arg(long = "tool", value_delimiter = ',')]
        tools: Option<Vec<String>>,
    },
    /// (agent) List the actions the token's agent may call.
    Actions {
        #[arg(long, env = "WARDEN_TOKEN", hide_env_values = true)]
        token: String,
    },
    /// (agent) Call one granted action.
    Call {
        tool: String,
        action: String,
        /// The action's input as JSON text (`-` reads standard input).
        #[arg(long, default_value = "{}")]
        input: String,
        #[arg(long, env = "WARDEN_TOKEN", hide_env_values = true)]
        token: String,
    },
    /// Print a tool component's actions, effect classes and schemas.
    Inspect {
        /// The tool component (`.wasm`).
        component: PathBuf,
        /// Check the component against this `tool.toml` manifest.
        #[arg(long)]
        manifest: Option<PathBuf>,
    },
}

/// Exit codes of `warden run`, documented in the README.
mod exit {
    pub const DENIED: u8 = 3;
    pub const INVALID_INPUT: u8 = 4;
    pub const LIMIT: u8 = 5;
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WARDEN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // `WARDEN_LOG_FORMAT=json`: one JSON object per line, spans included, so
    // a request's correlation id is on every line it caused.
    if std::env::var("WARDEN_LOG_FORMAT").is_ok_and(|f| f == "json") {
        logs.json()
            .with_current_span(true)
            .with_span_list(true)
            .init();
    } else {
        logs.init();
    }
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::USAGE)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let common = &cli.common;
    let json = common.json;
    match cli.command {
        Command::Serve {
            listen,
            allowed_origins,
        } => ops::serve(common, &listen, allowed_origins).await,
        Command::Mcp { token } => ops::mcp(common, token).await,
        Command::Db(DbCommand::Migrate { owner }) => ops::db_migrate(&owner).await,
        Command::Bench {
            url,
            token,
            tool,
            action,
            input,
            concurrency,
            seconds,
            count,
        } => {
            bench::run(bench::Bench {
                url,
                token,
                tool,
                action,
                input,
                concurrency,
                duration: std::time::Duration::from_secs(seconds),
                max_calls: count,
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Tenant(c) => ops::tenant(common, c).await,
        Command::Principal(c) => ops::principal(common, c).await,
        Command::Tool(c) => ops::tool(common, c).await,
        Command::Agent(c) => ops::agent(common, c).await,
        Command::Grant(c) => ops::grant(common, c).await,
        Command::Credential(c) => ops::credential(common, c).await,
        Command::Inventory => ops::inventory(common).await,
        Command::History => ops::history(common).await,
        Command::Policy(c) => ops::policy(common, c).await,
        Command::Approval(c) => ops::approval(common, c).await,
        Command::Audit(c) => ops::audit(common, c).await,
        Command::Token {
            credential,
            ttl_secs,
            tools,
        } => ops::token(common, &credential, ttl_secs, tools).await,
        Command::Actions { token } => ops::actions(common, &token).await,
        Command::Call {
            tool,
            action,
            input,
            token,
        } => ops::call(common, &token, &tool, &action, &input).await,
        Command::Run {
            component,
            action,
            input,
            grant,
            kv_file,
            manifest,
        } => {
            let files = RunFiles {
                grant: grant.as_deref(),
                kv: kv_file.as_deref(),
                manifest: manifest.as_deref(),
            };
            run_action(&component, &action, &input, files, json).await
        }
        Command::Inspect {
            component,
            manifest,
        } => inspect(&component, manifest.as_deref(), json).await,
    }
}

/// The compiled-component cache: `WARDEN_CACHE_DIR`, else `~/.cache/warden/components`.
fn cache_dir() -> Option<PathBuf> {
    std::env::var_os("WARDEN_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/warden/components"))
        })
}

fn runtime() -> anyhow::Result<Runtime> {
    Ok(Runtime::new(RuntimeConfig {
        max_concurrent: 8,
        cache_dir: cache_dir(),
    })?)
}

/// The `--input` text: JSON given inline, or `-` for standard input.
fn read_input(input: &str) -> anyhow::Result<String> {
    let input = if input == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading input from standard input")?
    } else {
        input.to_owned()
    };
    if let Err(e) = serde_json::from_str::<serde_json::Value>(&input) {
        bail!("--input is not valid JSON: {e}");
    }
    Ok(input)
}

/// Secret values for `warden run` come from `WARDEN_SECRET_<NAME>` variables;
/// only names in the grant are ever looked up.
#[derive(Debug)]
struct EnvSecrets;

impl SecretSource for EnvSecrets {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(format!("WARDEN_SECRET_{name}")).ok()
    }
}

/// The `--kv-file` format: namespace → key → value. A UTF-8 value is stored as
/// a JSON string; any other value as `{"hex": "..."}`, so no byte is lost.
type KvEntries = BTreeMap<String, BTreeMap<String, KvValue>>;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum KvValue {
    Text(String),
    Bytes { hex: String },
}

impl KvValue {
    fn from_bytes(bytes: Vec<u8>) -> KvValue {
        match String::from_utf8(bytes) {
            Ok(text) => KvValue::Text(text),
            Err(e) => KvValue::Bytes {
                hex: hex::encode(e.into_bytes()),
            },
        }
    }

    fn into_bytes(self, ns: &str, key: &str) -> anyhow::Result<Vec<u8>> {
        match self {
            KvValue::Text(t) => Ok(t.into_bytes()),
            KvValue::Bytes { hex } => hex::decode(&hex)
                .with_context(|| format!("kv file: value of `{ns}/{key}` is not valid hex")),
        }
    }
}

fn load_kv(path: &Path, kv: &MemoryKv) -> anyhow::Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading kv file `{}`", path.display())),
    };
    let entries: KvEntries = serde_json::from_str(&text)
        .with_context(|| format!("kv file `{}` is not valid", path.display()))?;
    let mut all = Vec::new();
    for (ns, m) in entries {
        for (k, v) in m {
            let bytes = v.into_bytes(&ns, &k)?;
            all.push((ns.clone(), k, bytes));
        }
    }
    kv.insert_all(all);
    Ok(())
}

fn save_kv(path: &Path, kv: &MemoryKv) -> anyhow::Result<()> {
    let mut entries = KvEntries::new();
    for (ns, k, v) in kv.entries() {
        entries
            .entry(ns)
            .or_default()
            .insert(k, KvValue::from_bytes(v));
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&entries)?)
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("writing kv file `{}`", path.display()))
}

/// Optional files of `warden run`.
#[derive(Debug, Clone, Copy)]
struct RunFiles<'a> {
    grant: Option<&'a Path>,
    kv: Option<&'a Path>,
    manifest: Option<&'a Path>,
}

fn read_manifest(path: &Path) -> anyhow::Result<Manifest> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading manifest `{}`", path.display()))?;
    Manifest::from_toml(&text).with_context(|| format!("manifest `{}`", path.display()))
}

/// Checks that the component agrees with its manifest.
fn check_manifest(manifest: &Manifest, tool: &Tool) -> anyhow::Result<()> {
    manifest
        .check_component(&tool.info().effects(), tool.required_capabilities())
        .context("checking the component against its manifest")
}

async fn run_action(
    component: &Path,
    action: &str,
    input: &str,
    files: RunFiles<'_>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let RunFiles {
        grant,
        kv: kv_file,
        manifest,
    } = files;
    let input = read_input(input)?;
    let grant = match grant {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading grant file `{}`", path.display()))?;
            Grant::from_toml(&text).with_context(|| format!("grant file `{}`", path.display()))?
        }
        None => Grant::empty(Limits::STANDARD),
    };
    let runtime = runtime()?;
    let tool = runtime
        .load_file(component)
        .await
        .with_context(|| format!("loading `{}`", component.display()))?;
    if let Some(path) = manifest {
        let manifest = read_manifest(path)?;
        check_manifest(&manifest, &tool)?;
        manifest.check_grant(&grant)?;
    }
    let kv = Arc::new(MemoryKv::default());
    if let Some(path) = kv_file {
        load_kv(path, &kv)?;
    }
    // `warden run` is the standalone developer runner: no audit trail, so no
    // write-ahead records.
    let backends = Backends {
        kv: kv.clone(),
        secrets: Arc::new(EnvSecrets),
        write_ahead: None,
        policy: None,
    };
    let report = runtime
        .invoke(
            &tool,
            Arc::new(grant),
            &backends,
            Call {
                action,
                input: &input,
            },
        )
        .await;
    if let Some(path) = kv_file {
        save_kv(path, &kv)?;
    }
    print_report(&report, json)
}

/// Prints a call's output (or, with `json`, the whole report) and returns the
/// exit code of its outcome.
fn print_report(report: &warden_runtime::Report, json: bool) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else if let Some(output) = &report.output {
        serde_json::to_writer(&mut out, output)?;
        writeln!(out)?;
    }
    if !report.outcome.is_ok() && !json {
        eprintln!("{}", report.outcome.reason());
    }
    Ok(exit_for(report.outcome.kind()))
}

/// The exit code of an outcome, by its serialized name.
fn exit_for(kind: &str) -> ExitCode {
    match kind {
        "ok" => ExitCode::SUCCESS,
        "denied" | "not_granted" | "held" => ExitCode::from(exit::DENIED),
        "invalid_input" | "unknown_action" => ExitCode::from(exit::INVALID_INPUT),
        "out_of_fuel" | "deadline" | "memory_limit" | "stack_overflow" | "output_too_large" => {
            ExitCode::from(exit::LIMIT)
        }
        _ => ExitCode::from(exit::FAILED),
    }
}

/// Prints a server's answer to a call (the report as JSON) like
/// [`print_report`] prints a local one.
fn print_answer(answer: &serde_json::Value, json: bool) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let kind = answer["outcome"].as_str().unwrap_or("");
    if json {
        serde_json::to_writer_pretty(&mut out, answer)?;
        writeln!(out)?;
    } else if answer["status"] == "running" {
        writeln!(
            out,
            "still running; collect it with GET /v1/invocations/{}",
            answer["invocation_id"].as_str().unwrap_or("?")
        )?;
        return Ok(ExitCode::SUCCESS);
    } else if kind == "ok" {
        serde_json::to_writer(&mut out, &answer["output"])?;
        writeln!(out)?;
    }
    if kind != "ok" && !json {
        let detail = ["reason", "message", "action", "field"]
            .iter()
            .filter_map(|k| answer[*k].as_str())
            .collect::<Vec<_>>()
            .join(": ");
        eprintln!("{kind}: {detail}");
    }
    Ok(exit_for(kind))
}

async fn inspect(
    component: &Path,
    manifest: Option<&Path>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let runtime = runtime()?;
    let tool = runtime
        .load_file(component)
        .await
        .with_context(|| format!("loading `{}`", component.display()))?;
    if let Some(path) = manifest {
        check_manifest(&read_manifest(path)?, &tool)?;
    }
    let info = tool.info();
    let mut out = std::io::stdout().lock();
    if json {
        let doc = serde_json::json!({
            "component_sha256": tool.hash_hex(),
            "capabilities": tool.required_capabilities(),
            "imports": tool.imports(),
            "tool": info,
        });
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "{} {} — {}", info.name, info.version, info.description)?;
    writeln!(out, "sha256: {}", tool.hash_hex())?;
    if let Some(path) = manifest {
        writeln!(
            out,
            "manifest: `{}` agrees with the component",
            path.display()
        )?;
    }
    let caps: Vec<String> = tool
        .required_capabilities()
        .iter()
        .map(|c| c.to_string())
        .collect();
    writeln!(
        out,
        "capabilities: {}",
        if caps.is_empty() {
            "none".to_owned()
        } else {
            caps.join(", ")
        }
    )?;
    for a in &info.actions {
        writeln!(
            out,
            "\naction {} ({:?}): {}",
            a.name, a.effect, a.description
        )?;
        writeln!(out, "  input:  {}", serde_json::to_string(&a.input_schema)?)?;
        writeln!(
            out,
            "  output: {}",
            serde_json::to_string(&a.output_schema)?
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
