//! Approvals: the human gate behind a policy Hold (ARCHITECTURE.md,
//! "Approvals").
//!
//! A hold is a durable row before anyone hears of it. Approvers vote; the
//! store moves the row with conditional updates, so of two racing movers one
//! wins. On quorum a held call runs once, with exactly the payload approved:
//! the payload hash is recomputed from the live tool, component and policy
//! versions and compared. A hold inside a call suspends the instance on the
//! import until the row is decided or expires.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use warden_audit::{Entry, canonical_json, sha256_hex};
use warden_policy::cedar::{CallFacts, Verdict};
use warden_policy::{ImportCall, Operation, SeparationRule};
use warden_store::{ApprovalRecord, TenantStore, VoteOutcome, VoteRecord};

use crate::audit::AuditLog;
use crate::calls::AgentSession;
use crate::governance::load_settings;
use crate::{Caller, Clock, Error, Result, Warden};

/// Longest an agent's long-poll waits for a decision or result.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// How often a waiter re-reads its row even without a wake-up (another
/// process may have decided it).
const POLL: Duration = Duration::from_millis(250);
/// Most approvals one list returns.
pub const MAX_LIST: i64 = 10_000;
/// States after which nothing more happens to an approval.
const FINAL: [&str; 7] = [
    "rejected",
    "expired",
    "cancelled",
    "executed",
    "consumed",
    "aborted",
    "refused",
];

/// Process-wide approval state: wake-ups for waiters, decision metrics and
/// the webhook client.
#[derive(Debug, Default)]
pub struct Hub {
    waiters: Mutex<HashMap<String, Arc<Notify>>>,
    decisions: Mutex<BTreeMap<String, u64>>,
    /// Sum and count of seconds from hold to decision (approved or rejected).
    decide_secs: AtomicU64,
    decided: AtomicU64,
    http: std::sync::OnceLock<reqwest::Client>,
}

/// What `/metrics` shows about approvals.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ApprovalStats {
    /// Pending holds across tenants.
    pub pending: u64,
    /// Terminal transitions by outcome.
    pub decisions: BTreeMap<String, u64>,
    pub decide_seconds_sum: u64,
    pub decide_count: u64,
}

impl Hub {
    fn waiter(&self, id: &str) -> Arc<Notify> {
        self.waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(id.to_owned())
            .or_default()
            .clone()
    }

    /// Wakes everyone waiting on `id`.
    fn wake(&self, id: &str) {
        let n = self
            .waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .cloned();
        if let Some(n) = n {
            n.notify_waiters();
        }
    }

    fn forget(&self, id: &str) {
        self.waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
    }

    fn count(&self, outcome: &str, waited: Option<i64>) {
        *self
            .decisions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(outcome.to_owned())
            .or_default() += 1;
        if let Some(w) = waited {
            self.decide_secs
                .fetch_add(u64::try_from(w.max(0)).unwrap_or(0), Ordering::Relaxed);
            self.decided.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Posts `note` to the tenant's webhook, if any, in the background. A
    /// failed post is logged; it never changes the approval.
    fn notify_webhook(&self, url: Option<String>, note: serde_json::Value) {
        let Some(url) = url else { return };
        let client = self
            .http
            .get_or_init(|| {
                reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .unwrap_or_default()
            })
            .clone();
        tokio::spawn(async move {
            match client.post(&url).json(&note).send().await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => {
                    tracing::warn!(%url, status = %r.status(), "approval webhook refused the note")
                }
                Err(e) => tracing::warn!(%url, error = %e, "approval webhook unreachable"),
            }
        });
    }
}

/// An approval as the API shows it: the stored row plus what the caller
/// may do with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApprovalView {
    #[serde(flatten)]
    pub approval: ApprovalRecord,
    /// Approving votes so far.
    pub approvals: i64,
    /// For an approver's list: whether this caller may vote on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub may_decide: Option<bool>,
    /// Why not, when `may_decide` is false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why_not: Option<String>,
}

impl ApprovalView {
    fn of(a: ApprovalRecord) -> ApprovalView {
        let approvals = a.votes.iter().filter(|v| v.vote == "approve").count();
        ApprovalView {
            approvals: i64::try_from(approvals).unwrap_or(i64::MAX),
            approval: a,
            may_decide: None,
            why_not: None,
        }
    }
}

/// An approver's vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Vote {
    Approve,
    Reject,
}

impl Vote {
    fn as_str(self) -> &'static str {
        match self {
            Vote::Approve => "approve",
            Vote::Reject => "reject",
        }
    }
}

/// The SHA-256 of an approval's canonical payload: everything approvers saw
/// and everything that must be unchanged for it to run.
pub(crate) fn payload_sha256(tenant: &str, a: &ApprovalRecord) -> String {
    let payload = serde_json::json!({
        "tenant": tenant,
        "kind": a.kind,
        "agent_id": a.agent_id,
        "agent": a.agent,
        "tool": a.tool,
        "version": a.version,
        "component": a.component,
        "action": a.action,
        "input": a.input,
        "import": a.import,
        "policy_version": a.policy_version,
        "required": a.required,
        "created_at": a.created_at,
        "expires_at": a.expires_at,
        "invocation": a.invocation,
    });
    sha256_hex(canonical_json(&payload).as_bytes())
}

/// A fresh approval id.
fn new_id() -> Result<String> {
    let mut b = [0u8; 12];
    getrandom::fill(&mut b).map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
    Ok(format!("apr_{}", hex::encode(b)))
}

/// An audit entry about approval `a`.
fn entry(tenant: &str, kind: &str, actor: &str, a: &ApprovalRecord) -> Entry {
    let mut e = Entry::new(tenant, kind, actor, crate::audit::now_ms());
    e.agent = Some(a.agent.clone());
    e.tool = Some(a.tool.clone());
    e.action = Some(a.action.clone());
    e.correlation = Some(a.correlation.clone());
    e.invocation = Some(a.invocation.clone());
    e.component = Some(a.component.clone());
    e.args_sha256 = Some(sha256_hex(a.input.as_bytes()));
    e.detail = serde_json::json!({
        "approval": a.id,
        "approval_kind": a.kind,
        "payload_sha256": a.payload_sha256,
        "required": a.required,
        "expires_at": a.expires_at,
    });
    e
}

fn add_detail(e: &mut Entry, more: serde_json::Value) {
    if let (serde_json::Value::Object(d), serde_json::Value::Object(m)) = (&mut e.detail, more) {
        d.extend(m);
    }
}

/// The webhook note about `a`.
fn note(tenant: &str, event: &str, a: &ApprovalRecord) -> serde_json::Value {
    serde_json::json!({
        "event": event,
        "tenant": tenant,
        "approval": a.id,
        "kind": a.kind,
        "status": a.status,
        "agent": a.agent,
        "tool": a.tool,
        "action": a.action,
        "reason": a.reason,
        "payload_sha256": a.payload_sha256,
        "expires_at": a.expires_at,
    })
}

/// Everything a new hold records, from the call path.
#[derive(Debug, Clone)]
pub(crate) struct HoldRequest {
    pub kind: &'static str,
    pub session: AgentSession,
    pub data_session: String,
    pub invocation: String,
    pub tool: String,
    pub version: String,
    pub component: String,
    pub action: String,
    pub input: String,
    pub import: Option<serde_json::Value>,
    pub policy_version: i64,
    pub rule: String,
    pub reason: String,
    pub policies: Vec<String>,
}

/// What storing a hold needs, without borrowing the [`Warden`] (a hold
/// inside a call is stored from the wasm call's own task).
#[derive(Clone)]
pub(crate) struct HoldDesk {
    pub store: TenantStore,
    pub audit: Arc<AuditLog>,
    pub hub: Arc<Hub>,
    pub clock: Clock,
    /// This process's node id: it owns the holds it keeps in flight.
    pub node: Arc<str>,
}

impl std::fmt::Debug for HoldDesk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HoldDesk")
            .field("tenant", &self.store.name())
            .finish_non_exhaustive()
    }
}

impl HoldDesk {
    /// Stores a new pending hold of a call the policy decided on `facts`
    /// and records it (`approval.requested`); returns the row.
    pub async fn request(&self, h: HoldRequest, facts: &CallFacts) -> Result<ApprovalRecord> {
        let settings = load_settings(&self.store).await?;
        let now = (self.clock)();
        let mut a = ApprovalRecord {
            id: new_id()?,
            kind: h.kind.to_owned(),
            status: "pending".into(),
            agent_id: h.session.agent_id.clone(),
            agent: h.session.agent.clone(),
            tool: h.tool,
            version: h.version,
            component: h.component,
            action: h.action,
            input: h.input,
            import: h.import,
            policy_version: h.policy_version,
            correlation: h.session.correlation_id.clone(),
            invocation: h.invocation,
            data_session: h.data_session,
            rule: h.rule,
            reason: h.reason,
            policies: h.policies,
            facts: serde_json::to_value(facts)
                .map_err(|e| Error::Internal(format!("encoding the call's facts: {e}")))?,
            required: i64::from(settings.approvals_required),
            created_at: now,
            expires_at: now + settings.approval_ttl_secs,
            payload_sha256: String::new(),
            decided_at: None,
            finished_at: None,
            result: None,
            // A hold inside a call is in flight here from the start.
            owner_node: Some(self.node.to_string()),
            heartbeat_at: Some(now),
            votes: Vec::new(),
        };
        a.payload_sha256 = payload_sha256(self.store.name(), &a);
        self.store.add_approval(&a).await?;
        let mut e = entry(
            self.store.name(),
            "approval.requested",
            &format!("agent:{}", a.agent),
            &a,
        );
        add_detail(
            &mut e,
            serde_json::json!({
                "rule": a.rule,
                "reason": a.reason,
                "policies": a.policies,
                "policy_version": a.policy_version,
                "import": a.import,
            }),
        );
        self.audit.append(&self.store, e, None).await?;
        tracing::info!(approval = %a.id, kind = %a.kind, tool = %a.tool, action = %a.action, "call held for approval");
        self.hub.count("requested", None);
        self.hub.notify_webhook(
            settings.approval_webhook,
            note(self.store.name(), "requested", &a),
        );
        Ok(a)
    }

    /// Moves `a` to `to` (from one of `from`) and records it as `kind` by
    /// `actor`; `false` if someone else moved it first.
    pub async fn transition(
        &self,
        a: &ApprovalRecord,
        from: &[&str],
        to: &str,
        actor: &str,
        detail: serde_json::Value,
        result: Option<&serde_json::Value>,
    ) -> Result<bool> {
        let now = (self.clock)();
        if !self
            .store
            .move_approval(
                &a.id,
                from,
                to,
                now,
                result,
                (to == "executing").then_some(&*self.node),
            )
            .await?
        {
            return Ok(false);
        }
        self.recorded(a, to, actor, detail, Vec::new()).await?;
        Ok(true)
    }

    /// Records that `a` moved to `to` (already stored): the audit entry
    /// (`approval.<to>`, by `actor`, with the voters in `approvals`), the
    /// metrics, the webhook note for a decision, and the waiters' wake-up.
    pub async fn recorded(
        &self,
        a: &ApprovalRecord,
        to: &str,
        actor: &str,
        detail: serde_json::Value,
        approvals: Vec<String>,
    ) -> Result<()> {
        let now = (self.clock)();
        let mut e = entry(self.store.name(), &format!("approval.{to}"), actor, a);
        add_detail(&mut e, detail);
        e.approvals = approvals;
        self.audit.append(&self.store, e, None).await?;
        let decision = matches!(to, "approved" | "rejected" | "expired" | "cancelled");
        self.hub.count(
            to,
            matches!(to, "approved" | "rejected").then_some(now - a.created_at),
        );
        if decision {
            let settings = load_settings(&self.store).await?;
            let mut moved = a.clone();
            moved.status = to.to_owned();
            self.hub.notify_webhook(
                settings.approval_webhook,
                note(self.store.name(), to, &moved),
            );
        }
        self.hub.wake(&a.id);
        if FINAL.contains(&to) {
            self.hub.forget(&a.id);
        }
        Ok(())
    }

    /// Expires `a` if it is still pending past its expiry; `true` if it did.
    async fn expire_if_due(&self, a: &ApprovalRecord) -> Result<bool> {
        if a.status != "pending" || a.expires_at > (self.clock)() {
            return Ok(false);
        }
        self.transition(
            a,
            &["pending"],
            "expired",
            "system",
            serde_json::json!({ "reason": "no decision before the expiry" }),
            None,
        )
        .await
    }

    /// Waits until `id` leaves `pending` (and, when `until_final`, reaches a
    /// final state), the expiry passes, or `max` elapses; returns the row.
    pub async fn wait(&self, id: &str, until_final: bool, max: Duration) -> Result<ApprovalRecord> {
        let notify = self.hub.waiter(id);
        let stop = tokio::time::Instant::now() + max;
        loop {
            let woken = notify.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let a = self.store.approval(id).await?;
            if self.expire_if_due(&a).await? {
                return Ok(self.store.approval(id).await?);
            }
            let done = if until_final {
                FINAL.contains(&a.status.as_str())
            } else {
                a.status != "pending"
            };
            let now = tokio::time::Instant::now();
            if done || now >= stop {
                return Ok(a);
            }
            let expiry_in = Duration::from_secs(
                u64::try_from((a.expires_at - (self.clock)()).max(0)).unwrap_or(0),
            );
            let nap = POLL
                .min(stop - now)
                .min(expiry_in.max(Duration::from_millis(10)));
            tokio::select! {
                () = &mut woken => {}
                () = tokio::time::sleep(nap) => {}
            }
        }
    }
}

/// The mid-call side of [`crate::policies::CallPolicy`]: how an import the
/// policy holds is stored and waited for.
#[derive(Debug, Clone)]
pub(crate) struct ImportHold {
    pub desk: HoldDesk,
    pub base: HoldRequest,
}

impl ImportHold {
    /// Stores the hold for `call`, waits for its decision (bounded by the
    /// expiry), and consumes an approval. `Err((rule, reason))` refuses.
    pub async fn wait(
        self,
        facts: CallFacts,
        call: ImportCall,
        reason: String,
        rule: String,
    ) -> std::result::Result<(), (String, String)> {
        let failed = |e: Error| {
            (
                "approval.store".to_owned(),
                format!("the held call could not be recorded or read, so it is refused: {e}"),
            )
        };
        let mut h = self.base.clone();
        h.kind = "import";
        h.import =
            Some(serde_json::to_value(&call).map_err(|e| failed(Error::Internal(e.to_string())))?);
        h.reason = reason;
        h.rule = rule;
        let a = self.desk.request(h, &facts).await.map_err(failed)?;
        let ttl = Duration::from_secs(u64::try_from(a.expires_at - a.created_at).unwrap_or(0));
        // Past the expiry the wait ends as expired; a little slack lets the
        // expiry itself be recorded.
        let decided = self
            .desk
            .wait(&a.id, false, ttl + Duration::from_secs(2))
            .await
            .map_err(failed)?;
        match decided.status.as_str() {
            "approved" => {
                let consumed = self
                    .desk
                    .transition(
                        &decided,
                        &["approved"],
                        "consumed",
                        "system",
                        serde_json::json!({ "reason": "the suspended call continues" }),
                        None,
                    )
                    .await
                    .map_err(failed)?;
                if consumed {
                    Ok(())
                } else {
                    Err((
                        "approval.consumed".into(),
                        format!("approval {} was already used or aborted", a.id),
                    ))
                }
            }
            "pending" => {
                // Still pending past the wait: expire it now.
                let _ = self.desk.expire_if_due(&decided).await;
                Err((
                    "approval.expired".into(),
                    format!("approval {} was not decided before it expired", a.id),
                ))
            }
            "rejected" => Err((
                "approval.rejected".into(),
                format!(
                    "approval {} was rejected{}",
                    a.id,
                    rejection_comments(&decided)
                ),
            )),
            other => Err((
                format!("approval.{other}"),
                format!(
                    "approval {} is {other}, so the import call is refused",
                    a.id
                ),
            )),
        }
    }
}

/// ": by alice (\"too risky\")" for a rejected approval.
fn rejection_comments(a: &ApprovalRecord) -> String {
    let rejects: Vec<String> = a
        .votes
        .iter()
        .filter(|v| v.vote == "reject")
        .map(|v| {
            if v.comment.is_empty() {
                v.principal.clone()
            } else {
                format!("{} ({:?})", v.principal, v.comment)
            }
        })
        .collect();
    if rejects.is_empty() {
        String::new()
    } else {
        format!(" by {}", rejects.join(", "))
    }
}

impl Warden {
    pub(crate) fn desk(&self, store: &TenantStore) -> HoldDesk {
        HoldDesk {
            store: store.clone(),
            audit: self.audit.clone(),
            hub: self.hub.clone(),
            clock: self.clock.clone(),
            node: self.node.clone(),
        }
    }

    /// The policy set that gives approval authority now, or why no one has
    /// any (no policy in force, or it cannot be read).
    async fn authority(&self, store: &TenantStore) -> Result<Authority> {
        let generation = store.call_generation().await?;
        Ok(match self.policies_in_force(store, generation).await {
            Ok(Some(set)) if !set.is_empty() => Ok(set),
            Ok(_) => Err((
                "approval.authority".into(),
                "no policy is in force, so no one has approval authority (a Cedar `approve` permit names who may decide)".into(),
            )),
            Err(reason) => Err(("policy.store".into(), reason)),
        })
    }

    /// Why principal `p` may not vote on `a`, or `None` if they may: the
    /// agent's owner (unless relaxed), no authority, or no Cedar permit for
    /// `approve`.
    fn why_not(
        &self,
        authority: &Authority,
        p: &crate::Principal,
        a: &ApprovalRecord,
        relaxed: bool,
        owner: Option<&str>,
    ) -> Result<Option<(String, String)>> {
        if let Some(owner) = owner
            && let Err(e) = SeparationRule::ApproveOwnAgent.check(&p.id, owner, relaxed)
        {
            return Ok(Some(("approval.owner".into(), e)));
        }
        let set = match authority {
            Ok(set) => set,
            Err(why) => return Ok(Some(why.clone())),
        };
        let mut facts: CallFacts = serde_json::from_value(a.facts.clone())
            .map_err(|e| Error::Internal(format!("stored facts of approval {}: {e}", a.id)))?;
        facts.now = self.now();
        match set.decide_approver(&p.name, &facts, &a.kind) {
            Verdict::Allow { .. } => Ok(None),
            Verdict::Deny { rule, reason, .. } | Verdict::Hold { rule, reason, .. } => {
                Ok(Some((rule, reason)))
            }
        }
    }

    /// Pending approvals, each marked with whether `caller` may decide it.
    /// Approvers see the ones they may decide (`all` adds the others, marked
    /// why not); viewers see all, read-only.
    pub async fn pending_approvals(&self, caller: &Caller, all: bool) -> Result<Vec<ApprovalView>> {
        let (p, approver) = match self.principal(caller, Operation::DecideApproval) {
            Ok(p) => (p, true),
            Err(_) => (self.principal(caller, Operation::ReadInventory)?, false),
        };
        let store = self.tenant_of(p).await?;
        let settings = load_settings(&store).await?;
        let relaxed = settings.relaxed(SeparationRule::ApproveOwnAgent);
        let mut owners: HashMap<String, String> = HashMap::new();
        for a in store.agents().await? {
            owners.insert(a.id, a.owner_id);
        }
        let authority = self.authority(&store).await?;
        let mut out = Vec::new();
        for a in store.approvals(&["pending"], MAX_LIST).await? {
            if a.expires_at <= self.now() {
                let _ = self.desk(&store).expire_if_due(&a).await;
                continue;
            }
            let mut v = ApprovalView::of(a);
            if approver {
                let owner = owners.get(&v.approval.agent_id).map(String::as_str);
                let why = self.why_not(&authority, p, &v.approval, relaxed, owner)?;
                let voted = v.approval.votes.iter().any(|x| x.principal_id == p.id);
                let why = why
                    .map(|w| w.1)
                    .or_else(|| voted.then(|| "you already voted".to_owned()));
                v.may_decide = Some(why.is_none());
                v.why_not = why;
                if v.may_decide == Some(false) && !all {
                    continue;
                }
            }
            out.push(v);
        }
        Ok(out)
    }

    /// One approval with its votes (approvers and viewers).
    pub async fn approval(&self, caller: &Caller, id: &str) -> Result<ApprovalView> {
        let p = match self.principal(caller, Operation::DecideApproval) {
            Ok(p) => p,
            Err(_) => self.principal(caller, Operation::ReadInventory)?,
        };
        let store = self.tenant_of(p).await?;
        let a = store.approval(id).await?;
        if self.desk(&store).expire_if_due(&a).await? {
            return Ok(ApprovalView::of(store.approval(id).await?));
        }
        Ok(ApprovalView::of(a))
    }

    /// Votes on a pending approval as the authenticated principal. The
    /// approver must hold the role, must not own the agent (unless the tenant
    /// relaxed it), and must be permitted by the tenant's policy (`approve`).
    /// Any reject vetoes; on quorum a held call runs once, here, and its
    /// result is in the returned view.
    pub async fn decide_approval(
        &self,
        caller: &Caller,
        id: &str,
        vote: Vote,
        comment: &str,
    ) -> Result<ApprovalView> {
        let p = self.principal(caller, Operation::DecideApproval)?;
        if comment.len() > 4096 {
            return Err(Error::Invalid("a comment is at most 4096 bytes".into()));
        }
        let store = self.tenant_of(p).await?;
        let desk = self.desk(&store);
        let a = store.approval(id).await?;
        if desk.expire_if_due(&a).await? {
            return Err(Error::Conflict(format!(
                "approval `{id}` expired at {} before this vote; expiry is a rejection",
                a.expires_at
            )));
        }
        if a.status != "pending" {
            return Err(Error::Conflict(format!(
                "approval `{id}` is {}; only a pending approval takes votes",
                a.status
            )));
        }
        let settings = load_settings(&store).await?;
        let owner = store.agent_by_id(&a.agent_id).await?.owner_id;
        let relaxed = settings.relaxed(SeparationRule::ApproveOwnAgent);
        let authority = self.authority(&store).await?;
        if let Some((rule, reason)) = self.why_not(&authority, p, &a, relaxed, Some(&owner))? {
            let mut e = entry(store.name(), "approval.refused", &caller.actor(), &a);
            add_detail(
                &mut e,
                serde_json::json!({ "vote": vote.as_str(), "rule": rule, "reason": reason }),
            );
            self.audit.append(&store, e, None).await?;
            return Err(Error::Forbidden(format!("{reason} [{rule}]")));
        }
        if vote == Vote::Approve {
            let generation = store.call_generation().await?;
            if let Ok(Some(set)) = self.policies_in_force(&store, generation).await
                && set.version() != a.policy_version
            {
                return Err(Error::Conflict(format!(
                    "the policy changed since this call was held (version {} then, {} now), so it cannot be approved; reject it and let the agent call again",
                    a.policy_version,
                    set.version()
                )));
            }
        }
        let v = VoteRecord {
            principal_id: p.id.clone(),
            principal: p.name.clone(),
            vote: vote.as_str().into(),
            comment: comment.to_owned(),
            at: self.now(),
        };
        match store.vote_approval(id, &v).await? {
            VoteOutcome::Expired => {
                desk.recorded(
                    &a,
                    "expired",
                    "system",
                    serde_json::json!({ "reason": "no decision before the expiry" }),
                    Vec::new(),
                )
                .await?;
                Err(Error::Conflict(format!(
                    "approval `{id}` expired before this vote; expiry is a rejection"
                )))
            }
            VoteOutcome::Counted { status, approvals } => {
                let mut e = entry(store.name(), "approval.vote", &caller.actor(), &a);
                add_detail(
                    &mut e,
                    serde_json::json!({
                        "vote": vote.as_str(),
                        "comment": comment,
                        "approvals": approvals,
                    }),
                );
                self.audit.append(&store, e, None).await?;
                if status != "pending" {
                    // The vote moved the row; record the decision it made.
                    let voters: Vec<String> = store
                        .approval(id)
                        .await?
                        .votes
                        .iter()
                        .map(|v| format!("principal:{}", v.principal))
                        .collect();
                    desk.recorded(&a, &status, &caller.actor(), serde_json::json!({}), voters)
                        .await?;
                }
                if status == "approved"
                    && a.kind == "call"
                    && !crate::policies::Faults::on(&self.faults.stop_before_execution)
                {
                    self.execute_approved(&store, id).await?;
                }
                Ok(ApprovalView::of(store.approval(id).await?))
            }
        }
    }

    /// Runs an approved held call once. Claims the row (`approved` →
    /// `executing`); whoever loses the claim does nothing. The call goes
    /// through the whole pipeline again with the stored input; the payload
    /// hash must match the live state. The report is stored on the row.
    pub(crate) async fn execute_approved(&self, store: &TenantStore, id: &str) -> Result<()> {
        let desk = self.desk(store);
        let a = store.approval(id).await?;
        if a.kind != "call"
            || !desk
                .transition(
                    &a,
                    &["approved"],
                    "executing",
                    "system",
                    serde_json::json!({}),
                    None,
                )
                .await?
        {
            return Ok(());
        }
        let report = match self.run_approved(store, &a).await {
            Ok(r) => r,
            Err(e) => {
                // Nothing ran (the pipeline failed before the call); say so.
                let mut r =
                    warden_runtime::Report::new(&a.tool, &a.version, &a.component, &a.action);
                r.outcome = warden_runtime::Outcome::Denied {
                    reason: format!("the approved call could not be run: {e}"),
                    rule: "approval.run".into(),
                };
                r.invocation_id.clone_from(&a.invocation);
                r
            }
        };
        let mut report = report;
        report.approval_id.clone_from(&a.id);
        let outcome = report.outcome.kind().to_owned();
        let mut result = serde_json::to_value(&report)
            .map_err(|e| Error::Internal(format!("encoding the report: {e}")))?;
        if let Some(o) = result.as_object_mut() {
            o.insert("summary".into(), report.outcome.reason().into());
        }
        desk.transition(
            &a,
            &["executing"],
            "executed",
            "system",
            serde_json::json!({
                "outcome": outcome,
                "reason": (!report.outcome.is_ok()).then(|| report.outcome.reason()),
            }),
            Some(&result),
        )
        .await?;
        Ok(())
    }

    /// The approved call through the normal path, as its agent.
    async fn run_approved(
        &self,
        store: &TenantStore,
        a: &ApprovalRecord,
    ) -> Result<warden_runtime::Report> {
        let agent = store.agent_by_id(&a.agent_id).await?;
        let session =
            AgentSession::for_approved(store.name(), &agent, a, store.call_generation().await?);
        if agent.status != crate::AgentStatus::Active {
            let mut r = warden_runtime::Report::new(&a.tool, &a.version, &a.component, &a.action);
            r.outcome = warden_runtime::Outcome::Denied {
                reason: format!("agent `{}` is {} now", agent.name, agent.status),
                rule: "approval.agent".into(),
            };
            r.invocation_id.clone_from(&a.invocation);
            return Ok(r);
        }
        self.run_held(session, a).await
    }

    /// Cancels the agent's own pending approval.
    pub async fn cancel_approval(&self, session: &AgentSession, id: &str) -> Result<ApprovalView> {
        let session = self.recheck(session).await?;
        let store = self.store.tenant(&session.tenant).await?;
        let a = store.approval(id).await.map_err(|_| unknown(id))?;
        if a.agent_id != session.agent_id {
            return Err(unknown(id));
        }
        let desk = self.desk(&store);
        if desk.expire_if_due(&a).await? {
            return Err(Error::Conflict(format!("approval `{id}` already expired")));
        }
        if !desk
            .transition(
                &a,
                &["pending"],
                "cancelled",
                &format!("agent:{}", session.agent),
                serde_json::json!({ "reason": "cancelled by the requesting agent" }),
                None,
            )
            .await?
        {
            let now = store.approval(id).await?;
            return Err(Error::Conflict(format!(
                "approval `{id}` is {}; only a pending approval can be cancelled",
                now.status
            )));
        }
        Ok(ApprovalView::of(store.approval(id).await?))
    }

    /// The agent's own approval, waiting up to `wait` (at most [`MAX_WAIT`])
    /// for it to reach a final state (executed, rejected, expired...).
    pub async fn agent_approval(
        &self,
        session: &AgentSession,
        id: &str,
        wait: Duration,
    ) -> Result<ApprovalView> {
        let session = self.recheck(session).await?;
        let store = self.store.tenant(&session.tenant).await?;
        let a = store.approval(id).await.map_err(|_| unknown(id))?;
        if a.agent_id != session.agent_id {
            return Err(unknown(id));
        }
        let a = self.desk(&store).wait(id, true, wait.min(MAX_WAIT)).await?;
        Ok(ApprovalView::of(a))
    }

    /// The agent's approval that held invocation `invocation`, if any.
    pub async fn approval_of_invocation(
        &self,
        session: &AgentSession,
        invocation: &str,
    ) -> Result<Option<String>> {
        let store = self.store.tenant(&session.tenant).await?;
        Ok(store
            .approval_by_invocation(invocation, &session.agent_id)
            .await?)
    }

    /// After a restart, and then periodically: expires overdue pending
    /// holds, runs approved calls not yet run, and (only at `startup`)
    /// aborts what was in flight when the process stopped: holds inside a
    /// call (the instance is gone) and calls that were executing (their
    /// effect may or may not have happened; they are never re-run).
    pub async fn resume_approvals(&self, startup: bool) -> Result<ResumeReport> {
        let mut out = ResumeReport::default();
        let now = self.now();
        for tenant in self.store.tenant_names().await? {
            let store = self.store.tenant(&tenant).await?;
            let desk = self.desk(&store);
            if self.store.is_postgres() {
                store.heartbeat_approvals(&self.node, now).await?;
            }
            for a in store
                .approvals(&["pending", "approved", "executing"], MAX_LIST)
                .await?
            {
                let in_flight = a.kind == "import" || a.status == "executing";
                // Which in-flight holds are dead: with one process per data
                // directory (SQLite), every one found at start (the process
                // that held it is gone); with several nodes sharing a
                // database, only those whose owner stopped beating (its own
                // are kept alive here).
                let dead = if self.store.is_postgres() {
                    a.owner_node.as_deref() != Some(&*self.node)
                        && a.heartbeat_at
                            .is_none_or(|h| now - h > HEARTBEAT_STALE_SECS)
                } else {
                    startup
                };
                if dead && in_flight {
                    let reason = if a.kind == "import" {
                        "the host restarted while the call waited for this approval; the call was aborted"
                    } else {
                        "the host restarted while the approved call was running; it is not run again"
                    };
                    if desk
                        .transition(
                            &a,
                            &[a.status.as_str()],
                            "aborted",
                            "system",
                            serde_json::json!({ "reason": reason }),
                            None,
                        )
                        .await?
                    {
                        out.aborted.push(a.id.clone());
                    }
                    continue;
                }
                if desk.expire_if_due(&a).await? {
                    out.expired.push(a.id.clone());
                    continue;
                }
                if a.status == "approved" && a.kind == "call" {
                    self.execute_approved(&store, &a.id).await?;
                    out.executed.push(a.id.clone());
                }
            }
        }
        Ok(out)
    }

    /// Approval figures for `/metrics`.
    pub async fn approval_stats(&self) -> ApprovalStats {
        let mut pending = 0;
        if let Ok(names) = self.store.tenant_names().await {
            for t in names {
                if let Ok(store) = self.store.tenant(&t).await
                    && let Ok(n) = store.count_approvals("pending").await
                {
                    pending += n;
                }
            }
        }
        ApprovalStats {
            pending,
            decisions: self
                .hub
                .decisions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
            decide_seconds_sum: self.hub.decide_secs.load(Ordering::Relaxed),
            decide_count: self.hub.decided.load(Ordering::Relaxed),
        }
    }
}

/// The policy set giving approval authority, or (rule, reason) why none.
type Authority = std::result::Result<Arc<warden_policy::cedar::Policies>, (String, String)>;

/// An in-flight hold whose owner has not beaten for this long is taken
/// for dead (its process is gone) and aborted by another node. Owners beat
/// on every `resume_approvals` sweep (every 5 s in `warden serve`).
pub const HEARTBEAT_STALE_SECS: i64 = 30;

/// A fresh node id for this process.
pub(crate) fn new_node_id() -> Result<String> {
    Ok(format!("node_{}", &new_id()?[4..]))
}

fn unknown(id: &str) -> Error {
    Error::NotFound(format!("approval `{id}`"))
}

/// What [`Warden::resume_approvals`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ResumeReport {
    pub executed: Vec<String>,
    pub expired: Vec<String>,
    pub aborted: Vec<String>,
}
