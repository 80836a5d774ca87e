//! Data-classification sessions in the database, for several nodes: a
//! session that read restricted data through one node is restricted on
//! every node. (A single SQLite process keeps them in memory; see
//! `warden-service`'s `sessions`.)
//!
//! The tier only rises, in one statement (`CASE WHEN tier < new`), so two
//! calls finishing at once on two nodes cannot lower it. Like the counters,
//! these rows are committed without waiting for the disk: a database crash
//! can forget the last raise, which is what a restart of a single process
//! forgets too.

use sqlx::Row;

use crate::{Result, TenantStore};

/// What one data session has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataSession {
    /// The highest classification read, as a rank (0 = public), if any.
    pub rank: Option<i64>,
    pub calls: i64,
    /// `tool/action` names, at most `max_tools` of them.
    pub tools: Vec<String>,
}

impl TenantStore {
    /// The session of `agent_id` named `session` (empty when unseen).
    pub async fn data_session(
        &self,
        agent_id: &str,
        session: &str,
        max_tools: i64,
    ) -> Result<DataSession> {
        let mut r = self.read().await?;
        let row = sqlx::query(
            "SELECT tier, calls FROM data_sessions WHERE agent_id = $1 AND session = $2",
        )
        .bind(agent_id)
        .bind(session)
        .fetch_optional(&mut *r)
        .await?;
        let Some(row) = row else {
            return Ok(DataSession::default());
        };
        let tools = sqlx::query(
            "SELECT tool FROM data_session_tools WHERE agent_id = $1 AND session = $2 \
             ORDER BY tool LIMIT $3",
        )
        .bind(agent_id)
        .bind(session)
        .bind(max_tools)
        .fetch_all(&mut *r)
        .await?
        .iter()
        .map(|t| t.try_get("tool"))
        .collect::<std::result::Result<_, _>>()?;
        Ok(DataSession {
            rank: Some(row.try_get("tier")?),
            calls: row.try_get("calls")?,
            tools,
        })
    }

    /// Records a successful call of `tool_action` that read data of `rank`:
    /// the tier rises to it (never falls), the call is counted.
    pub async fn record_data_session(
        &self,
        agent_id: &str,
        session: &str,
        tool_action: &str,
        rank: i64,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.quick_tx().await?;
        let target = if self.postgres() {
            "(tenant, agent_id, session)"
        } else {
            "(agent_id, session)"
        };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO data_sessions (agent_id, session, tier, calls, seen_at) \
             VALUES ($1, $2, $3, 1, $4) ON CONFLICT {target} DO UPDATE SET \
             tier = CASE WHEN data_sessions.tier < excluded.tier \
                    THEN excluded.tier ELSE data_sessions.tier END, \
             calls = data_sessions.calls + 1, seen_at = excluded.seen_at"
        )))
        .bind(agent_id)
        .bind(session)
        .bind(rank)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO data_session_tools (agent_id, session, tool) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(agent_id)
        .bind(session)
        .bind(tool_action)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Forgets the sessions last seen before `idle_before` (seconds), with
    /// their tools, and returns how many. A session recorded again while
    /// this runs is kept: the second delete checks `seen_at` again.
    pub async fn prune_data_sessions(&self, idle_before: i64) -> Result<u64> {
        let mut tx = self.quick_tx().await?;
        sqlx::query(
            "DELETE FROM data_session_tools WHERE (agent_id, session) IN \
             (SELECT agent_id, session FROM data_sessions WHERE seen_at < $1)",
        )
        .bind(idle_before)
        .execute(&mut *tx)
        .await?;
        let gone = sqlx::query("DELETE FROM data_sessions WHERE seen_at < $1")
            .bind(idle_before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(gone)
    }
}
