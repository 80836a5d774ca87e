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
mod sessions;
mod tenant;
mod usage;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor};

pub use approvals::{ApprovalRecord, VoteOutcome, VoteRecord};
pub use audit::{AuditBatch, AuditRow, AuditSession, Payload};
pub use records::{
    AgentRecord, AgentStatus, DeploymentRecord, EventRecord, GrantRecord, PolicyRecord,
    PrincipalRecord, TokenRecord, ToolVersionRecord,
};
pub use sessions::DataSession;
pub use tenant::{NewAgent, NewGrant, NewPrincipal, NewToolVersion, TenantStore};
pub use usage::{Admission, UsageWindow};

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
    /// The database connection is not safe to serve from (for example its
    /// role bypasses row-level security), or its schema is not migrated.
    #[error("refusing this database: {0}")]
    Refused(String),
}

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

static CONTROL_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite/control");
static TENANT_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite/tenant");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

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

/// The whole store: the control database and one database per tenant
/// (SQLite), or one shared PostgreSQL database with row-level security.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    /// SQLite: `control.db`. PostgreSQL: the one shared pool.
    control: AnyPool,
    postgres: bool,
    tenants: Mutex<HashMap<String, TenantStore>>,
}

/// `path` as the path part of a `sqlite://` URL (sqlx percent-decodes it).
fn sqlite_url(path: &Path, create: bool) -> String {
    let mut url = String::from("sqlite://");
    for b in path.to_string_lossy().bytes() {
        if b.is_ascii_alphanumeric() || b"/._-".contains(&b) {
            url.push(b as char);
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    url.push_str(if create { "?mode=rwc" } else { "?mode=rw" });
    url
}

async fn open_pool(path: &Path, create: bool) -> Result<AnyPool> {
    sqlx::any::install_default_drivers();
    Ok(AnyPoolOptions::new()
        .max_connections(POOL_SIZE)
        .after_connect(|conn, _| {
            Box::pin(async move {
                // WAL lets reads proceed beside the writer; governance writes
                // are few and must survive a power loss (FULL).
                conn.execute(sqlx::AssertSqlSafe(format!(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = {};",
                    BUSY_TIMEOUT.as_millis()
                )))
                .await?;
                Ok(())
            })
        })
        .connect(&sqlite_url(path, create))
        .await?)
}

/// How a PostgreSQL store connects.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// `postgres://…` of the application role (not the tables' owner).
    pub url: String,
    /// Pool size of this node.
    pub max_connections: u32,
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
            postgres: false,
            tenants: Mutex::new(HashMap::new()),
        })
    }

    /// Migrates a PostgreSQL database to this version's schema. Run it as
    /// the role that owns (or will own) the tables, never as the role
    /// Warden serves with.
    pub async fn migrate_postgres(owner_url: &str) -> Result<()> {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .connect(owner_url)
            .await?;
        let done = POSTGRES_MIGRATIONS
            .run(&pool)
            .await
            .map_err(|e| Error::Migrate("postgres".into(), e));
        pool.close().await;
        done
    }

    /// Opens the store on a shared PostgreSQL database. `dir` still holds
    /// this node's files (audit keys, caches). Refuses, before serving
    /// anything, a role that could see past row-level security (superuser,
    /// `BYPASSRLS`, or the owner of Warden's tables) and a schema that is
    /// not migrated to this version.
    pub async fn open_postgres(dir: &Path, options: &PostgresOptions) -> Result<Store> {
        std::fs::create_dir_all(dir).map_err(|source| Error::DataDir {
            path: dir.to_owned(),
            source,
        })?;
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(options.max_connections.max(2))
            .connect(&options.url)
            .await?;
        if let Err(e) = check_postgres_role(&pool).await {
            pool.close().await;
            return Err(e);
        }
        Ok(Store {
            dir: dir.to_owned(),
            control: pool,
            postgres: true,
            tenants: Mutex::new(HashMap::new()),
        })
    }

    /// Whether this store is on PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.postgres
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores the admin key hash if none exists yet. Returns `true` when this
    /// call installed it (the first start), `false` when one was already there.
    pub async fn install_admin_key(&self, key_hash: &str, now: i64) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO admin (id, key_hash, created_at) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING",
        )
        .bind(key_hash)
        .bind(now)
        .execute(&self.control)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Whether `key_hash` is the admin key's hash.
    pub async fn is_admin_key(&self, key_hash: &str) -> Result<bool> {
        let found: Option<i64> = sqlx::query_scalar("SELECT id FROM admin WHERE key_hash = $1")
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
        if self.postgres {
            return self.create_postgres_tenant(name, actor, now).await;
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
            sqlx::query("INSERT INTO tenants (name, created_by, created_at) VALUES ($1, $2, $3)")
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
        let store = TenantStore::sqlite(name.to_owned(), pool);
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
        let found: Option<String> = sqlx::query_scalar("SELECT name FROM tenants WHERE name = $1")
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
        if self.postgres {
            let store = TenantStore::on_postgres(name.to_owned(), self.control.clone());
            return Ok(self.lock().entry(name.to_owned()).or_insert(store).clone());
        }
        let pool = open_pool(&self.tenant_path(name), false).await?;
        TENANT_MIGRATIONS
            .run(&pool)
            .await
            .map_err(|e| Error::Migrate(format!("tenant `{name}`"), e))?;
        let store = TenantStore::sqlite(name.to_owned(), pool);
        Ok(self.lock().entry(name.to_owned()).or_insert(store).clone())
    }

    /// PostgreSQL: the tenant's row and its per-tenant rows (call generation,
    /// audit cursor) and its first history entry, in one transaction scoped
    /// to the new tenant.
    async fn create_postgres_tenant(&self, name: &str, actor: &str, now: i64) -> Result<()> {
        let store = TenantStore::on_postgres(name.to_owned(), self.control.clone());
        let mut tx = store.write().await?;
        let inserted =
            sqlx::query("INSERT INTO tenants (name, created_by, created_at) VALUES ($1, $2, $3)")
                .bind(name)
                .bind(actor)
                .bind(now)
                .execute(&mut *tx)
                .await;
        match inserted {
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                return Err(Error::Conflict(format!("tenant `{name}` already exists")));
            }
            other => other?,
        };
        // The tenant column of these rows defaults to the transaction's
        // `warden.tenant`, which row-level security also checks.
        sqlx::query("INSERT INTO call_generation (id, gen) VALUES (1, 0)")
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO audit_cursor (id, events_seq) VALUES (1, 0)")
            .execute(&mut *tx)
            .await?;
        tenant::event_in(
            &mut tx,
            now,
            actor,
            "tenant.create",
            name,
            serde_json::json!({}),
        )
        .await?;
        tx.commit().await?;
        self.lock().insert(name.to_owned(), store);
        Ok(())
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

/// Refuses a PostgreSQL role that row-level security would not bind, and a
/// schema older or newer than this build's migrations.
async fn check_postgres_role(pool: &AnyPool) -> Result<()> {
    use sqlx::Row;
    let row = sqlx::query(
        "SELECT current_user::text AS who, r.rolsuper AS superuser, r.rolbypassrls AS bypass, \
         (SELECT COUNT(*) FROM pg_tables t \
          WHERE t.schemaname = current_schema() AND t.tableowner = current_user) AS owned \
         FROM pg_roles r WHERE r.rolname = current_user",
    )
    .fetch_one(pool)
    .await?;
    let who: String = row.try_get("who")?;
    let superuser: bool = row.try_get("superuser")?;
    let bypass: bool = row.try_get("bypass")?;
    let owned: i64 = row.try_get("owned")?;
    if superuser || bypass {
        return Err(Error::Refused(format!(
            "role `{who}` is a superuser or has BYPASSRLS, so row-level security would not \
             isolate tenants; connect as the application role (see README, \"PostgreSQL\")"
        )));
    }
    if owned > 0 {
        return Err(Error::Refused(format!(
            "role `{who}` owns {owned} table(s) in the schema; Warden serves as a role that \
             does not own its tables (run migrations as the owner with `warden db migrate`)"
        )));
    }
    let want = POSTGRES_MIGRATIONS
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0);
    let have: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await
            .map_err(|e| {
                Error::Refused(format!(
                    "the schema is not migrated (run `warden db migrate` as the owner): {e}"
                ))
            })?;
    if have != Some(want) {
        return Err(Error::Refused(format!(
            "the schema is at migration {have:?}, this build needs {want}: run `warden db migrate` \
             as the owner with this build"
        )));
    }
    Ok(())
}
