//! Guardrail counters in the database, for several nodes sharing one
//! PostgreSQL: call rates, write quotas and fuel budgets then hold across
//! nodes. (A single SQLite process keeps its counters in memory; see
//! `warden-service`'s `counters`.)
//!
//! An admission is one transaction holding an advisory lock on (tenant,
//! agent, tool): read the windows, refuse at the first exhausted one
//! (counting nothing), else count the call everywhere. The lock is narrower
//! than the tenant's writer lock, so counting never waits on an audit
//! append. Counters are committed without waiting for the disk
//! (`synchronous_commit = off`): a database crash can forget the last few
//! counts, never invent any.

use sqlx::Row;

use crate::{Result, TenantStore};

/// One window an admission checks (and maybe counts in).
#[derive(Debug, Clone)]
pub struct UsageWindow<'a> {
    /// An action name, or `*writes` / `*fuel`.
    pub scope: &'a str,
    /// Window width in seconds.
    pub width: i64,
    /// `now / width`.
    pub bucket: i64,
    /// Refuse when the count has reached this.
    pub limit: Option<i64>,
    /// Whether an admitted call counts one here.
    pub count: bool,
}

/// What an admission found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// The count of each window before this call.
    pub before: Vec<i64>,
    /// The first window whose limit was reached (nothing was counted).
    pub refused: Option<usize>,
}

impl TenantStore {
    async fn usage_tx(
        &self,
        agent: &str,
        tool: &str,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        if !self.postgres() {
            return self.write().await;
        }
        let mut tx = self
            .pool
            .begin_with(sqlx::AssertSqlSafe(format!(
                "BEGIN; SELECT set_config('warden.tenant', '{}', true); \
                 SET LOCAL synchronous_commit = off",
                self.name()
            )))
            .await?;
        sqlx::query("SELECT 1 FROM pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("warden.usage:{}:{agent}:{tool}", self.name()))
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// Admits one call of `agent` on `tool` against `windows`, in order.
    pub async fn admit_usage(
        &self,
        agent: &str,
        tool: &str,
        windows: &[UsageWindow<'_>],
    ) -> Result<Admission> {
        let mut tx = self.usage_tx(agent, tool).await?;
        let mut before = Vec::with_capacity(windows.len());
        for w in windows {
            let used: Option<i64> = sqlx::query(
                "SELECT used FROM usage_counters \
                 WHERE agent = $1 AND tool = $2 AND scope = $3 AND width = $4 AND bucket = $5",
            )
            .bind(agent)
            .bind(tool)
            .bind(w.scope)
            .bind(w.width)
            .bind(w.bucket)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get("used"))
            .transpose()?;
            before.push(used.unwrap_or(0));
        }
        if let Some(i) = windows
            .iter()
            .zip(&before)
            .position(|(w, used)| w.limit.is_some_and(|l| *used >= l))
        {
            tx.rollback().await?;
            return Ok(Admission {
                before,
                refused: Some(i),
            });
        }
        for w in windows.iter().filter(|w| w.count) {
            add(&mut tx, agent, tool, w.scope, w.width, w.bucket, 1).await?;
        }
        tx.commit().await?;
        Ok(Admission {
            before,
            refused: None,
        })
    }

    /// Adds `amount` to one window (fuel burned by a finished call).
    pub async fn add_usage(
        &self,
        agent: &str,
        tool: &str,
        scope: &str,
        width: i64,
        bucket: i64,
        amount: i64,
    ) -> Result<()> {
        let mut tx = self.usage_tx(agent, tool).await?;
        add(&mut tx, agent, tool, scope, width, bucket, amount).await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn add(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    agent: &str,
    tool: &str,
    scope: &str,
    width: i64,
    bucket: i64,
    amount: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO usage_counters (agent, tool, scope, width, bucket, used) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT DO NOTHING",
    )
    .bind(agent)
    .bind(tool)
    .bind(scope)
    .bind(width)
    .bind(bucket)
    .bind(0_i64)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE usage_counters SET used = used + $1 \
         WHERE agent = $2 AND tool = $3 AND scope = $4 AND width = $5 AND bucket = $6",
    )
    .bind(amount)
    .bind(agent)
    .bind(tool)
    .bind(scope)
    .bind(width)
    .bind(bucket)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
