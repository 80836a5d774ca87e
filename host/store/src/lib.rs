//! Warden's store: the only crate that speaks SQL.
//!
//! The embedded default is SQLite with tenant isolation made structural: a
//! control database (`control.db`) knows the bootstrap admin key and the list of
//! tenants, and every tenant's governance data lives in its own database file
//! (`tenants/<name>.db`). A query in one tenant's file cannot see another tenant's
//! rows, whatever its `WHERE` clause says.
//!
//! This crate stores and reads; it does not decide. Who may do what, separation
//! of duties and grant validation live in `warden-service`. Every operation that
//! writes more than one row runs in one transaction and appends its own entry to
//! the tenant's `events` history in that same transaction, so a failure leaves
//! nothing half-written.
//!
//! Architecture invariant: no secret is stored, only the SHA-256 of it.

#![forbid(unsafe_code)]

mod approvals;
mod audit;
mod records;
mod tenant;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub use approvals::{ApprovalRecord, VoteOutcome, VoteRecord};
pub use audit::{AuditBatch, AuditRow, Payload};
pub use records::{
    AgentRecord, AgentStatus, DeploymentRecord, EventRecord, GrantRecord, PolicyRecord,
    PrincipalRecord, TokenRecord, ToolVersionRecord,
};
pub use tenant::{NewAgent, NewGrant, NewPrincipal, NewToolVersion, TenantStore};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The named thing does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The write would break a uniqueness rule; nothing was written.
    #[error("{0}")]
    Conflict(String),
    /// Stored data failed an integrity check (for example a blob whose hash
    /// no longer matches).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The data directory could not be used.
    #[error("data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A migration failed.
    #[error("migrating {0}: {1}")]
    Migrate(String, sqlx::migrate::MigrateError),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

static CONTROL_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite/control");
static TENANT_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite/tenant");

/// How long a writer waits for another writer of the same file before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections per database file. SQLite has one writer at a time anyway; a few
/// connections let reads proceed beside it in WAL mode.
const POOL_SIZE: u32 = 4;

/// Tenant names double as file names, so they are kept to a safe alphabet.
pub fn valid_tenant_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.starts_with(|c: char| c.is_ascii_lowercase())
}

/// The SHA-256 of a secret, hex encoded: the only form in which credentials,
/// tokens and keys are stored.
pub fn hash_secret(secret: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The whole store: the control database and one database per tenant.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    control: SqlitePool,
    tenants: Mutex<HashMap<String, TenantStore>>,
}

async fn open_pool(path: &Path, create: bool) -> Result<SqlitePool> {
    let options = SqliteConnectOptions::from_str("sqlite://")?
        .filename(path)
        .create_if_missing(create)
        .journal_mode(SqliteJournalMode::Wal)
        // Governance writes are few and must survive a power loss.
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT);
    Ok(SqlitePoolOptions::new()
        .max_connections(POOL_SIZE)
        .connect_with(options)
        .await?)
}

impl Store {
    /// Opens (creating and migrating as needed) the store in `dir`.
    pub async fn open(dir: &Path) -> Result<Store> {
        let tenants_dir = dir.join("tenants");
        std::fs::create_dir_all(&tenants_dir).map_err(|source| Error::DataDir {
            path: tenants_dir.clone(),
            source,
        })?;
        let control = open_pool(&dir.join("control.db"), true).await?;
        CONTROL_MIGRATIONS
            .run(&control)
            .await
            .map_err(|e| Error::Migrate("control.db".into(), e))?;
        Ok(Store {
            dir: dir.to_owned(),
            control,
            tenants: Mutex::new(HashMap::new()),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores the admin key hash if none exists yet. Returns `true` when this
    /// call installed it (the first start), `false` when one was already there.
    pub async fn install_admin_key(&self, key_hash: &str, now: i64) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO admin (id, key_hash, created_at) VALUES (1, ?, ?) ON CONFLICT (id) DO NOTHING",
        )
        .bind(key_hash)
        .bind(now)
        .execute(&self.control)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Whether `key_hash` is the admin key's hash.
    pub async fn is_admin_key(&self, key_hash: &str) -> Result<bool> {
        let found: Option<i64> = sqlx::query_scalar("SELECT id FROM admin WHERE key_hash = ?")
            .bind(key_hash)
            .fetch_optional(&self.control)
            .await?;
        Ok(found.is_some())
    }

    /// Creates a tenant: its own migrated database file, then its control row.
    pub async fn create_tenant(&self, name: &str, actor: &str, now: i64) -> Result<()> {
        if !valid_tenant_name(name) {
            return Err(Error::Conflict(format!(
                "tenant name `{name}` must be 1-63 lower-case letters, digits or `-`, starting with a letter"
            )));
        }
        if self.tenant_exists(name).await? {
            return Err(Error::Conflict(format!("tenant `{name}` already exists")));
        }
        let path = self.tenant_path(name);
        if path.exists() {
            // A file without a control row is left over from a crash between the
            // two steps below. Keep it aside rather than delete anything.
            let aside = path.with_extension(format!("db.orphan-{now}"));
            tracing::warn!(path = %path.display(), aside = %aside.display(), "moving an orphaned tenant database aside");
            std::fs::rename(&path, &aside).map_err(|source| Error::DataDir {
                path: path.clone(),
                source,
            })?;
        }
        let pool = open_pool(&path, true).await?;
        if let Err(e) = TENANT_MIGRATIONS.run(&pool).await {
            pool.close().await;
            let _ = std::fs::remove_file(&path);
            return Err(Error::Migrate(format!("tenant `{name}`"), e));
        }
        let inserted =
            sqlx::query("INSERT INTO tenants (name, created_by, created_at) VALUES (?, ?, ?)")
                .bind(name)
                .bind(actor)
                .bind(now)
                .execute(&self.control)
                .await;
        if let Err(e) = inserted {
            pool.close().await;
            let _ = std::fs::remove_file(&path);
            return Err(e.into());
        }
        let store = TenantStore::new(name.to_owned(), pool);
        store
            .record_event(now, actor, "tenant.create", name, serde_json::json!({}))
            .await?;
        self.lock().insert(name.to_owned(), store);
        Ok(())
    }

    /// The names of all tenants.
    pub async fn tenant_names(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT name FROM tenants ORDER BY name")
            .fetch_all(&self.control)
            .await?)
    }

    async fn tenant_exists(&self, name: &str) -> Result<bool> {
        let found: Option<String> = sqlx::query_scalar("SELECT name FROM tenants WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.control)
            .await?;
        Ok(found.is_some())
    }

    fn tenant_path(&self, name: &str) -> PathBuf {
        self.dir.join("tenants").join(format!("{name}.db"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, TenantStore>> {
        // A poisoned map only means another thread panicked while inserting a
        // pool handle; the map itself is still consistent.
        self.tenants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The store of one existing tenant. Unknown tenants are `NotFound`; the
    /// file is opened (and migrated forward) on first use.
    pub async fn tenant(&self, name: &str) -> Result<TenantStore> {
        if let Some(t) = self.lock().get(name) {
            return Ok(t.clone());
        }
        if !valid_tenant_name(name) || !self.tenant_exists(name).await? {
            return Err(Error::NotFound(format!("tenant `{name}`")));
        }
        let pool = open_pool(&self.tenant_path(name), false).await?;
        TENANT_MIGRATIONS
            .run(&pool)
            .await
            .map_err(|e| Error::Migrate(format!("tenant `{name}`"), e))?;
        let store = TenantStore::new(name.to_owned(), pool);
        Ok(self.lock().entry(name.to_owned()).or_insert(store).clone())
    }

    /// Closes every pool, flushing the WAL.
    pub async fn close(&self) {
        let pools: Vec<TenantStore> = self.lock().drain().map(|(_, t)| t).collect();
        for t in pools {
            t.close().await;
        }
        self.control.close().await;
    }
}
