//! Typed grants: what one agent may use when it calls one tool.
//!
//! A [`Grant`] is the only input from which the runtime builds an instance. It is
//! parsed and validated here, before any wasmtime object exists, so an invalid
//! grant never reaches the runtime. Every capability has its own `<Cap>Grant`;
//! an absent capability is `None` and is not linked into the instance.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::limits::Limits;
use crate::{Error, Result};

/// The capabilities a tool can request and an agent can be granted.
///
/// One name everywhere: WIT interface, grant key, runtime module, audit field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    /// Directories through `wasi:filesystem` preopens.
    Fs,
    /// Outgoing HTTP through `wasi:http/outgoing-handler`.
    Http,
    /// Key-value storage through `warden:tool/kv`.
    Kv,
    /// Named secrets through `warden:tool/secrets`.
    Secrets,
    /// Log lines through `warden:tool/log`.
    Log,
}

impl Capability {
    /// All capabilities, in a fixed order.
    pub const ALL: [Capability; 5] = [
        Capability::Fs,
        Capability::Http,
        Capability::Kv,
        Capability::Secrets,
        Capability::Log,
    ];

    /// The grant key and display name of the capability.
    pub fn name(self) -> &'static str {
        match self {
            Capability::Fs => "fs",
            Capability::Http => "http",
            Capability::Kv => "kv",
            Capability::Secrets => "secrets",
            Capability::Log => "log",
        }
    }

    /// Parses a capability name, refusing unknown names.
    pub fn parse(name: &str) -> Result<Capability> {
        Capability::ALL
            .into_iter()
            .find(|c| c.name() == name)
            .ok_or_else(|| Error::UnknownCapability(name.to_owned()))
    }
}

impl std::fmt::Display for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything one call may use. Built from a grant file (`warden run`) or, later,
/// from a stored grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Actions the caller may invoke; `None` means every action of the tool.
    #[serde(default)]
    pub actions: Option<BTreeSet<String>>,
    /// Resource limits of every call under this grant.
    pub limits: Limits,
    #[serde(default)]
    pub fs: Option<FsGrant>,
    #[serde(default)]
    pub http: Option<HttpGrant>,
    #[serde(default)]
    pub kv: Option<KvGrant>,
    #[serde(default)]
    pub secrets: Option<SecretsGrant>,
    #[serde(default)]
    pub log: Option<LogGrant>,
    /// Call-rate limits, quotas and the fuel budget, enforced per agent by the
    /// guardrail checks in front of the runtime, not by the runtime itself.
    #[serde(default)]
    pub rate: Option<RateGrant>,
}

impl Grant {
    /// A grant with the given limits and no capability at all.
    pub fn empty(limits: Limits) -> Grant {
        Grant {
            actions: None,
            limits,
            fs: None,
            http: None,
            kv: None,
            secrets: None,
            log: None,
            rate: None,
        }
    }

    /// Parses and validates a grant from TOML text.
    pub fn from_toml(text: &str) -> Result<Grant> {
        let file: GrantFile =
            toml::from_str(text).map_err(|e| Error::InvalidGrant(e.to_string()))?;
        let grant = Grant {
            actions: file.actions,
            limits: file.limits.unwrap_or_default().resolve(),
            fs: file.fs,
            http: file.http,
            kv: file.kv,
            secrets: file.secrets,
            log: file.log,
            rate: file.rate,
        };
        grant.validate()?;
        Ok(grant)
    }

    /// Checks every invariant a grant must hold before an instance is built from it.
    pub fn validate(&self) -> Result<()> {
        self.limits.validate()?;
        if let Some(fs) = &self.fs {
            fs.validate()?;
        }
        if let Some(http) = &self.http {
            http.validate()?;
        }
        if let Some(kv) = &self.kv {
            kv.validate()?;
        }
        if let Some(secrets) = &self.secrets {
            secrets.validate()?;
        }
        if let Some(log) = &self.log {
            log.validate()?;
        }
        if let Some(rate) = &self.rate {
            rate.validate()?;
        }
        Ok(())
    }

    /// The capabilities this grant includes.
    pub fn capabilities(&self) -> BTreeSet<Capability> {
        present([
            (Capability::Fs, self.fs.is_some()),
            (Capability::Http, self.http.is_some()),
            (Capability::Kv, self.kv.is_some()),
            (Capability::Secrets, self.secrets.is_some()),
            (Capability::Log, self.log.is_some()),
        ])
    }

    /// Whether the grant lets the caller invoke `action`.
    pub fn allows_action(&self, action: &str) -> bool {
        self.actions.as_ref().is_none_or(|a| a.contains(action))
    }
}

/// The capabilities whose flag is set. Grants and manifests both describe
/// capabilities as optional sections; this turns them into one set.
pub(crate) fn present(flags: [(Capability, bool); 5]) -> BTreeSet<Capability> {
    flags
        .into_iter()
        .filter(|(_, on)| *on)
        .map(|(c, _)| c)
        .collect()
}

/// The grant file as written by people: limits may be partly given.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantFile {
    actions: Option<BTreeSet<String>>,
    limits: Option<crate::limits::LimitsFile>,
    fs: Option<FsGrant>,
    http: Option<HttpGrant>,
    kv: Option<KvGrant>,
    secrets: Option<SecretsGrant>,
    log: Option<LogGrant>,
    rate: Option<RateGrant>,
}

/// Access mode of a granted directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DirMode {
    ReadOnly,
    ReadWrite,
}

/// One host directory made visible to the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirGrant {
    /// Directory on the host. Must be absolute.
    pub host: PathBuf,
    /// Absolute path under which the guest sees it, e.g. `/data`.
    pub guest: String,
    pub mode: DirMode,
}

/// The `fs` capability: a set of preopened directories.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsGrant {
    pub dirs: Vec<DirGrant>,
}

impl FsGrant {
    fn validate(&self) -> Result<()> {
        let mut seen = BTreeSet::new();
        for d in &self.dirs {
            if !d.host.is_absolute() {
                return Err(Error::InvalidGrant(format!(
                    "fs: host directory `{}` must be an absolute path",
                    d.host.display()
                )));
            }
            if !d.guest.starts_with('/') || d.guest.split('/').any(|c| c == "..") {
                return Err(Error::InvalidGrant(format!(
                    "fs: guest path `{}` must be absolute and contain no `..`",
                    d.guest
                )));
            }
            if !seen.insert(d.guest.as_str()) {
                return Err(Error::InvalidGrant(format!(
                    "fs: guest path `{}` is granted twice",
                    d.guest
                )));
            }
        }
        Ok(())
    }

    /// The granted directory whose guest path is `guest`, if any.
    pub fn dir(&self, guest: &str) -> Option<&DirGrant> {
        self.dirs.iter().find(|d| d.guest == guest)
    }

    /// A short description of what the grant allows, for denial messages.
    pub fn describe(&self) -> String {
        let dirs: Vec<String> = self
            .dirs
            .iter()
            .map(|d| {
                let mode = match d.mode {
                    DirMode::ReadOnly => "ro",
                    DirMode::ReadWrite => "rw",
                };
                format!("{} ({mode})", d.guest)
            })
            .collect();
        if dirs.is_empty() {
            "no directories".to_owned()
        } else {
            dirs.join(", ")
        }
    }
}

/// One allowed HTTP destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostRule {
    /// Exact host name or IP literal (case-insensitive). No wildcards: a grant
    /// names every host it reaches.
    pub host: String,
    /// Port; `None` means the scheme's default port only.
    #[serde(default)]
    pub port: Option<u16>,
    /// Allowed schemes; default `["https"]`.
    #[serde(default = "default_schemes")]
    pub schemes: Vec<String>,
    /// Allowed methods (upper case); default `["GET"]`.
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
}

fn default_schemes() -> Vec<String> {
    vec!["https".to_owned()]
}

fn default_methods() -> Vec<String> {
    vec!["GET".to_owned()]
}

/// The `http` capability: outgoing requests to named hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpGrant {
    pub allow: Vec<HostRule>,
    /// Largest response body the host delivers to the guest.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
}

/// Default response cap: 1 MiB keeps one call's memory use predictable.
fn default_max_response_bytes() -> u64 {
    1 << 20
}

/// Hard ceiling for a response body: 64 MiB, above any sane tool response.
pub const MAX_RESPONSE_BYTES: u64 = 64 << 20;

impl HttpGrant {
    fn validate(&self) -> Result<()> {
        for r in &self.allow {
            if r.host.is_empty() || r.host.contains(['*', '/', ' ']) {
                return Err(Error::InvalidGrant(format!(
                    "http: host `{}` must be a plain host name or IP (no wildcards, paths or spaces)",
                    r.host
                )));
            }
            for s in &r.schemes {
                if s != "http" && s != "https" {
                    return Err(Error::InvalidGrant(format!(
                        "http: scheme `{s}` for host `{}` is not http or https",
                        r.host
                    )));
                }
            }
            for m in &r.methods {
                if !matches!(
                    m.as_str(),
                    "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS"
                ) {
                    return Err(Error::InvalidGrant(format!(
                        "http: method `{m}` for host `{}` is not a known upper-case HTTP method",
                        r.host
                    )));
                }
            }
        }
        if self.max_response_bytes == 0 || self.max_response_bytes > MAX_RESPONSE_BYTES {
            return Err(Error::InvalidGrant(format!(
                "http: max_response_bytes must be between 1 and {MAX_RESPONSE_BYTES}"
            )));
        }
        Ok(())
    }

    /// A short description of what the grant allows, for denial messages.
    pub fn describe(&self) -> String {
        if self.allow.is_empty() {
            return "no hosts".to_owned();
        }
        self.allow
            .iter()
            .map(|r| {
                let port = r.port.map(|p| format!(":{p}")).unwrap_or_default();
                format!(
                    "{} {}{port} [{}]",
                    r.schemes.join("|"),
                    r.host,
                    r.methods.join(",")
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The `kv` capability: one namespace of a key-value store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvGrant {
    pub namespace: String,
    /// Whether set and delete are allowed.
    #[serde(default = "yes")]
    pub write: bool,
    #[serde(default = "default_max_value_bytes")]
    pub max_value_bytes: u64,
}

fn yes() -> bool {
    true
}

/// Default value cap: 64 KiB; kv is for small state, not blobs.
fn default_max_value_bytes() -> u64 {
    64 << 10
}

/// Hard ceiling for one kv value: 1 MiB.
pub const MAX_KV_VALUE_BYTES: u64 = 1 << 20;

/// Longest kv key accepted, in bytes.
pub const MAX_KV_KEY_BYTES: usize = 512;

impl KvGrant {
    fn validate(&self) -> Result<()> {
        if self.namespace.is_empty()
            || !self
                .namespace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(Error::InvalidGrant(format!(
                "kv: namespace `{}` must be non-empty ASCII letters, digits, `-`, `_` or `.`",
                self.namespace
            )));
        }
        if self.max_value_bytes == 0 || self.max_value_bytes > MAX_KV_VALUE_BYTES {
            return Err(Error::InvalidGrant(format!(
                "kv: max_value_bytes must be between 1 and {MAX_KV_VALUE_BYTES}"
            )));
        }
        Ok(())
    }
}

/// The `secrets` capability: named secrets the tool may read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsGrant {
    pub names: BTreeSet<String>,
}

impl SecretsGrant {
    fn validate(&self) -> Result<()> {
        for n in &self.names {
            if n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(Error::InvalidGrant(format!(
                    "secrets: name `{n}` must be ASCII letters, digits or `_`"
                )));
            }
        }
        Ok(())
    }
}

/// The `log` capability: structured log lines, bounded in total size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogGrant {
    #[serde(default = "default_max_log_bytes")]
    pub max_bytes: u64,
}

/// Default log budget per call: 64 KiB.
fn default_max_log_bytes() -> u64 {
    64 << 10
}

/// Hard ceiling of a call's log budget: 4 MiB.
pub const MAX_LOG_BYTES: u64 = 4 << 20;

impl LogGrant {
    fn validate(&self) -> Result<()> {
        if self.max_bytes > MAX_LOG_BYTES {
            return Err(Error::InvalidGrant(format!(
                "log: max_bytes must be at most {MAX_LOG_BYTES}"
            )));
        }
        Ok(())
    }
}

impl Default for LogGrant {
    fn default() -> Self {
        LogGrant {
            max_bytes: default_max_log_bytes(),
        }
    }
}

/// Call-rate limits and quotas of a grant. Each bound that is given must be
/// at least 1; a missing bound is not limited by the grant (the tenant's
/// guardrail policy may still limit it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateGrant {
    /// Most calls of one action per clock minute.
    #[serde(default)]
    pub per_minute: Option<u32>,
    /// Most calls of one action per clock hour.
    #[serde(default)]
    pub per_hour: Option<u32>,
    /// Most calls of one action per UTC day: the quota.
    #[serde(default)]
    pub per_day: Option<u32>,
    /// Most calls per UTC day, over all actions of the tool, whose effect is
    /// write, destructive or external: the write quota.
    #[serde(default)]
    pub writes_per_day: Option<u32>,
    /// Fuel the agent may burn on this tool per UTC day: the fuel budget. A
    /// call is admitted while the budget is not spent; the call that crosses
    /// it finishes (its own fuel limit still holds).
    #[serde(default)]
    pub fuel_per_day: Option<u64>,
}

impl RateGrant {
    fn validate(&self) -> Result<()> {
        let zero = [
            self.per_minute,
            self.per_hour,
            self.per_day,
            self.writes_per_day,
        ]
        .contains(&Some(0))
            || self.fuel_per_day == Some(0);
        if zero {
            return Err(Error::InvalidGrant(
                "rate: every bound must be at least 1 (revoke the grant to allow no calls)".into(),
            ));
        }
        Ok(())
    }
}
