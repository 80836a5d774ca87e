//! Where an operator command runs: on a local data directory, or against a
//! running `warden serve` over its HTTP API (`--server`).
//!
//! Both paths end in the same `warden-service` operation, which checks the
//! caller's role: locally in this process, remotely in the server. The
//! commands in `ops.rs` call [`Operator`] and never know which one they have.
//!
//! The server and key come from, in order: `--server`/`--key`, then
//! `WARDEN_SERVER`/`WARDEN_KEY`, then the config file (`--config`,
//! `WARDEN_CONFIG`, default `$XDG_CONFIG_HOME/warden/config.toml` or
//! `~/.config/warden/config.toml`). A config file holding a key must not be
//! readable by group or others, as with ssh keys.

use std::path::{Path, PathBuf};
use std::time::Duration;
use warden_service::approvals::{ApprovalView, Vote};

use anyhow::{Context, bail};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use warden_policy::{Grant, Limits};
use warden_service::{
    AccessToken, AgentRecord, Caller, DeploymentRecord, Error, EventRecord, GrantRecord,
    GrantedAction, Inventory, PrincipalRecord, Settings, ToolVersionRecord, Warden,
};

use crate::ops::Common;

/// The config file's contents.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Base URL of a `warden serve`, e.g. `http://127.0.0.1:7070`.
    pub server: Option<String>,
    /// Operator key used when none is given on the command line or in
    /// `WARDEN_KEY`.
    pub key: Option<String>,
}

fn default_config_path() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("warden/config.toml"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/warden/config.toml"))
}

/// Reads the config file: the one named (which must exist), else the default
/// one if it exists.
pub fn read_config(named: Option<&Path>) -> anyhow::Result<ConfigFile> {
    let path = match named {
        Some(p) => p.to_path_buf(),
        None => match default_config_path() {
            Some(p) if p.exists() => p,
            _ => return Ok(ConfigFile::default()),
        },
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading config file `{}`", path.display()))?;
    let config: ConfigFile =
        toml::from_str(&text).with_context(|| format!("config file `{}`", path.display()))?;
    if config.key.is_some() {
        check_private(&path)?;
    }
    Ok(config)
}

#[cfg(unix)]
fn check_private(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        bail!(
            "config file `{}` holds a key but is readable by others (mode {:o}); run: chmod 600 {}",
            path.display(),
            mode & 0o777,
            path.display()
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_: &Path) -> anyhow::Result<()> {
    Ok(())
}

/// Where the command's operations go.
pub enum Operator {
    Local { warden: Box<Warden>, caller: Caller },
    Remote(Remote),
}

/// The HTTP API of a running server.
pub struct Remote {
    http: reqwest::Client,
    base: reqwest::Url,
    key: Option<String>,
}

/// The server and key a command uses, after flags, environment and config.
pub struct Target {
    pub server: Option<String>,
    pub key: Option<String>,
}

impl Target {
    pub fn resolve(common: &Common) -> anyhow::Result<Target> {
        let config = read_config(common.config.as_deref())?;
        Ok(Target {
            server: common.server.clone().or(config.server),
            key: common.key.clone().or(config.key),
        })
    }
}

impl Remote {
    pub fn new(server: &str, key: Option<String>) -> anyhow::Result<Remote> {
        let mut base = reqwest::Url::parse(server).with_context(|| {
            format!("--server `{server}` is not a URL (e.g. http://127.0.0.1:7070)")
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            bail!("--server `{server}` must be an http:// or https:// URL");
        }
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("warden-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        Ok(Remote { http, base, key })
    }

    /// The URL of `v1/<segments...>`, each segment percent-encoded.
    fn url(&self, segments: &[&str]) -> reqwest::Url {
        let mut url = self.base.clone();
        if let Ok(mut p) = url.path_segments_mut() {
            p.pop_if_empty().push("v1").extend(segments);
        }
        url
    }

    /// Sends one request and decodes the answer, mapping the JSON error
    /// envelope back to the service's error kinds (and so to exit codes).
    async fn send<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        url: reqwest::Url,
        body: Option<Value>,
        authenticated: bool,
    ) -> Result<T, Error> {
        let mut req = self.http.request(method, url.clone());
        if authenticated {
            let Some(key) = &self.key else {
                return Err(Error::Unauthenticated(
                    "this command needs an operator key: pass --key, set WARDEN_KEY, or put `key` in the config file".into(),
                ));
            };
            req = req.bearer_auth(key);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| {
            Error::Internal(format!("cannot reach the server at {}: {e}", self.base))
        })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Error::Internal(format!("reading the server's answer: {e}")))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                Error::Internal(format!(
                    "the server's answer to {url} is not what this CLI expects ({e}); are the CLI and server the same version?"
                ))
            });
        }
        let message = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("HTTP {status} from {url}"));
        Err(match status.as_u16() {
            401 => Error::Unauthenticated(message),
            403 => Error::Forbidden(message),
            404 => Error::NotFound(message),
            409 => Error::Conflict(message),
            400..=499 => Error::Invalid(message),
            _ => Error::Internal(message),
        })
    }

    async fn get<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<T, Error> {
        self.send(reqwest::Method::GET, self.url(segments), None, true)
            .await
    }

    async fn post<T: DeserializeOwned>(&self, segments: &[&str], body: Value) -> Result<T, Error> {
        self.send(reqwest::Method::POST, self.url(segments), Some(body), true)
            .await
    }
}

/// A field of a JSON answer.
fn field<T: DeserializeOwned>(mut v: Value, name: &str) -> Result<T, Error> {
    serde_json::from_value(v[name].take())
        .map_err(|e| Error::Internal(format!("the server's answer has no valid `{name}`: {e}")))
}

/// A grant as the operator gave it: grant-file text and/or actions.
pub struct GrantInput {
    pub toml: Option<String>,
    pub actions: Option<Vec<String>>,
}

impl GrantInput {
    /// The grant this input describes (checked the same way the server does).
    pub fn to_grant(&self) -> Result<Grant, Error> {
        let mut grant = match &self.toml {
            Some(t) => Grant::from_toml(t).map_err(|e| Error::Invalid(e.to_string()))?,
            None => Grant::empty(Limits::STANDARD),
        };
        if let Some(a) = &self.actions {
            if grant.actions.is_some() {
                return Err(Error::Invalid(
                    "give the actions either in the grant file or with --actions, not both".into(),
                ));
            }
            grant.actions = Some(a.iter().map(|s| s.trim().to_owned()).collect());
        }
        Ok(grant)
    }
}

impl Operator {
    /// Connects to the server, or opens the local data directory and
    /// authenticates the key. The outer error is a setup problem; the inner
    /// one a refusal.
    pub async fn connect(common: &Common) -> anyhow::Result<Result<Operator, Error>> {
        let target = Target::resolve(common)?;
        if let Some(server) = &target.server {
            return Ok(Ok(Operator::Remote(Remote::new(server, target.key)?)));
        }
        let opened = crate::ops::open(common).await?;
        if let Some(k) = &opened.bootstrap_key {
            crate::ops::announce_bootstrap(k, opened.warden.data_dir());
        }
        let Some(key) = target.key else {
            opened.warden.close().await;
            bail!(
                "this command needs an operator key: pass --key, set WARDEN_KEY, or put `key` in the config file"
            );
        };
        match opened.warden.authenticate(&key).await {
            Ok(caller) => Ok(Ok(Operator::Local {
                warden: Box::new(opened.warden),
                caller,
            })),
            Err(e) => {
                opened.warden.close().await;
                Ok(Err(e))
            }
        }
    }

    pub async fn close(self) {
        if let Operator::Local { warden, .. } = self {
            warden.close().await;
        }
    }

    /// Now, in Unix seconds (the server's clock when local).
    pub fn now(&self) -> i64 {
        match self {
            Operator::Local { warden, .. } => warden.now(),
            Operator::Remote(_) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        }
    }

    pub async fn create_tenant(&self, name: &str) -> Result<(), Error> {
        match self {
            Operator::Local { warden, caller } => warden.create_tenant(caller, name).await,
            Operator::Remote(r) => r
                .post::<Value>(&["tenants"], json!({ "name": name }))
                .await
                .map(drop),
        }
    }

    pub async fn tenants(&self) -> Result<Vec<String>, Error> {
        match self {
            Operator::Local { warden, caller } => warden.tenants(caller).await,
            Operator::Remote(r) => field(r.get(&["tenants"]).await?, "tenants"),
        }
    }

    /// Adds a principal; `tenant` is needed with the admin key.
    pub async fn add_principal(
        &self,
        tenant: Option<&str>,
        name: &str,
        roles: &[String],
    ) -> Result<(PrincipalRecord, String), Error> {
        match self {
            Operator::Local { warden, caller } => {
                let tenant = match (tenant, caller) {
                    (Some(t), _) => t.to_owned(),
                    (None, Caller::Principal(p)) => p.tenant.clone(),
                    (None, Caller::Admin) => {
                        return Err(Error::Invalid(
                            "with the admin key, name the tenant with --tenant".into(),
                        ));
                    }
                };
                warden.add_principal(caller, &tenant, name, roles).await
            }
            Operator::Remote(r) => {
                let v: Value = r
                    .post(
                        &["principals"],
                        json!({ "name": name, "roles": roles, "tenant": tenant }),
                    )
                    .await?;
                Ok((field(v.clone(), "principal")?, field(v, "api_key")?))
            }
        }
    }

    pub async fn settings(&self) -> Result<Settings, Error> {
        match self {
            Operator::Local { warden, caller } => warden.settings(caller).await,
            Operator::Remote(r) => r.get(&["settings"]).await,
        }
    }

    pub async fn set_setting(&self, key: &str, value: &str) -> Result<(), Error> {
        match self {
            Operator::Local { warden, caller } => warden.set_setting(caller, key, value).await,
            Operator::Remote(r) => r
                .send::<Value>(
                    reqwest::Method::PUT,
                    r.url(&["settings", key]),
                    Some(json!({ "value": value })),
                    true,
                )
                .await
                .map(drop),
        }
    }

    pub async fn publish_tool(
        &self,
        component: &[u8],
        manifest: &str,
    ) -> Result<ToolVersionRecord, Error> {
        match self {
            Operator::Local { warden, caller } => {
                warden.publish_tool(caller, component, manifest).await
            }
            Operator::Remote(r) => {
                use base64::Engine as _;
                let b64 = base64::engine::general_purpose::STANDARD.encode(component);
                r.post(
                    &["tools"],
                    json!({ "manifest": manifest, "component_base64": b64 }),
                )
                .await
            }
        }
    }

    pub async fn deploy_tool(&self, tool: &str, version: &str) -> Result<DeploymentRecord, Error> {
        match self {
            Operator::Local { warden, caller } => warden.deploy_tool(caller, tool, version).await,
            Operator::Remote(r) => {
                r.post(&["tools", tool, "deploy"], json!({ "version": version }))
                    .await
            }
        }
    }

    pub async fn rollback_tool(
        &self,
        tool: &str,
        to: Option<&str>,
    ) -> Result<DeploymentRecord, Error> {
        match self {
            Operator::Local { warden, caller } => warden.rollback_tool(caller, tool, to).await,
            Operator::Remote(r) => {
                r.post(&["tools", tool, "rollback"], json!({ "to": to }))
                    .await
            }
        }
    }

    pub async fn create_agent(
        &self,
        name: &str,
        purpose: &str,
        owner: Option<&str>,
        renew_days: Option<u32>,
    ) -> Result<AgentRecord, Error> {
        match self {
            Operator::Local { warden, caller } => {
                warden
                    .create_agent(caller, name, purpose, owner, renew_days)
                    .await
            }
            Operator::Remote(r) => {
                r.post(
                    &["agents"],
                    json!({ "name": name, "purpose": purpose, "owner": owner, "renew_days": renew_days }),
                )
                .await
            }
        }
    }

    /// `verb` is activate, suspend, renew or decommission.
    pub async fn change_agent(
        &self,
        name: &str,
        verb: &str,
        reason: Option<&str>,
        days: Option<u32>,
    ) -> Result<AgentRecord, Error> {
        match self {
            Operator::Local { warden, caller } => match verb {
                "activate" => warden.activate_agent(caller, name).await,
                "suspend" => {
                    warden
                        .suspend_agent(caller, name, reason.unwrap_or("suspended by an operator"))
                        .await
                }
                "renew" => warden.renew_agent(caller, name, days.unwrap_or(90)).await,
                "decommission" => {
                    warden
                        .decommission_agent(
                            caller,
                            name,
                            reason.unwrap_or("decommissioned by an operator"),
                        )
                        .await
                }
                other => Err(Error::Invalid(format!("no agent operation `{other}`"))),
            },
            Operator::Remote(r) => {
                let mut body = serde_json::Map::new();
                if let Some(reason) = reason {
                    body.insert("reason".into(), json!(reason));
                }
                if let Some(days) = days {
                    body.insert("days".into(), json!(days));
                }
                r.post(&["agents", name, verb], Value::Object(body)).await
            }
        }
    }

    pub async fn issue_credential(&self, agent: &str) -> Result<String, Error> {
        match self {
            Operator::Local { warden, caller } => warden.issue_credential(caller, agent).await,
            Operator::Remote(r) => field(
                r.post(&["agents", agent, "credentials"], json!({})).await?,
                "credential",
            ),
        }
    }

    pub async fn add_grant(
        &self,
        agent: &str,
        tool: &str,
        grant: &GrantInput,
        expires_in_days: Option<u32>,
    ) -> Result<GrantRecord, Error> {
        match self {
            Operator::Local { warden, caller } => {
                let g = grant.to_grant()?;
                warden
                    .add_grant(caller, agent, tool, &g, expires_in_days)
                    .await
            }
            Operator::Remote(r) => {
                r.post(
                    &["grants"],
                    json!({
                        "agent": agent,
                        "tool": tool,
                        "grant_toml": grant.toml,
                        "actions": grant.actions,
                        "expires_in_days": expires_in_days,
                    }),
                )
                .await
            }
        }
    }

    pub async fn revoke_grant(&self, agent: &str, tool: &str) -> Result<(), Error> {
        match self {
            Operator::Local { warden, caller } => warden.revoke_grant(caller, agent, tool).await,
            Operator::Remote(r) => r
                .send::<Value>(
                    reqwest::Method::DELETE,
                    r.url(&["grants", agent, tool]),
                    None,
                    true,
                )
                .await
                .map(drop),
        }
    }

    pub async fn grants(
        &self,
        agent: Option<&str>,
        history: bool,
    ) -> Result<Vec<GrantRecord>, Error> {
        match self {
            Operator::Local { warden, caller } => warden.grants(caller, agent, history).await,
            Operator::Remote(r) => {
                let mut url = r.url(&["grants"]);
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(a) = agent {
                        q.append_pair("agent", a);
                    }
                    q.append_pair("history", if history { "true" } else { "false" });
                }
                field(
                    r.send(reqwest::Method::GET, url, None, true).await?,
                    "grants",
                )
            }
        }
    }

    pub async fn inventory(&self) -> Result<Inventory, Error> {
        match self {
            Operator::Local { warden, caller } => warden.inventory(caller).await,
            Operator::Remote(r) => r.get(&["inventory"]).await,
        }
    }

    pub async fn events(&self) -> Result<Vec<EventRecord>, Error> {
        match self {
            Operator::Local { warden, caller } => warden.events(caller).await,
            Operator::Remote(r) => field(r.get(&["history"]).await?, "events"),
        }
    }
}

// ---- the audit trail ---------------------------------------------------------------------

impl Operator {
    pub async fn audit_export(&self) -> Result<warden_service::Bundle, Error> {
        match self {
            Operator::Local { warden, caller } => warden.audit_export(caller).await,
            Operator::Remote(r) => r.get(&["audit", "export"]).await,
        }
    }

    pub async fn audit_checkpoint(&self) -> Result<String, Error> {
        match self {
            Operator::Local { warden, caller } => warden.audit_checkpoint(caller).await,
            Operator::Remote(r) => field(r.get(&["audit", "checkpoint"]).await?, "checkpoint"),
        }
    }

    pub async fn audit_entries(
        &self,
        from: u64,
        limit: u64,
    ) -> Result<Vec<warden_service::AuditRecord>, Error> {
        match self {
            Operator::Local { warden, caller } => warden.audit_entries(caller, from, limit).await,
            Operator::Remote(r) => {
                let mut url = r.url(&["audit", "entries"]);
                url.query_pairs_mut()
                    .append_pair("from", &from.to_string())
                    .append_pair("limit", &limit.to_string());
                field(
                    r.send(reqwest::Method::GET, url, None, true).await?,
                    "entries",
                )
            }
        }
    }

    pub async fn audit_inclusion(
        &self,
        seq: u64,
        size: Option<u64>,
    ) -> Result<warden_service::InclusionProof, Error> {
        match self {
            Operator::Local { warden, caller } => warden.audit_inclusion(caller, seq, size).await,
            Operator::Remote(r) => {
                let mut url = r.url(&["audit", "proof", "inclusion"]);
                url.query_pairs_mut().append_pair("seq", &seq.to_string());
                if let Some(s) = size {
                    url.query_pairs_mut().append_pair("size", &s.to_string());
                }
                r.send(reqwest::Method::GET, url, None, true).await
            }
        }
    }

    pub async fn audit_consistency(
        &self,
        old: u64,
        new: Option<u64>,
    ) -> Result<warden_service::ConsistencyProof, Error> {
        match self {
            Operator::Local { warden, caller } => warden.audit_consistency(caller, old, new).await,
            Operator::Remote(r) => {
                let mut url = r.url(&["audit", "proof", "consistency"]);
                url.query_pairs_mut().append_pair("old", &old.to_string());
                if let Some(n) = new {
                    url.query_pairs_mut().append_pair("new", &n.to_string());
                }
                r.send(reqwest::Method::GET, url, None, true).await
            }
        }
    }

    pub async fn audit_replay(
        &self,
        invocation: &str,
        component: Option<&str>,
    ) -> Result<warden_service::ReplayResult, Error> {
        match self {
            Operator::Local { warden, caller } => {
                warden.audit_replay(caller, invocation, component).await
            }
            Operator::Remote(r) => {
                r.post(
                    &["audit", "replay"],
                    json!({ "invocation": invocation, "component": component }),
                )
                .await
            }
        }
    }

    pub async fn set_policy(&self, text: &str) -> Result<warden_service::PolicyRecord, Error> {
        match self {
            Operator::Local { warden, caller } => warden.set_policy(caller, text).await,
            Operator::Remote(r) => {
                r.send(
                    reqwest::Method::PUT,
                    r.url(&["policy"]),
                    Some(json!({ "text": text })),
                    true,
                )
                .await
            }
        }
    }

    pub async fn policy(
        &self,
        version: Option<i64>,
    ) -> Result<Option<warden_service::PolicyRecord>, Error> {
        match self {
            Operator::Local { warden, caller } => warden.policy(caller, version).await,
            Operator::Remote(r) => {
                let v: Value = match version {
                    Some(v) => r.get(&["policy", "versions", &v.to_string()]).await?,
                    None => r.get(&["policy"]).await?,
                };
                field(v, "policy")
            }
        }
    }

    pub async fn test_policy(
        &self,
        test: &warden_service::PolicyTest,
    ) -> Result<warden_service::PolicyExplanation, Error> {
        match self {
            Operator::Local { warden, caller } => warden.test_policy(caller, test).await,
            Operator::Remote(r) => {
                r.post(
                    &["policy", "test"],
                    serde_json::to_value(test).map_err(|e| Error::Internal(e.to_string()))?,
                )
                .await
            }
        }
    }

    pub async fn approvals(&self, all: bool) -> Result<Vec<ApprovalView>, Error> {
        match self {
            Operator::Local { warden, caller } => warden.pending_approvals(caller, all).await,
            Operator::Remote(r) => {
                let mut url = r.url(&["approvals"]);
                if all {
                    url.set_query(Some("all=true"));
                }
                field(
                    r.send(reqwest::Method::GET, url, None, true).await?,
                    "approvals",
                )
            }
        }
    }

    pub async fn approval(&self, id: &str) -> Result<ApprovalView, Error> {
        match self {
            Operator::Local { warden, caller } => warden.approval(caller, id).await,
            Operator::Remote(r) => r.get(&["approvals", id]).await,
        }
    }

    pub async fn decide_approval(
        &self,
        id: &str,
        vote: Vote,
        comment: &str,
    ) -> Result<ApprovalView, Error> {
        match self {
            Operator::Local { warden, caller } => {
                warden.decide_approval(caller, id, vote, comment).await
            }
            Operator::Remote(r) => {
                let verb = match vote {
                    Vote::Approve => "approve",
                    Vote::Reject => "reject",
                };
                r.post(&["approvals", id, verb], json!({ "comment": comment }))
                    .await
            }
        }
    }

    pub async fn audit_rotate(&self, reason: &str) -> Result<u64, Error> {
        match self {
            Operator::Local { warden, caller } => warden.audit_rotate(caller, reason).await,
            Operator::Remote(r) => field(
                r.post(&["audit", "rotate-key"], json!({ "reason": reason }))
                    .await?,
                "seq",
            ),
        }
    }
}

// ---- the agent side over HTTP ---------------------------------------------------------

impl Remote {
    pub async fn token(
        &self,
        credential: &str,
        ttl_secs: Option<u64>,
        tools: Option<Vec<String>>,
    ) -> Result<AccessToken, Error> {
        self.send(
            reqwest::Method::POST,
            self.url(&["token"]),
            Some(json!({ "credential": credential, "ttl_secs": ttl_secs, "tools": tools })),
            false,
        )
        .await
    }

    pub async fn actions(&self) -> Result<Vec<GrantedAction>, Error> {
        field(self.get(&["actions"]).await?, "actions")
    }

    /// Cancels the agent's own pending approval.
    pub async fn cancel_approval(&self, id: &str) -> Result<ApprovalView, Error> {
        self.post(&["approvals", id, "cancel"], json!({})).await
    }

    /// The agent's own approval, waiting up to `wait` seconds for its end.
    pub async fn agent_approval(&self, id: &str, wait: u64) -> Result<ApprovalView, Error> {
        let mut url = self.url(&["approvals", id]);
        url.set_query(Some(&format!("wait={wait}")));
        self.send(reqwest::Method::GET, url, None, true).await
    }

    /// One synchronous call; the answer is the report as JSON.
    pub async fn call(&self, tool: &str, action: &str, input: Value) -> Result<Value, Error> {
        self.post(
            &["invoke"],
            json!({ "tool": tool, "action": action, "input": input, "wait_ms": 600_000 }),
        )
        .await
    }
}
