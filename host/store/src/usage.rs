//! Guardrail counters in the database, for several nodes sharing one
//! PostgreSQL: call rates, write quotas and fuel budgets then hold across
//! nodes. Each (agent, tool, scope, window width) is one row holding the
//! newest window's count, so the table does not grow with time. (A single
//! SQLite process keeps its counters in memory; see `warden-service`'s
//! `counters`.)
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
    /// A transaction for counting, holding the (tenant, agent, tool) lock,
    /// begun in one round trip. The lock key is a hash computed here, so
    /// nothing but digits and the validated tenant name is inlined.
    async fn usage_tx(
        &self,
        agent: &str,
        tool: &str,
        lock: bool,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        if !self.postgres() {
            return self.write().await;
        }
        let lock = if lock {
            use sha2::Digest;
            let d = sha2::Sha256::digest(format!("warden.usage\0{}\0{agent}\0{tool}", self.name()));
            let key = i64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
            format!("; SELECT pg_advisory_xact_lock({key})")
        } else {
            String::new()
        };
        Ok(self
            .pool
            .begin_with(sqlx::AssertSqlSafe(format!(
                "BEGIN; SELECT set_config('warden.tenant', '{}', true); \
                 SET LOCAL synchronous_commit = off{lock}",
                self.name()
            )))
            .await?)
    }

    /// A write transaction that takes no lock and does not wait for the
    /// disk on PostgreSQL (each statement in it is atomic by itself).
    pub(crate) async fn quick_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        self.usage_tx("", "", false).await
    }

    /// Admits one call of `agent` on `tool` against `windows`, in order.
    pub async fn admit_usage(
        &self,
        agent: &str,
        tool: &str,
        windows: &[UsageWindow<'_>],
    ) -> Result<Admission> {
        let mut tx = self.usage_tx(agent, tool, true).await?;
        // Every window's count in one query. A row in a newer window than
        // this node's clock says (another node's clock is ahead) is the
        // count: a lagging clock never opens a fresh window.
        let mut q = String::from(
            "SELECT scope, width, used FROM usage_counters WHERE agent = $1 AND tool = $2 AND (",
        );
        for i in 0..windows.len() {
            let b = 3 + 3 * i;
            if i > 0 {
                q.push_str(" OR ");
            }
            q.push_str(&format!(
                "(scope = ${b} AND width = ${} AND bucket >= ${})",
                b + 1,
                b + 2
            ));
        }
        q.push(')');
        let mut query = sqlx::query(sqlx::AssertSqlSafe(q)).bind(agent).bind(tool);
        for w in windows {
            query = query.bind(w.scope).bind(w.width).bind(w.bucket);
        }
        let mut found = std::collections::HashMap::new();
        for r in query.fetch_all(&mut *tx).await? {
            let scope: String = r.try_get("scope")?;
            let width: i64 = r.try_get("width")?;
            found.insert((scope, width), r.try_get::<i64, _>("used")?);
        }
        let before: Vec<i64> = windows
            .iter()
            .map(|w| {
                found
                    .get(&(w.scope.to_owned(), w.width))
                    .copied()
                    .unwrap_or(0)
            })
            .collect();
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
        let counted: Vec<&UsageWindow<'_>> = windows.iter().filter(|w| w.count).collect();
        self.add(&mut tx, agent, tool, &counted, 1).await?;
        tx.commit().await?;
        Ok(Admission {
            before,
            refused: None,
        })
    }

    /// Adds `amount` to one window (fuel burned by a finished call). One
    /// upsert is atomic by itself: no lock.
    pub async fn add_usage(
        &self,
        agent: &str,
        tool: &str,
        scope: &str,
        width: i64,
        bucket: i64,
        amount: i64,
    ) -> Result<()> {
        let mut tx = self.quick_tx().await?;
        let w = UsageWindow {
            scope,
            width,
            bucket,
            limit: None,
            count: true,
        };
        self.add(&mut tx, agent, tool, &[&w], amount).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Adds `amount` to each window, creating rows as needed: one
    /// multi-row upsert. Each (agent, tool, scope, width) has one row: a
    /// count in a newer window replaces the older window's row in place,
    /// and a count for a window older than the row's (from a node whose
    /// clock lags) goes into the row's newer window, never lost.
    async fn add(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        agent: &str,
        tool: &str,
        windows: &[&UsageWindow<'_>],
        amount: i64,
    ) -> Result<()> {
        if windows.is_empty() {
            return Ok(());
        }
        let rows: Vec<String> = (0..windows.len())
            .map(|i| {
                let b = 4 + 3 * i;
                format!("($1, $2, ${b}, ${}, ${}, $3)", b + 1, b + 2)
            })
            .collect();
        let target = if self.postgres() {
            "(tenant, agent, tool, scope, width)"
        } else {
            "(agent, tool, scope, width)"
        };
        // Both right-hand sides read the row as it was before the update.
        let q = format!(
            "INSERT INTO usage_counters (agent, tool, scope, width, bucket, used) VALUES {} \
             ON CONFLICT {target} DO UPDATE SET \
             used = CASE WHEN usage_counters.bucket < excluded.bucket THEN excluded.used \
                         ELSE usage_counters.used + excluded.used END, \
             bucket = CASE WHEN usage_counters.bucket < excluded.bucket \
                           THEN excluded.bucket ELSE usage_counters.bucket END",
            rows.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(agent)
            .bind(tool)
            .bind(amount);
        for w in windows {
            query = query.bind(w.scope).bind(w.width).bind(w.bucket);
        }
        query.execute(&mut **tx).await?;
        Ok(())
    }
}
