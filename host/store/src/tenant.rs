//! One tenant's database: principals, agents, credentials, tools, deployments,
//! grants and the governance history.
//!
//! Every write that touches more than one row runs in one `BEGIN IMMEDIATE`
//! transaction (the writer lock is taken up front, so two writers queue instead
//! of failing on a lock upgrade) and appends its `events` entry in the same
//! transaction.

use std::sync::Arc;

use sqlx::any::AnyRow;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Row, Transaction};

use crate::records::{
    AgentRecord, AgentStatus, DeploymentRecord, EventRecord, GrantRecord, PolicyRecord,
    PrincipalRecord, TokenRecord, ToolVersionRecord,
};
use crate::{Error, Result};

/// Handle on one tenant's data. Cheap to clone.
///
/// On SQLite the pool is the tenant's own database file. On PostgreSQL it is
/// the shared pool, and every statement runs inside a transaction that first
/// sets `warden.tenant` (transaction-local) to this tenant: row-level
/// security then shows and accepts only this tenant's rows.
#[derive(Debug, Clone)]
pub struct TenantStore {
    name: String,
    pub(crate) pool: AnyPool,
    scope: Scope,
}

/// How a tenant's transactions begin.
#[derive(Debug, Clone)]
enum Scope {
    Sqlite,
    /// The two `BEGIN …` texts, with the tenant's name (a validated
    /// `[a-z][a-z0-9-]*`, so safe inside a quoted literal) set for the
    /// transaction only.
    Postgres {
        read: Arc<str>,
        write: Arc<str>,
    },
}

/// A connection for reading: on PostgreSQL a transaction scoped to the
/// tenant (rolled back when dropped; it wrote nothing), on SQLite a plain
/// pooled connection to the tenant's file.
pub(crate) enum Reader {
    Conn(PoolConnection<Any>),
    Tx(Transaction<'static, Any>),
}

impl std::ops::Deref for Reader {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        match self {
            Reader::Conn(c) => c,
            Reader::Tx(t) => t,
        }
    }
}

impl std::ops::DerefMut for Reader {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self {
            Reader::Conn(c) => c,
            Reader::Tx(t) => t,
        }
    }
}

/// A principal to add.
#[derive(Debug, Clone)]
pub struct NewPrincipal<'a> {
    pub name: &'a str,
    pub roles: &'a [String],
    pub key_hash: &'a str,
    pub actor: &'a str,
    pub now: i64,
}

/// An agent to draft.
#[derive(Debug, Clone)]
pub struct NewAgent<'a> {
    pub name: &'a str,
    pub owner_id: &'a str,
    pub purpose: &'a str,
    pub renew_by: i64,
    pub actor: &'a str,
    pub now: i64,
}

/// A tool version to publish.
#[derive(Debug, Clone)]
pub struct NewToolVersion<'a> {
    pub tool: &'a str,
    pub version: &'a str,
    pub sha256: &'a str,
    pub bytes: &'a [u8],
    pub manifest_json: &'a str,
    pub actor: &'a str,
    pub now: i64,
}

/// A grant to store.
#[derive(Debug, Clone)]
pub struct NewGrant<'a> {
    pub agent_id: &'a str,
    pub tool: &'a str,
    pub spec_json: &'a str,
    pub expires_at: i64,
    pub actor: &'a str,
    pub now: i64,
}

fn new_id(prefix: &str) -> Result<String> {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::Corrupt(format!("no randomness for an id: {e}")))?;
    Ok(format!("{prefix}_{}", hex::encode(bytes)))
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

pub(crate) async fn event_in(
    tx: &mut Transaction<'static, Any>,
    now: i64,
    actor: &str,
    action: &str,
    subject: &str,
    detail: serde_json::Value,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO events (at, actor, action, subject, detail) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(now)
    .bind(actor)
    .bind(action)
    .bind(subject)
    .bind(detail.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One `events` row.
pub(crate) fn event_row(r: &AnyRow) -> Result<EventRecord> {
    let detail: String = r.try_get("detail")?;
    Ok(EventRecord {
        seq: r.try_get("seq")?,
        at: r.try_get("at")?,
        actor: r.try_get("actor")?,
        action: r.try_get("action")?,
        subject: r.try_get("subject")?,
        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
    })
}

fn principal(row: &AnyRow) -> Result<PrincipalRecord> {
    let roles: String = row.try_get("roles")?;
    Ok(PrincipalRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        roles: roles
            .split(',')
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .collect(),
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
    })
}

/// `SELECT` of agents with their owner's name; callers append the rest.
macro_rules! select_agents {
    () => {
        "SELECT a.id, a.name, a.owner_id, p.name AS owner, a.purpose, a.status, \
         a.renew_by, a.last_active_at, a.created_by, a.created_at, a.status_changed_at \
         FROM agents a JOIN principals p ON p.id = a.owner_id"
    };
}

fn agent(row: &AnyRow) -> Result<AgentRecord> {
    let status: String = row.try_get("status")?;
    Ok(AgentRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        owner_id: row.try_get("owner_id")?,
        owner: row.try_get("owner")?,
        purpose: row.try_get("purpose")?,
        status: AgentStatus::parse(&status),
        renew_by: row.try_get("renew_by")?,
        last_active_at: row.try_get("last_active_at")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        status_changed_at: row.try_get("status_changed_at")?,
    })
}

fn tool_version(row: &AnyRow) -> Result<ToolVersionRecord> {
    Ok(ToolVersionRecord {
        tool: row.try_get("tool")?,
        version: row.try_get("version")?,
        sha256: row.try_get("sha256")?,
        manifest: row.try_get("manifest")?,
        published_by: row.try_get("published_by")?,
        published_at: row.try_get("published_at")?,
    })
}

fn deployment(row: &AnyRow) -> Result<DeploymentRecord> {
    Ok(DeploymentRecord {
        seq: row.try_get("seq")?,
        tool: row.try_get("tool")?,
        version: row.try_get("version")?,
        kind: row.try_get("kind")?,
        deployed_by: row.try_get("deployed_by")?,
        deployed_at: row.try_get("deployed_at")?,
    })
}

/// `SELECT` of grants with their agent's name; callers append the rest.
macro_rules! select_grants {
    () => {
        "SELECT g.id, g.agent_id, a.name AS agent, g.tool, g.spec, g.expires_at, \
         g.created_by, g.created_at, g.revoked_at, g.revoked_by \
         FROM grants g JOIN agents a ON a.id = g.agent_id"
    };
}

fn grant(row: &AnyRow) -> Result<GrantRecord> {
    Ok(GrantRecord {
        id: row.try_get("id")?,
        agent_id: row.try_get("agent_id")?,
        agent: row.try_get("agent")?,
        tool: row.try_get("tool")?,
        spec: row.try_get("spec")?,
        expires_at: row.try_get("expires_at")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
        revoked_by: row.try_get("revoked_by")?,
    })
}

impl TenantStore {
    /// A tenant in its own SQLite file.
    pub(crate) fn sqlite(name: String, pool: AnyPool) -> TenantStore {
        TenantStore {
            name,
            pool,
            scope: Scope::Sqlite,
        }
    }

    /// A tenant in the shared PostgreSQL database. `name` must be a valid
    /// tenant name (checked by the caller): it is inlined in the `BEGIN`.
    pub(crate) fn on_postgres(name: String, pool: AnyPool) -> TenantStore {
        debug_assert!(crate::valid_tenant_name(&name));
        let set = format!("SELECT set_config('warden.tenant', '{name}', true)");
        // Writers of one tenant queue on one advisory lock, taken before
        // anything is read: the same one-writer-per-tenant rule SQLite's
        // `BEGIN IMMEDIATE` gives, across every node sharing the database.
        let write = format!(
            "BEGIN; {set}, pg_advisory_xact_lock(hashtextextended('warden.tenant:{name}', 0))"
        );
        TenantStore {
            scope: Scope::Postgres {
                read: format!("BEGIN READ ONLY; {set}").into(),
                write: write.into(),
            },
            name,
            pool,
        }
    }

    /// Whether this tenant lives in PostgreSQL (for the few statements whose
    /// dialects differ).
    pub(crate) fn postgres(&self) -> bool {
        matches!(self.scope, Scope::Postgres { .. })
    }

    /// A connection scoped to this tenant for reading.
    pub(crate) async fn read(&self) -> Result<Reader> {
        Ok(match &self.scope {
            Scope::Sqlite => Reader::Conn(self.pool.acquire().await?),
            Scope::Postgres { read, .. } => Reader::Tx(
                self.pool
                    .begin_with(sqlx::AssertSqlSafe(read.to_string()))
                    .await?,
            ),
        })
    }

    /// Runs one writing statement in its own write transaction.
    pub(crate) async fn execute_one(
        &self,
        query: sqlx::query::Query<'_, Any, sqlx::any::AnyArguments>,
    ) -> Result<u64> {
        let mut tx = self.write().await?;
        let n = query.execute(&mut *tx).await?.rows_affected();
        tx.commit().await?;
        Ok(n)
    }

    /// The tenant's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Closes the tenant's own pool (SQLite); the shared PostgreSQL pool is
    /// closed by the store.
    pub(crate) async fn close(&self) {
        if !self.postgres() {
            self.pool.close().await;
        }
    }

    pub(crate) async fn write(&self) -> Result<Transaction<'static, Any>> {
        Ok(match &self.scope {
            Scope::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Scope::Postgres { write, .. } => {
                self.pool
                    .begin_with(sqlx::AssertSqlSafe(write.to_string()))
                    .await?
            }
        })
    }

    /// Appends one history entry on its own.
    pub async fn record_event(
        &self,
        now: i64,
        actor: &str,
        action: &str,
        subject: &str,
        detail: serde_json::Value,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        event_in(&mut tx, now, actor, action, subject, detail).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The governance history, oldest first.
    pub async fn events(&self) -> Result<Vec<EventRecord>> {
        let rows =
            sqlx::query("SELECT seq, at, actor, action, subject, detail FROM events ORDER BY seq")
                .fetch_all(&mut *self.read().await?)
                .await?;
        rows.iter().map(event_row).collect()
    }

    // ---- settings ----------------------------------------------------------

    /// One tenant setting's value, if set.
    pub async fn setting(&self, key: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                .bind(key)
                .fetch_optional(&mut *self.read().await?)
                .await?,
        )
    }

    /// Every setting as (key, value, changed_by, changed_at).
    pub async fn settings(&self) -> Result<Vec<(String, String, String, i64)>> {
        let rows =
            sqlx::query("SELECT key, value, changed_by, changed_at FROM settings ORDER BY key")
                .fetch_all(&mut *self.read().await?)
                .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("key")?,
                    r.try_get("value")?,
                    r.try_get("changed_by")?,
                    r.try_get("changed_at")?,
                ))
            })
            .collect()
    }

    /// Sets a tenant setting and records who changed it.
    pub async fn set_setting(&self, key: &str, value: &str, actor: &str, now: i64) -> Result<()> {
        let mut tx = self.write().await?;
        let old: Option<String> = sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
        sqlx::query(if self.postgres() {
            "INSERT INTO settings (key, value, changed_by, changed_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant, key) DO UPDATE SET value = excluded.value, \
             changed_by = excluded.changed_by, changed_at = excluded.changed_at"
        } else {
            "INSERT INTO settings (key, value, changed_by, changed_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
             changed_by = excluded.changed_by, changed_at = excluded.changed_at"
        })
        .bind(key)
        .bind(value)
        .bind(actor)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        event_in(
            &mut tx,
            now,
            actor,
            "setting.set",
            key,
            serde_json::json!({ "from": old, "to": value }),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- principals ----------------------------------------------------------

    /// Adds a principal together with its first API key (by hash).
    pub async fn add_principal(&self, p: NewPrincipal<'_>) -> Result<PrincipalRecord> {
        let id = new_id("p")?;
        let mut tx = self.write().await?;
        let inserted = sqlx::query(
            "INSERT INTO principals (id, name, roles, created_by, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&id)
        .bind(p.name)
        .bind(p.roles.join(","))
        .bind(p.actor)
        .bind(p.now)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => {
                return Err(Error::Conflict(format!(
                    "principal `{}` already exists",
                    p.name
                )));
            }
            r => r?,
        };
        sqlx::query(
            "INSERT INTO api_keys (key_hash, principal_id, created_at) VALUES ($1, $2, $3)",
        )
        .bind(p.key_hash)
        .bind(&id)
        .bind(p.now)
        .execute(&mut *tx)
        .await?;
        event_in(
            &mut tx,
            p.now,
            p.actor,
            "principal.add",
            p.name,
            serde_json::json!({ "roles": p.roles }),
        )
        .await?;
        tx.commit().await?;
        Ok(PrincipalRecord {
            id,
            name: p.name.to_owned(),
            roles: p.roles.to_vec(),
            created_by: p.actor.to_owned(),
            created_at: p.now,
        })
    }

    /// The principal holding a live API key with this hash.
    pub async fn principal_by_key(&self, key_hash: &str) -> Result<Option<PrincipalRecord>> {
        let row = sqlx::query(
            "SELECT p.* FROM api_keys k JOIN principals p ON p.id = k.principal_id \
             WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
        )
        .bind(key_hash)
        .fetch_optional(&mut *self.read().await?)
        .await?;
        row.as_ref().map(principal).transpose()
    }

    /// A principal by name.
    pub async fn principal_by_name(&self, name: &str) -> Result<PrincipalRecord> {
        let row = sqlx::query("SELECT * FROM principals WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *self.read().await?)
            .await?;
        row.as_ref()
            .map(principal)
            .transpose()?
            .ok_or_else(|| Error::NotFound(format!("principal `{name}`")))
    }

    /// Every principal.
    pub async fn principals(&self) -> Result<Vec<PrincipalRecord>> {
        let rows = sqlx::query("SELECT * FROM principals ORDER BY name")
            .fetch_all(&mut *self.read().await?)
            .await?;
        rows.iter().map(principal).collect()
    }

    // ---- agents ---------------------------------------------------------------

    /// Drafts an agent.
    pub async fn create_agent(&self, a: NewAgent<'_>) -> Result<AgentRecord> {
        let id = new_id("a")?;
        let mut tx = self.write().await?;
        let inserted = sqlx::query(
            "INSERT INTO agents (id, name, owner_id, purpose, status, renew_by, created_by, \
             created_at, status_changed_at) VALUES ($1, $2, $3, $4, 'draft', $5, $6, $7, $8)",
        )
        .bind(&id)
        .bind(a.name)
        .bind(a.owner_id)
        .bind(a.purpose)
        .bind(a.renew_by)
        .bind(a.actor)
        .bind(a.now)
        .bind(a.now)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => {
                return Err(Error::Conflict(format!(
                    "agent `{}` already exists",
                    a.name
                )));
            }
            r => r?,
        };
        event_in(
            &mut tx,
            a.now,
            a.actor,
            "agent.create",
            a.name,
            serde_json::json!({ "owner_id": a.owner_id, "purpose": a.purpose, "renew_by": a.renew_by }),
        )
        .await?;
        tx.commit().await?;
        self.agent_by_id(&id).await
    }

    /// An agent by name.
    pub async fn agent_by_name(&self, name: &str) -> Result<AgentRecord> {
        let row = sqlx::query(concat!(select_agents!(), " WHERE a.name = $1"))
            .bind(name)
            .fetch_optional(&mut *self.read().await?)
            .await?;
        row.as_ref()
            .map(agent)
            .transpose()?
            .ok_or_else(|| Error::NotFound(format!("agent `{name}`")))
    }

    /// An agent by id.
    pub async fn agent_by_id(&self, id: &str) -> Result<AgentRecord> {
        let row = sqlx::query(concat!(select_agents!(), " WHERE a.id = $1"))
            .bind(id)
            .fetch_optional(&mut *self.read().await?)
            .await?;
        row.as_ref()
            .map(agent)
            .transpose()?
            .ok_or_else(|| Error::NotFound(format!("agent `{id}`")))
    }

    /// Every agent.
    pub async fn agents(&self) -> Result<Vec<AgentRecord>> {
        let rows = sqlx::query(concat!(select_agents!(), " ORDER BY a.name"))
            .fetch_all(&mut *self.read().await?)
            .await?;
        rows.iter().map(agent).collect()
    }

    /// Moves an agent to `status`. Decommissioning also revokes every credential,
    /// token and grant of the agent in the same transaction; its rows stay as
    /// history.
    pub async fn set_agent_status(
        &self,
        agent_id: &str,
        status: AgentStatus,
        reason: &str,
        actor: &str,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        let name: Option<String> = sqlx::query_scalar("SELECT name FROM agents WHERE id = $1")
            .bind(agent_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(name) = name else {
            return Err(Error::NotFound(format!("agent `{agent_id}`")));
        };
        sqlx::query("UPDATE agents SET status = $1, status_changed_at = $2 WHERE id = $3")
            .bind(status.as_str())
            .bind(now)
            .bind(agent_id)
            .execute(&mut *tx)
            .await?;
        if status == AgentStatus::Decommissioned {
            for table in ["agent_credentials", "access_tokens"] {
                // `table` is one of two literals above, never input.
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE {table} SET revoked_at = $1 WHERE agent_id = $2 AND revoked_at IS NULL"
                )))
                .bind(now)
                .bind(agent_id)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                "UPDATE grants SET revoked_at = $1, revoked_by = $2 WHERE agent_id = $3 AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(actor)
            .bind(agent_id)
            .execute(&mut *tx)
            .await?;
        }
        event_in(
            &mut tx,
            now,
            actor,
            &format!("agent.{}", status.as_str()),
            &name,
            serde_json::json!({ "reason": reason }),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sets a new renewal date.
    pub async fn renew_agent(
        &self,
        agent_id: &str,
        renew_by: i64,
        actor: &str,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        let name: Option<String> = sqlx::query_scalar("SELECT name FROM agents WHERE id = $1")
            .bind(agent_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(name) = name else {
            return Err(Error::NotFound(format!("agent `{agent_id}`")));
        };
        sqlx::query("UPDATE agents SET renew_by = $1 WHERE id = $2")
            .bind(renew_by)
            .bind(agent_id)
            .execute(&mut *tx)
            .await?;
        event_in(
            &mut tx,
            now,
            actor,
            "agent.renew",
            &name,
            serde_json::json!({ "renew_by": renew_by }),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The call generation: it moves on every committed change to what the
    /// call path reads (agents' status and renewal, tokens, grants,
    /// deployments, versions), whoever wrote it.
    pub async fn call_generation(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT gen FROM call_generation WHERE id = 1")
                .fetch_one(&mut *self.read().await?)
                .await?,
        )
    }

    /// Records that the agent was active now.
    pub async fn touch_agent(&self, agent_id: &str, now: i64) -> Result<()> {
        let query = sqlx::query("UPDATE agents SET last_active_at = $1 WHERE id = $2")
            .bind(now)
            .bind(agent_id);
        self.execute_one(query).await?;
        Ok(())
    }

    // ---- credentials and tokens ------------------------------------------------

    /// Stores a new long-lived agent credential (by hash).
    pub async fn add_credential(
        &self,
        agent_id: &str,
        key_hash: &str,
        actor: &str,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        let name: Option<String> = sqlx::query_scalar("SELECT name FROM agents WHERE id = $1")
            .bind(agent_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(name) = name else {
            return Err(Error::NotFound(format!("agent `{agent_id}`")));
        };
        sqlx::query(
            "INSERT INTO agent_credentials (key_hash, agent_id, created_by, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(key_hash)
        .bind(agent_id)
        .bind(actor)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        event_in(
            &mut tx,
            now,
            actor,
            "credential.issue",
            &name,
            serde_json::json!({}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The agent owning a live credential with this hash.
    pub async fn credential_agent(&self, key_hash: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT agent_id FROM agent_credentials WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(key_hash)
        .fetch_optional(&mut *self.read().await?)
        .await?)
    }

    /// Stores a new access token (by hash).
    pub async fn add_token(&self, key_hash: &str, token: &TokenRecord, agent: &str) -> Result<()> {
        let tools = token
            .tools
            .as_ref()
            .map(|t| serde_json::to_string(t).unwrap_or_default());
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO access_tokens (key_hash, agent_id, tools, issued_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(key_hash)
        .bind(&token.agent_id)
        .bind(&tools)
        .bind(token.issued_at)
        .bind(token.expires_at)
        .execute(&mut *tx)
        .await?;
        // Token issuance is in the history (and so in the audit trail); the
        // token itself never is.
        event_in(
            &mut tx,
            token.issued_at,
            &format!("agent:{agent}"),
            "token.issue",
            agent,
            serde_json::json!({ "expires_at": token.expires_at, "tools": token.tools }),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The access token with this hash, revoked or not.
    pub async fn token(&self, key_hash: &str) -> Result<Option<TokenRecord>> {
        let row = sqlx::query(
            "SELECT agent_id, tools, issued_at, expires_at, revoked_at FROM access_tokens WHERE key_hash = $1",
        )
        .bind(key_hash)
        .fetch_optional(&mut *self.read().await?)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let tools: Option<String> = row.try_get("tools")?;
        let tools = match tools {
            None => None,
            Some(t) => Some(
                serde_json::from_str(&t)
                    .map_err(|e| Error::Corrupt(format!("token tool list: {e}")))?,
            ),
        };
        Ok(Some(TokenRecord {
            agent_id: row.try_get("agent_id")?,
            tools,
            issued_at: row.try_get("issued_at")?,
            expires_at: row.try_get("expires_at")?,
            revoked_at: row.try_get("revoked_at")?,
        }))
    }

    // ---- tools -------------------------------------------------------------------

    /// Publishes a tool version: its bytes (content-addressed, stored once) and
    /// its manifest. A version that already exists is a conflict and writes
    /// nothing.
    pub async fn publish(&self, v: NewToolVersion<'_>) -> Result<ToolVersionRecord> {
        let mut tx = self.write().await?;
        sqlx::query("INSERT INTO blobs (sha256, bytes) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(v.sha256)
            .bind(v.bytes)
            .execute(&mut *tx)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO tool_versions (tool, version, sha256, manifest, published_by, published_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(v.tool)
        .bind(v.version)
        .bind(v.sha256)
        .bind(v.manifest_json)
        .bind(v.actor)
        .bind(v.now)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => {
                return Err(Error::Conflict(format!(
                    "tool `{}` version {} is already published; publish a new version instead",
                    v.tool, v.version
                )));
            }
            r => r?,
        };
        event_in(
            &mut tx,
            v.now,
            v.actor,
            "tool.publish",
            &format!("{}@{}", v.tool, v.version),
            serde_json::json!({ "sha256": v.sha256, "bytes": v.bytes.len() }),
        )
        .await?;
        tx.commit().await?;
        Ok(ToolVersionRecord {
            tool: v.tool.to_owned(),
            version: v.version.to_owned(),
            sha256: v.sha256.to_owned(),
            manifest: v.manifest_json.to_owned(),
            published_by: v.actor.to_owned(),
            published_at: v.now,
        })
    }

    /// One published version.
    pub async fn tool_version(&self, tool: &str, version: &str) -> Result<ToolVersionRecord> {
        let row = sqlx::query("SELECT * FROM tool_versions WHERE tool = $1 AND version = $2")
            .bind(tool)
            .bind(version)
            .fetch_optional(&mut *self.read().await?)
            .await?;
        row.as_ref()
            .map(tool_version)
            .transpose()?
            .ok_or_else(|| Error::NotFound(format!("tool `{tool}` version {version}")))
    }

    /// Every published version, by tool then publication order.
    pub async fn tool_versions(&self) -> Result<Vec<ToolVersionRecord>> {
        let rows = sqlx::query("SELECT * FROM tool_versions ORDER BY tool, published_at, version")
            .fetch_all(&mut *self.read().await?)
            .await?;
        rows.iter().map(tool_version).collect()
    }

    /// The component bytes stored under `sha256`, checked against their hash.
    pub async fn blob(&self, sha256: &str) -> Result<Vec<u8>> {
        use sha2::{Digest, Sha256};
        let bytes: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT bytes FROM blobs WHERE sha256 = $1")
                .bind(sha256)
                .fetch_optional(&mut *self.read().await?)
                .await?;
        let bytes = bytes.ok_or_else(|| Error::NotFound(format!("component {sha256}")))?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if actual != sha256 {
            return Err(Error::Corrupt(format!(
                "component {sha256} hashes to {actual}"
            )));
        }
        Ok(bytes)
    }

    /// Makes `version` of `tool` live. `kind` is `deploy` or `rollback`.
    pub async fn deploy(
        &self,
        tool: &str,
        version: &str,
        kind: &str,
        actor: &str,
        now: i64,
    ) -> Result<DeploymentRecord> {
        let mut tx = self.write().await?;
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO deployments (tool, version, kind, deployed_by, deployed_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING seq",
        )
        .bind(tool)
        .bind(version)
        .bind(kind)
        .bind(actor)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        event_in(
            &mut tx,
            now,
            actor,
            &format!("tool.{kind}"),
            &format!("{tool}@{version}"),
            serde_json::json!({ "seq": seq }),
        )
        .await?;
        tx.commit().await?;
        Ok(DeploymentRecord {
            seq,
            tool: tool.to_owned(),
            version: version.to_owned(),
            kind: kind.to_owned(),
            deployed_by: actor.to_owned(),
            deployed_at: now,
        })
    }

    /// Deployments of a tool, newest first.
    pub async fn deployments(&self, tool: &str) -> Result<Vec<DeploymentRecord>> {
        let rows = sqlx::query("SELECT * FROM deployments WHERE tool = $1 ORDER BY seq DESC")
            .bind(tool)
            .fetch_all(&mut *self.read().await?)
            .await?;
        rows.iter().map(deployment).collect()
    }

    /// The live version of a tool: its latest deployment.
    pub async fn live_version(&self, tool: &str) -> Result<Option<ToolVersionRecord>> {
        let row = sqlx::query(
            "SELECT v.* FROM deployments d JOIN tool_versions v \
             ON v.tool = d.tool AND v.version = d.version \
             WHERE d.tool = $1 ORDER BY d.seq DESC LIMIT 1",
        )
        .bind(tool)
        .fetch_optional(&mut *self.read().await?)
        .await?;
        row.as_ref().map(tool_version).transpose()
    }

    // ---- grants ------------------------------------------------------------------

    /// Stores a grant, replacing (revoking) the agent's live grant on the same
    /// tool in the same transaction.
    pub async fn add_grant(&self, g: NewGrant<'_>) -> Result<GrantRecord> {
        let id = new_id("g")?;
        let mut tx = self.write().await?;
        let agent: Option<String> = sqlx::query_scalar("SELECT name FROM agents WHERE id = $1")
            .bind(g.agent_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(agent) = agent else {
            return Err(Error::NotFound(format!("agent `{}`", g.agent_id)));
        };
        let replaced = sqlx::query(
            "UPDATE grants SET revoked_at = $1, revoked_by = $2 \
             WHERE agent_id = $3 AND tool = $4 AND revoked_at IS NULL",
        )
        .bind(g.now)
        .bind(g.actor)
        .bind(g.agent_id)
        .bind(g.tool)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(
            "INSERT INTO grants (id, agent_id, tool, spec, expires_at, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&id)
        .bind(g.agent_id)
        .bind(g.tool)
        .bind(g.spec_json)
        .bind(g.expires_at)
        .bind(g.actor)
        .bind(g.now)
        .execute(&mut *tx)
        .await?;
        event_in(
            &mut tx,
            g.now,
            g.actor,
            "grant.add",
            &format!("{agent}/{}", g.tool),
            serde_json::json!({ "id": id, "replaced": replaced, "expires_at": g.expires_at }),
        )
        .await?;
        tx.commit().await?;
        Ok(GrantRecord {
            id,
            agent_id: g.agent_id.to_owned(),
            agent,
            tool: g.tool.to_owned(),
            spec: g.spec_json.to_owned(),
            expires_at: g.expires_at,
            created_by: g.actor.to_owned(),
            created_at: g.now,
            revoked_at: None,
            revoked_by: None,
        })
    }

    /// Revokes the live grant of an agent on a tool. Returns whether one existed.
    pub async fn revoke_grant(
        &self,
        agent_id: &str,
        tool: &str,
        actor: &str,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.write().await?;
        let agent: Option<String> = sqlx::query_scalar("SELECT name FROM agents WHERE id = $1")
            .bind(agent_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(agent) = agent else {
            return Err(Error::NotFound(format!("agent `{agent_id}`")));
        };
        let n = sqlx::query(
            "UPDATE grants SET revoked_at = $1, revoked_by = $2 \
             WHERE agent_id = $3 AND tool = $4 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(actor)
        .bind(agent_id)
        .bind(tool)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        event_in(
            &mut tx,
            now,
            actor,
            "grant.revoke",
            &format!("{agent}/{tool}"),
            serde_json::json!({}),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The live (not revoked) grant of an agent on a tool, expired or not.
    pub async fn live_grant(&self, agent_id: &str, tool: &str) -> Result<Option<GrantRecord>> {
        let row = sqlx::query(concat!(
            select_grants!(),
            " WHERE g.agent_id = $1 AND g.tool = $2 AND g.revoked_at IS NULL"
        ))
        .bind(agent_id)
        .bind(tool)
        .fetch_optional(&mut *self.read().await?)
        .await?;
        row.as_ref().map(grant).transpose()
    }

    /// Grants, optionally of one agent; with `include_revoked` the history too.
    pub async fn grants(
        &self,
        agent_id: Option<&str>,
        include_revoked: bool,
    ) -> Result<Vec<GrantRecord>> {
        let rows = sqlx::query(concat!(
            select_grants!(),
            " WHERE ($1 IS NULL OR g.agent_id = $1) \
                 AND ($2 OR g.revoked_at IS NULL) ORDER BY a.name, g.tool, g.created_at"
        ))
        .bind(agent_id)
        .bind(include_revoked)
        .fetch_all(&mut *self.read().await?)
        .await?;
        rows.iter().map(grant).collect()
    }

    // ---- policy ------------------------------------------------------------

    /// Stores a new version of the policy set (already validated by the
    /// caller) and records who set it; returns the new version.
    pub async fn add_policy(&self, text: &str, sha256: &str, actor: &str, now: i64) -> Result<i64> {
        let mut tx = self.write().await?;
        let version: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) + 1 FROM policies")
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO policies (version, text, sha256, created_by, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(version)
        .bind(text)
        .bind(sha256)
        .bind(actor)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        event_in(
            &mut tx,
            now,
            actor,
            "policy.set",
            &format!("v{version}"),
            serde_json::json!({ "version": version, "sha256": sha256 }),
        )
        .await?;
        tx.commit().await?;
        Ok(version)
    }

    /// A stored policy version; `None` asks for the one in force. `Ok(None)`:
    /// the tenant never set a policy.
    pub async fn policy(&self, version: Option<i64>) -> Result<Option<PolicyRecord>> {
        let q = match version {
            Some(_) => {
                "SELECT version, text, sha256, created_by, created_at FROM policies WHERE version = $1"
            }
            None => {
                "SELECT version, text, sha256, created_by, created_at FROM policies ORDER BY version DESC LIMIT 1"
            }
        };
        let mut query = sqlx::query(q);
        if let Some(v) = version {
            query = query.bind(v);
        }
        let Some(r) = query.fetch_optional(&mut *self.read().await?).await? else {
            return Ok(None);
        };
        Ok(Some(PolicyRecord {
            version: r.try_get("version")?,
            text: r.try_get("text")?,
            sha256: r.try_get("sha256")?,
            created_by: r.try_get("created_by")?,
            created_at: r.try_get("created_at")?,
        }))
    }
}
