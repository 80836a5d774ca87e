//! Warden's service layer: who is asking, what they may do, and the path of one
//! agent call from token to report.
//!
//! It joins the three lower crates and adds the rules between them:
//! authentication (admin key, principal API keys, agent credentials and access
//! tokens), the role table and separation of duties from `warden-policy`, the
//! tool registry checks (component against manifest) and grant checks (grant
//! within manifest), and finally building every call's instance from the stored
//! grant alone. The CLI and the RPC layer are thin shells over [`Warden`].
//!
//! Architecture invariants: every operator operation checks the caller's role
//! before touching the store; every call resolves its grant from the store on
//! that call (revocation is immediate: the call cache is valid for one call
//! generation only, see `cache.rs`); any error on the call path denies.

#![forbid(unsafe_code)]

pub mod approvals;
mod audit;
mod cache;
mod calls;
mod counters;
mod governance;
mod keys;
mod policies;
mod secrets;
mod sessions;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use warden_policy::Roles;
use warden_runtime::{MemoryKv, Runtime, RuntimeConfig, Tool};
use warden_store::Store;

pub use audit::{AuditLog, ConsistencyProof, InclusionProof, ReplayResult};
pub use calls::{AccessToken, AgentSession, GrantedAction};
pub use governance::{AgentSummary, Inventory, Settings, ToolSummary};
pub use keys::KeyKind;
pub use policies::{Faults, PolicyExplanation, PolicyTest};
pub use warden_audit::{Bundle, Record as AuditRecord};
pub use warden_policy::cedar::{CallFacts, Usage, Verdict};
pub use warden_store::{
    AgentRecord, AgentStatus, DeploymentRecord, EventRecord, GrantRecord, PolicyRecord,
    PrincipalRecord, ToolVersionRecord,
};

/// Why an operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No valid credential: unknown, expired or revoked key or token.
    #[error("not authenticated: {0}")]
    Unauthenticated(String),
    /// Authenticated, but this caller may not do this (role, separation of
    /// duties, tenant, agent state).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The request itself is wrong: bad manifest, grant, component or argument.
    #[error("{0}")]
    Invalid(String),
    /// The named thing does not exist (in the caller's tenant).
    #[error("{0} not found")]
    NotFound(String),
    /// The request conflicts with what exists (duplicate name or version).
    #[error("{0}")]
    Conflict(String),
    /// The store or the runtime failed. The text is for logs, not for callers.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<warden_store::Error> for Error {
    fn from(e: warden_store::Error) -> Error {
        match e {
            warden_store::Error::NotFound(what) => Error::NotFound(what),
            warden_store::Error::Conflict(what) => Error::Conflict(what),
            other => Error::Internal(other.to_string()),
        }
    }
}

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The time source: Unix seconds. Tests substitute their own.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    })
}

/// How a [`Warden`] is set up.
#[derive(Clone)]
pub struct Config {
    /// Where the databases live (`control.db`, `tenants/<name>.db`) and the
    /// per-tenant secret directories (`secrets/<tenant>/<NAME>`).
    pub data_dir: PathBuf,
    /// Compiled-component cache; `None` compiles on every start.
    pub cache_dir: Option<PathBuf>,
    /// Most wasm calls running at once.
    pub max_concurrent: u32,
    /// Lifetime of an access token when the agent asks for none: one hour.
    pub token_ttl: Duration,
    /// The time source.
    pub clock: Clock,
    /// The environment label policies see as `context.env` (`production`
    /// unless set).
    pub env: String,
    /// A shared PostgreSQL database instead of the SQLite files in
    /// `data_dir` (which then keeps only this node's files: audit keys,
    /// secrets, caches).
    pub database: Option<warden_store::PostgresOptions>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field("cache_dir", &self.cache_dir)
            .field("max_concurrent", &self.max_concurrent)
            .field("token_ttl", &self.token_ttl)
            .field("env", &self.env)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Defaults for a data directory: system clock, one-hour tokens, 64 calls.
    pub fn new(data_dir: PathBuf) -> Config {
        Config {
            data_dir,
            cache_dir: None,
            max_concurrent: 64,
            token_ttl: DEFAULT_TOKEN_TTL,
            clock: system_clock(),
            env: "production".into(),
            database: None,
        }
    }
}

/// Default lifetime of an access token.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Longest lifetime an agent may ask for: a token is meant to be short-lived;
/// the long-lived secret is the credential, which can be revoked.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// Who is calling an operator operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The bootstrap admin: creates tenants and each tenant's first deployer.
    Admin,
    /// A principal of one tenant.
    Principal(Principal),
}

/// An authenticated principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: String,
    pub id: String,
    pub name: String,
    pub roles: Roles,
}

impl Caller {
    /// How the caller appears in history (`admin` or `principal:<name>`).
    pub fn actor(&self) -> String {
        match self {
            Caller::Admin => "admin".into(),
            Caller::Principal(p) => p.actor(),
        }
    }
}

impl Principal {
    /// How the principal appears in history: `principal:<name>`. Names are
    /// unique in a tenant and never change, so this also identifies who
    /// published or deployed for separation of duties.
    pub fn actor(&self) -> String {
        format!("principal:{}", self.name)
    }
}

/// The host: store, runtime, and the loaded components.
pub struct Warden {
    store: Store,
    runtime: Runtime,
    clock: Clock,
    token_ttl: Duration,
    data_dir: PathBuf,
    /// Loaded components by SHA-256: the registry is content-addressed, so a
    /// hash names exactly one component forever.
    tools: Mutex<HashMap<String, Arc<Tool>>>,
    /// Key-value data per tenant. In memory for now (see ARCHITECTURE.md).
    kv: Mutex<HashMap<String, Arc<MemoryKv>>>,
    /// Sessions and resolved calls, valid for one call generation.
    cache: cache::CallCache,
    /// The audit writers.
    audit: Arc<audit::AuditLog>,
    /// Approval wake-ups, metrics and the webhook client.
    hub: Arc<approvals::Hub>,
    /// Rate, quota and fuel-budget counters.
    counters: counters::Counters,
    /// Data classification per agent session.
    sessions: sessions::Sessions,
    /// Compiled policy sets per tenant.
    policy_cache: policies::PolicyCache,
    /// Injectable failures (tests).
    faults: policies::Faults,
    /// The environment label policies see (`context.env`).
    env: String,
    /// This process's id among the nodes sharing a database: owner of the
    /// in-flight holds it keeps (see `resume_approvals`).
    node: Arc<str>,
}

impl std::fmt::Debug for Warden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Warden")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

/// What opening a data directory produced.
#[derive(Debug)]
pub struct Opened {
    pub warden: Warden,
    /// The admin key, present only on the very first start: it is shown once
    /// and stored only as a hash.
    pub bootstrap_key: Option<String>,
}

impl Warden {
    /// Opens (creating and migrating on first use) the data directory. On the
    /// first start this also creates the one-time admin key.
    pub async fn open(config: Config) -> Result<Opened> {
        let store = match &config.database {
            None => Store::open(&config.data_dir).await?,
            Some(pg) => Store::open_postgres(&config.data_dir, pg).await?,
        };
        let runtime = Runtime::new(RuntimeConfig {
            max_concurrent: config.max_concurrent,
            cache_dir: config.cache_dir.clone(),
        })
        .map_err(|e| Error::Internal(format!("starting the runtime: {e}")))?;
        let now = (config.clock)();
        let key = keys::generate(KeyKind::Admin, None)?;
        let bootstrap_key = store
            .install_admin_key(&warden_store::hash_secret(&key), now)
            .await?
            .then_some(key);
        let audit_log = audit::AuditLog::new(&config.data_dir);
        Ok(Opened {
            warden: Warden {
                store,
                runtime,
                clock: config.clock,
                token_ttl: config.token_ttl,
                data_dir: config.data_dir,
                tools: Mutex::new(HashMap::new()),
                kv: Mutex::new(HashMap::new()),
                cache: cache::CallCache::default(),
                audit: Arc::new(audit_log),
                hub: Arc::default(),
                counters: counters::Counters::default(),
                sessions: sessions::Sessions::default(),
                policy_cache: policies::PolicyCache::default(),
                faults: policies::Faults::default(),
                env: config.env,
                node: approvals::new_node_id()?.into(),
            },
            bootstrap_key,
        })
    }

    /// The current time in Unix seconds.
    pub fn now(&self) -> i64 {
        (self.clock)()
    }

    /// Wasm calls running right now.
    pub fn calls_in_flight(&self) -> usize {
        self.runtime.in_flight()
    }

    /// Whether the store answers (readiness).
    pub async fn ready(&self) -> Result<()> {
        self.store.tenant_names().await?;
        Ok(())
    }

    /// The data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// This process's node id (in approvals' `owner_node`).
    pub fn node_id(&self) -> &str {
        &self.node
    }

    /// Whether the store is a shared PostgreSQL database.
    pub fn shared_database(&self) -> bool {
        self.store.is_postgres()
    }

    /// Closes the databases cleanly.
    pub async fn close(&self) {
        self.audit.flush(&self.store).await;
        self.store.close().await;
    }

    /// Authenticates an operator key: the admin key or a principal's API key.
    pub async fn authenticate(&self, key: &str) -> Result<Caller> {
        let unknown = || Error::Unauthenticated("unknown or revoked key".into());
        match keys::parse(key) {
            Some((KeyKind::Admin, None)) => {
                if self
                    .store
                    .is_admin_key(&warden_store::hash_secret(key))
                    .await?
                {
                    Ok(Caller::Admin)
                } else {
                    Err(unknown())
                }
            }
            Some((KeyKind::ApiKey, Some(tenant))) => {
                let store = self.store.tenant(tenant).await.map_err(|_| unknown())?;
                let p = store
                    .principal_by_key(&warden_store::hash_secret(key))
                    .await?
                    .ok_or_else(unknown)?;
                let roles = Roles::parse(&p.roles)
                    .map_err(|e| Error::Internal(format!("stored roles of `{}`: {e}", p.name)))?;
                Ok(Caller::Principal(Principal {
                    tenant: tenant.to_owned(),
                    id: p.id,
                    name: p.name,
                    roles,
                }))
            }
            Some(_) => Err(Error::Unauthenticated(
                "this is not an operator key (agents exchange their credential for an access token)"
                    .into(),
            )),
            None => Err(Error::Unauthenticated("malformed key".into())),
        }
    }

    fn kv_of(&self, tenant: &str) -> Arc<MemoryKv> {
        let mut map = self
            .kv
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(tenant.to_owned())
            .or_insert_with(|| Arc::new(MemoryKv::default()))
            .clone()
    }
}
