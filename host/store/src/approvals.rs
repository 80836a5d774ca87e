//! Held calls and their votes. Every state change is one conditional
//! `UPDATE … WHERE status IN (…)`, so of two racing changes exactly one takes
//! effect; a vote and the state change it causes share one transaction.
//! The dynamic SQL here only joins fixed column lists and `?` placeholders;
//! every value is bound.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::tenant::TenantStore;
use crate::{Error, Result};

/// One held call (see the `0006_approvals.sql` migration for the states).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    pub id: String,
    /// `call` (held before it ran) or `import` (held inside a call).
    pub kind: String,
    pub status: String,
    pub agent_id: String,
    pub agent: String,
    pub tool: String,
    pub version: String,
    pub component: String,
    pub action: String,
    /// The call's input exactly as sent.
    pub input: String,
    /// A hold inside a call: the import request.
    pub import: Option<serde_json::Value>,
    pub policy_version: i64,
    pub correlation: String,
    pub invocation: String,
    pub data_session: String,
    pub rule: String,
    pub reason: String,
    pub policies: Vec<String>,
    /// What the policy saw when it held the call.
    pub facts: serde_json::Value,
    pub required: i64,
    pub created_at: i64,
    pub expires_at: i64,
    pub payload_sha256: String,
    pub decided_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// The executed call's report.
    pub result: Option<serde_json::Value>,
    /// The node whose process holds the hold while it is in flight (a call
    /// suspended inside on it, or an approved call being executed).
    pub owner_node: Option<String>,
    /// When that node last said it is alive (Unix seconds).
    pub heartbeat_at: Option<i64>,
    pub votes: Vec<VoteRecord>,
}

/// One approver's vote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteRecord {
    pub principal_id: String,
    pub principal: String,
    /// `approve` or `reject`.
    pub vote: String,
    pub comment: String,
    pub at: i64,
}

/// What a vote did to its approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoteOutcome {
    /// Counted; the approval is now in `status` (`pending`, `approved` or
    /// `rejected`), with `approvals` approving votes.
    Counted { status: String, approvals: i64 },
    /// The approval had expired: the vote was not counted and the approval
    /// is now `expired`.
    Expired,
}

const COLUMNS: &str = "id, kind, status, agent_id, agent, tool, version, component, action, input, \
    import, policy_version, correlation, invocation, data_session, rule, reason, policies, facts, \
    required, created_at, expires_at, payload_sha256, decided_at, finished_at, result, \
    owner_node, heartbeat_at";

fn json(r: &AnyRow, col: &str) -> Result<serde_json::Value> {
    let text: String = r.try_get(col)?;
    serde_json::from_str(&text).map_err(|e| Error::Corrupt(format!("approval {col}: {e}")))
}

fn approval(r: &AnyRow) -> Result<ApprovalRecord> {
    let import: Option<String> = r.try_get("import")?;
    let result: Option<String> = r.try_get("result")?;
    let parse = |t: String| {
        serde_json::from_str(&t).map_err(|e| Error::Corrupt(format!("approval field: {e}")))
    };
    Ok(ApprovalRecord {
        id: r.try_get("id")?,
        kind: r.try_get("kind")?,
        status: r.try_get("status")?,
        agent_id: r.try_get("agent_id")?,
        agent: r.try_get("agent")?,
        tool: r.try_get("tool")?,
        version: r.try_get("version")?,
        component: r.try_get("component")?,
        action: r.try_get("action")?,
        input: r.try_get("input")?,
        import: import.map(parse).transpose()?,
        policy_version: r.try_get("policy_version")?,
        correlation: r.try_get("correlation")?,
        invocation: r.try_get("invocation")?,
        data_session: r.try_get("data_session")?,
        rule: r.try_get("rule")?,
        reason: r.try_get("reason")?,
        policies: serde_json::from_value(json(r, "policies")?)
            .map_err(|e| Error::Corrupt(format!("approval policies: {e}")))?,
        facts: json(r, "facts")?,
        required: r.try_get("required")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        payload_sha256: r.try_get("payload_sha256")?,
        decided_at: r.try_get("decided_at")?,
        finished_at: r.try_get("finished_at")?,
        result: result.map(parse).transpose()?,
        owner_node: r.try_get("owner_node")?,
        heartbeat_at: r.try_get("heartbeat_at")?,
        votes: Vec::new(),
    })
}

fn vote(r: &AnyRow) -> Result<(String, VoteRecord)> {
    Ok((
        r.try_get("approval_id")?,
        VoteRecord {
            principal_id: r.try_get("principal_id")?,
            principal: r.try_get("principal")?,
            vote: r.try_get("vote")?,
            comment: r.try_get("comment")?,
            at: r.try_get("at")?,
        },
    ))
}

/// `$first, $first+1, …` (`count` of them) for an `IN (…)` list.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// States that end the decision (the row's `decided_at` is set).
const DECIDED: [&str; 4] = ["approved", "rejected", "expired", "cancelled"];

impl TenantStore {
    /// Stores a new held call (status as given, normally `pending`).
    pub async fn add_approval(&self, a: &ApprovalRecord) -> Result<()> {
        let q = format!(
            "INSERT INTO approvals ({COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28)"
        );
        let query = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(&a.id)
            .bind(&a.kind)
            .bind(&a.status)
            .bind(&a.agent_id)
            .bind(&a.agent)
            .bind(&a.tool)
            .bind(&a.version)
            .bind(&a.component)
            .bind(&a.action)
            .bind(&a.input)
            .bind(a.import.as_ref().map(ToString::to_string))
            .bind(a.policy_version)
            .bind(&a.correlation)
            .bind(&a.invocation)
            .bind(&a.data_session)
            .bind(&a.rule)
            .bind(&a.reason)
            .bind(serde_json::json!(a.policies).to_string())
            .bind(a.facts.to_string())
            .bind(a.required)
            .bind(a.created_at)
            .bind(a.expires_at)
            .bind(&a.payload_sha256)
            .bind(a.decided_at)
            .bind(a.finished_at)
            .bind(a.result.as_ref().map(ToString::to_string))
            .bind(&a.owner_node)
            .bind(a.heartbeat_at);
        self.execute_one(query).await?;
        Ok(())
    }

    /// One held call with its votes.
    pub async fn approval(&self, id: &str) -> Result<ApprovalRecord> {
        let q = format!("SELECT {COLUMNS} FROM approvals WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(id)
            .fetch_optional(&mut *self.read().await?)
            .await?
            .ok_or_else(|| Error::NotFound(format!("approval `{id}`")))?;
        let mut a = approval(&row)?;
        let votes = sqlx::query(
            "SELECT approval_id, principal_id, principal, vote, comment, at \
             FROM approval_votes WHERE approval_id = $1 ORDER BY at, principal",
        )
        .bind(id)
        .fetch_all(&mut *self.read().await?)
        .await?;
        for v in &votes {
            a.votes.push(vote(v)?.1);
        }
        Ok(a)
    }

    /// Held calls in `statuses` (all when empty), oldest first, at most
    /// `limit`, each with its votes.
    pub async fn approvals(&self, statuses: &[&str], limit: i64) -> Result<Vec<ApprovalRecord>> {
        let filter = if statuses.is_empty() {
            String::new()
        } else {
            format!(" WHERE status IN ({})", placeholders(1, statuses.len()))
        };
        let limit_at = statuses.len() + 1;
        let q = format!(
            "SELECT {COLUMNS} FROM approvals{filter} ORDER BY created_at, id LIMIT ${limit_at}"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(q));
        for s in statuses {
            query = query.bind(*s);
        }
        let rows = query
            .bind(limit)
            .fetch_all(&mut *self.read().await?)
            .await?;
        let mut out = rows.iter().map(approval).collect::<Result<Vec<_>>>()?;
        if out.is_empty() {
            return Ok(out);
        }
        let vq = format!(
            "SELECT v.approval_id, v.principal_id, v.principal, v.vote, v.comment, v.at \
             FROM approval_votes v JOIN approvals a ON a.id = v.approval_id{} ORDER BY v.at",
            filter.replace("status", "a.status")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(vq));
        for s in statuses {
            query = query.bind(*s);
        }
        let mut by_id: std::collections::HashMap<String, Vec<VoteRecord>> =
            std::collections::HashMap::new();
        for r in query.fetch_all(&mut *self.read().await?).await? {
            let (id, v) = vote(&r)?;
            by_id.entry(id).or_default().push(v);
        }
        for a in &mut out {
            a.votes = by_id.remove(&a.id).unwrap_or_default();
        }
        Ok(out)
    }

    /// Counts one approver's vote on a pending approval and moves it to
    /// `approved` (quorum) or `rejected` (any reject), in one transaction.
    /// A vote past the expiry expires the approval instead. Refuses a second
    /// vote by the same principal and a vote on a decided approval
    /// ([`Error::Conflict`]).
    pub async fn vote_approval(&self, id: &str, v: &VoteRecord) -> Result<VoteOutcome> {
        let mut tx = self.write().await?;
        let row = sqlx::query("SELECT status, expires_at, required FROM approvals WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| Error::NotFound(format!("approval `{id}`")))?;
        let status: String = row.try_get("status")?;
        let expires_at: i64 = row.try_get("expires_at")?;
        let required: i64 = row.try_get("required")?;
        if status != "pending" {
            return Err(Error::Conflict(format!(
                "approval `{id}` is {status}; only a pending approval takes votes"
            )));
        }
        if expires_at <= v.at {
            sqlx::query(
                "UPDATE approvals SET status = 'expired', decided_at = $1 WHERE id = $2 AND status = 'pending'",
            )
            .bind(v.at)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(VoteOutcome::Expired);
        }
        let inserted = sqlx::query(
            "INSERT INTO approval_votes (approval_id, principal_id, principal, vote, comment, at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(&v.principal_id)
        .bind(&v.principal)
        .bind(&v.vote)
        .bind(&v.comment)
        .bind(v.at)
        .execute(&mut *tx)
        .await;
        if let Err(e) = inserted {
            return Err(match &e {
                sqlx::Error::Database(d) if d.is_unique_violation() => Error::Conflict(format!(
                    "`{}` already voted on approval `{id}`; each approver votes once",
                    v.principal
                )),
                _ => e.into(),
            });
        }
        let approvals: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM approval_votes WHERE approval_id = $1 AND vote = 'approve'",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let next = if v.vote == "reject" {
            "rejected"
        } else if approvals >= required {
            "approved"
        } else {
            "pending"
        };
        if next != "pending" {
            sqlx::query(
                "UPDATE approvals SET status = $1, decided_at = $2 WHERE id = $3 AND status = 'pending'",
            )
            .bind(next)
            .bind(v.at)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(VoteOutcome::Counted {
            status: next.to_owned(),
            approvals,
        })
    }

    /// The id of the agent's approval that held invocation `invocation`.
    pub async fn approval_by_invocation(
        &self,
        invocation: &str,
        agent_id: &str,
    ) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM approvals WHERE invocation = $1 AND agent_id = $2 AND kind = 'call'              ORDER BY created_at DESC LIMIT 1",
        )
        .bind(invocation)
        .bind(agent_id)
        .fetch_optional(&mut *self.read().await?)
        .await?)
    }

    /// How many approvals are in `status`.
    pub async fn count_approvals(&self, status: &str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM approvals WHERE status = $1")
            .bind(status)
            .fetch_one(&mut *self.read().await?)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Moves an approval from one of `from` to `to`; `false` when it was in
    /// none of them (someone else moved it first). `result` is stored with
    /// the move when given; `owner` (a node id) takes the row over as in
    /// flight on that node, with a fresh heartbeat.
    pub async fn move_approval(
        &self,
        id: &str,
        from: &[&str],
        to: &str,
        now: i64,
        result: Option<&serde_json::Value>,
        owner: Option<&str>,
    ) -> Result<bool> {
        let stamp = if DECIDED.contains(&to) {
            "decided_at"
        } else {
            "finished_at"
        };
        let q = format!(
            "UPDATE approvals SET status = $1, {stamp} = $2, result = COALESCE($3, result), \
             owner_node = COALESCE($5, owner_node), \
             heartbeat_at = CASE WHEN $5 IS NULL THEN heartbeat_at ELSE $2 END \
             WHERE id = $4 AND status IN ({})",
            placeholders(6, from.len().max(1))
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(to)
            .bind(now)
            .bind(result.map(ToString::to_string))
            .bind(id)
            .bind(owner);
        if from.is_empty() {
            query = query.bind("");
        }
        for f in from {
            query = query.bind(*f);
        }
        Ok(self.execute_one(query).await? == 1)
    }

    /// Marks every in-flight hold owned by `node` as alive at `now`; returns
    /// how many rows it touched.
    pub async fn heartbeat_approvals(&self, node: &str, now: i64) -> Result<u64> {
        let query = sqlx::query(
            "UPDATE approvals SET heartbeat_at = $1 \
             WHERE owner_node = $2 AND status IN ('pending', 'approved', 'executing')",
        )
        .bind(now)
        .bind(node);
        self.execute_one(query).await
    }
}
