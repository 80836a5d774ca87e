//! The agent side: exchanging a credential for an access token, listing the
//! granted actions, and the path of one call.
//!
//! A call re-checks everything on every call, from the store: the token (not
//! revoked, not expired), the agent (active, not past renewal), the token's
//! tool scope, the live grant (present, unexpired, parses, validates, within
//! the live version's manifest) and the action. Only then is the component
//! loaded and an instance built from that grant alone. Anything that fails on
//! the way is a refusal; nothing runs.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::Instrument as _;
use warden_audit::{Entry, sha256_hex};
use warden_policy::{Classification, Effect, Grant, Manifest};
use warden_runtime::{Backends, Call, Outcome, Report, Tool};
use warden_store::{Payload, TenantStore, TokenRecord};

use crate::governance::parse_manifest;
use crate::keys::{self, KeyKind};
use crate::policies::Faults;
use crate::secrets::TenantSecrets;
use crate::{AgentRecord, AgentStatus, Error, MAX_TOKEN_TTL, Result, Warden};
use warden_policy::cedar::{CallFacts, Verdict};

/// Write `last_active_at` at most this often per agent: activity is a
/// review signal measured in days, not an audit record (the audit trail has
/// every call).
const TOUCH_EVERY_SECS: i64 = 60;

/// A freshly issued access token (shown once).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessToken {
    pub token: String,
    pub tenant: String,
    pub agent: String,
    pub expires_at: i64,
    /// Tools the token is narrowed to; `None` means every granted tool.
    pub tools: Option<Vec<String>>,
}

/// An authenticated agent.
#[derive(Debug, Clone)]
pub struct AgentSession {
    pub tenant: String,
    pub agent_id: String,
    pub agent: String,
    pub tools: Option<Vec<String>>,
    pub expires_at: i64,
    /// The correlation id of the request this session serves (the HTTP
    /// `x-request-id`, or the MCP request); empty means "make one".
    pub correlation_id: String,
    /// The id of the invocation this session runs (the API's invocation id,
    /// also the audit trail's); empty means "make one".
    pub invocation_id: String,
    /// The agent's own session id, for data classification; empty means the
    /// access token is the session.
    pub data_session: String,
    token_hash: String,
    last_active_at: Option<i64>,
    /// The agent's renewal date (checked against the clock on every call).
    renew_by: i64,
    /// The call generation this session was checked at.
    generation: i64,
}

impl AgentSession {
    /// The session an approved held call runs in: the agent's, with the
    /// held call's correlation, invocation and data session.
    pub(crate) fn for_approved(
        tenant: &str,
        agent: &AgentRecord,
        a: &warden_store::ApprovalRecord,
        generation: i64,
    ) -> AgentSession {
        AgentSession {
            tenant: tenant.to_owned(),
            agent_id: agent.id.clone(),
            agent: agent.name.clone(),
            tools: None,
            expires_at: i64::MAX,
            correlation_id: a.correlation.clone(),
            invocation_id: a.invocation.clone(),
            data_session: a.data_session.clone(),
            token_hash: String::new(),
            last_active_at: agent.last_active_at,
            renew_by: agent.renew_by,
            generation,
        }
    }

    /// This session serving the request with this correlation id.
    pub fn correlated(mut self, id: impl Into<String>) -> AgentSession {
        self.correlation_id = id.into();
        self
    }

    /// This session running the invocation with this id.
    pub fn invocation(mut self, id: impl Into<String>) -> AgentSession {
        self.invocation_id = id.into();
        self
    }

    /// This session in the agent's data session `id` (see
    /// [`AgentSession::data_session`]).
    pub fn in_data_session(mut self, id: impl Into<String>) -> AgentSession {
        self.data_session = id.into();
        self
    }
}

/// A fresh correlation id for a call that arrived without one.
fn new_correlation_id() -> String {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        b = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            .to_le_bytes();
    }
    format!("call-{}", hex::encode(b))
}

/// One action an agent may call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrantedAction {
    pub tool: String,
    pub version: String,
    pub action: String,
    pub description: String,
    pub effect: Effect,
    pub classification: Classification,
    pub input_schema: serde_json::Value,
    pub output_schema: serde_json::Value,
}

/// Adds the fields of `more` (an object) to `detail` (an object).
fn merge_detail(detail: &mut serde_json::Value, more: serde_json::Value) {
    if let (serde_json::Value::Object(d), serde_json::Value::Object(m)) = (detail, more) {
        d.extend(m);
    }
}

/// A report for a call refused before anything ran.
fn refused(tool: &str, action: &str, reason: String) -> Report {
    let mut r = Report::new(tool, "", "", action);
    r.outcome = Outcome::NotGranted { reason };
    r
}

/// What resolving a call produced: a runnable grant, or why not.
enum Resolved {
    Run {
        grant: Arc<Grant>,
        tool: Arc<Tool>,
        manifest: Arc<Manifest>,
    },
    Refused(String),
}

impl Warden {
    /// Exchanges an agent's long-lived credential for a short-lived access
    /// token, optionally narrowed to some tools.
    pub async fn exchange_credential(
        &self,
        credential: &str,
        ttl: Option<Duration>,
        tools: Option<Vec<String>>,
    ) -> Result<AccessToken> {
        let Some((KeyKind::Credential, Some(tenant))) = keys::parse(credential) else {
            return Err(Error::Unauthenticated("malformed agent credential".into()));
        };
        let unknown = || Error::Unauthenticated("unknown or revoked agent credential".into());
        let store = self.store.tenant(tenant).await.map_err(|_| unknown())?;
        let agent_id = store
            .credential_agent(&warden_store::hash_secret(credential))
            .await?
            .ok_or_else(unknown)?;
        let agent = store.agent_by_id(&agent_id).await?;
        self.check_agent(&store, &agent).await?;
        let ttl = ttl.unwrap_or(self.token_ttl);
        if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
            return Err(Error::Invalid(format!(
                "token lifetime must be between 1 s and {} s",
                MAX_TOKEN_TTL.as_secs()
            )));
        }
        if let Some(t) = &tools
            && t.is_empty()
        {
            return Err(Error::Invalid(
                "a token narrowed to no tool could call nothing; leave the tool list out for all granted tools".into(),
            ));
        }
        let token = keys::generate(KeyKind::AccessToken, Some(tenant))?;
        let now = self.now();
        let expires_at = now + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2);
        store
            .add_token(
                &warden_store::hash_secret(&token),
                &TokenRecord {
                    agent_id: agent.id.clone(),
                    tools: tools.clone(),
                    issued_at: now,
                    expires_at,
                    revoked_at: None,
                },
                &agent.name,
            )
            .await?;
        Ok(AccessToken {
            token,
            tenant: tenant.to_owned(),
            agent: agent.name,
            expires_at,
            tools,
        })
    }

    /// The same session, checked again now (token and agent).
    pub(crate) async fn recheck(&self, session: &AgentSession) -> Result<AgentSession> {
        self.session(&session.tenant, &session.token_hash).await
    }

    /// Authenticates an access token.
    pub async fn authenticate_agent(&self, token: &str) -> Result<AgentSession> {
        let Some((KeyKind::AccessToken, Some(tenant))) = keys::parse(token) else {
            return Err(Error::Unauthenticated("malformed access token".into()));
        };
        self.session(tenant, &warden_store::hash_secret(token))
            .await
    }

    async fn session(&self, tenant: &str, token_hash: &str) -> Result<AgentSession> {
        let unknown = || Error::Unauthenticated("unknown access token".into());
        let store = self.store.tenant(tenant).await.map_err(|_| unknown())?;
        // Read before anything else: whatever is read next is at least this new.
        let generation = store.call_generation().await?;
        let now = self.now();
        if let Some(s) = self.cache.session(tenant, generation, token_hash)
            && s.expires_at > now
            && s.renew_by > now
        {
            return Ok(s);
        }
        let record = store.token(token_hash).await?.ok_or_else(unknown)?;
        if record.revoked_at.is_some() {
            return Err(Error::Unauthenticated("access token revoked".into()));
        }
        if record.expires_at <= self.now() {
            return Err(Error::Unauthenticated(
                "access token expired; exchange the credential for a new one".into(),
            ));
        }
        let agent = store.agent_by_id(&record.agent_id).await?;
        self.check_agent(&store, &agent).await?;
        let session = AgentSession {
            tenant: tenant.to_owned(),
            agent_id: agent.id,
            agent: agent.name,
            tools: record.tools,
            expires_at: record.expires_at,
            correlation_id: String::new(),
            invocation_id: String::new(),
            data_session: String::new(),
            token_hash: token_hash.to_owned(),
            last_active_at: agent.last_active_at,
            renew_by: agent.renew_by,
            generation,
        };
        self.cache
            .put_session(tenant, generation, token_hash, &session);
        Ok(session)
    }

    /// Refuses an agent that is not active, suspending it on the spot when its
    /// renewal date has passed.
    async fn check_agent(&self, store: &TenantStore, agent: &AgentRecord) -> Result<()> {
        if agent.status != AgentStatus::Active {
            return Err(Error::Forbidden(format!(
                "agent `{}` is {}",
                agent.name, agent.status
            )));
        }
        let now = self.now();
        if agent.renew_by <= now {
            store
                .set_agent_status(
                    &agent.id,
                    AgentStatus::Suspended,
                    "renewal date passed",
                    "system",
                    now,
                )
                .await?;
            return Err(Error::Forbidden(format!(
                "agent `{}` passed its renewal date and is suspended",
                agent.name
            )));
        }
        Ok(())
    }

    /// The actions the agent may call now: every action of every tool with a
    /// live, unexpired grant (and within the token's tool scope).
    pub async fn granted_actions(&self, session: &AgentSession) -> Result<Vec<GrantedAction>> {
        let session = self.session(&session.tenant, &session.token_hash).await?;
        let store = self.store.tenant(&session.tenant).await?;
        let mut out = Vec::new();
        for g in store.grants(Some(&session.agent_id), false).await? {
            match self.resolve(&store, &session, &g.tool).await? {
                Resolved::Refused(_) => continue,
                Resolved::Run {
                    grant,
                    tool,
                    manifest,
                } => {
                    for a in &tool.info().actions {
                        if !grant.allows_action(&a.name) {
                            continue;
                        }
                        let classification = manifest
                            .actions
                            .iter()
                            .find(|m| m.name == a.name)
                            .map_or(Classification::Restricted, |m| m.classification);
                        out.push(GrantedAction {
                            tool: g.tool.clone(),
                            version: tool.info().version.clone(),
                            action: a.name.clone(),
                            description: a.description.clone(),
                            effect: a.effect,
                            classification,
                            input_schema: a.input_schema.clone(),
                            output_schema: a.output_schema.clone(),
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// Runs one action for an agent. Authentication problems are errors;
    /// everything about the call itself (not granted, denied, limits, tool
    /// errors) is an outcome in the report.
    pub async fn invoke(
        &self,
        session: &AgentSession,
        tool: &str,
        action: &str,
        input: &str,
    ) -> Result<Report> {
        let session = self
            .session(&session.tenant, &session.token_hash)
            .await?
            .correlated(session.correlation_id.clone())
            .invocation(session.invocation_id.clone())
            .in_data_session(session.data_session.clone());
        self.invoke_authenticated(&session, tool, action, input)
            .await
    }

    /// Runs one action for a session that this same request has just
    /// authenticated, without checking it again. Anything that keeps a session
    /// across calls (an MCP stdio connection) must use [`Warden::invoke`],
    /// which re-checks token and agent on every call.
    pub async fn invoke_authenticated(
        &self,
        session: &AgentSession,
        tool: &str,
        action: &str,
        input: &str,
    ) -> Result<Report> {
        let mut session = session.clone();
        if session.correlation_id.is_empty() {
            session.correlation_id = new_correlation_id();
        }
        let span = tracing::info_span!(
            "call",
            correlation_id = %session.correlation_id,
            tenant = %session.tenant,
            agent = %session.agent,
            tool,
            action
        );
        let cid = session.correlation_id.clone();
        let mut report = self
            .run_call(session, tool, action, input, None)
            .instrument(span)
            .await?;
        report.correlation_id = cid;
        Ok(report)
    }

    /// Runs an approved held call (`a`) in `session`, through the whole
    /// pipeline; the approval stands in for the policy's Hold, and only for
    /// exactly the payload approved.
    pub(crate) async fn run_held(
        &self,
        session: AgentSession,
        a: &warden_store::ApprovalRecord,
    ) -> Result<Report> {
        let span = tracing::info_span!(
            "approved_call",
            correlation_id = %session.correlation_id,
            tenant = %session.tenant,
            agent = %session.agent,
            tool = %a.tool,
            action = %a.action,
            approval = %a.id,
        );
        let cid = session.correlation_id.clone();
        let mut report = self
            .run_call(session, &a.tool, &a.action, &a.input, Some(a))
            .instrument(span)
            .await?;
        report.correlation_id = cid;
        Ok(report)
    }

    async fn run_call(
        &self,
        session: AgentSession,
        tool: &str,
        action: &str,
        input: &str,
        approved: Option<&warden_store::ApprovalRecord>,
    ) -> Result<Report> {
        let store = self.store.tenant(&session.tenant).await?;
        // Links this call's decided and finished entries.
        let invocation = if session.invocation_id.is_empty() {
            new_correlation_id().replacen("call-", "inv_", 1)
        } else {
            session.invocation_id.clone()
        };
        let entry = |kind: &str| {
            let mut e = Entry::new(
                &session.tenant,
                kind,
                &format!("agent:{}", session.agent),
                crate::audit::now_ms(),
            );
            e.agent = Some(session.agent.clone());
            e.tool = Some(tool.to_owned());
            e.action = Some(action.to_owned());
            e.correlation = Some(session.correlation_id.clone());
            e.invocation = Some(invocation.clone());
            e.args_sha256 = Some(sha256_hex(input.as_bytes()));
            e
        };
        let resolved = match self.resolve(&store, &session, tool).await? {
            Resolved::Run { grant, .. } if !grant.allows_action(action) => Resolved::Refused(
                format!("action `{action}` of tool `{tool}` is not in the grant"),
            ),
            r => r,
        };
        let (grant, component, manifest) = match resolved {
            Resolved::Refused(reason) => {
                tracing::info!(%reason, "call refused");
                let mut e = entry("invocation.decided");
                e.decision = Some("deny".into());
                e.rule = Some("grant".into());
                e.detail = serde_json::json!({ "reason": reason });
                self.audit
                    .append(&store, e, Some(Payload::input(input)))
                    .await?;
                return Ok(refused(tool, action, reason));
            }
            Resolved::Run {
                grant,
                tool,
                manifest,
            } => (grant, tool, manifest),
        };
        // The decided entry of a call the pipeline stops before it runs.
        let refusal = || {
            let mut e = entry("invocation.decided");
            e.component = Some(component.hash_hex());
            e
        };
        // The guard pipeline, cheapest check first; the first that does not
        // allow decides, and nothing runs. Input first: size, JSON, schema.
        let schema_checked = if Faults::on(&self.faults.schema) {
            Err(Outcome::Denied {
                reason: format!(
                    "the input schema of `{action}` cannot be compiled (injected fault), so the input cannot be checked"
                ),
                rule: "guard.input_schema".into(),
            })
        } else {
            component.check_input(action, input)
        };
        let args = match schema_checked {
            Ok(v) => v,
            Err(outcome) => {
                let rule = match &outcome {
                    Outcome::Denied { rule, .. } => rule.clone(),
                    Outcome::UnknownAction { .. } => "guard.action".into(),
                    _ => "guard.input_schema".into(),
                };
                return self
                    .refuse_call(&store, refusal(), &rule, outcome, input)
                    .await;
            }
        };
        // Data classification: an action that sends data out may not run in a
        // session that has read data above its destination's tier.
        let data_session = (
            session.tenant.clone(),
            session.agent_id.clone(),
            if session.data_session.is_empty() {
                format!("token:{}", session.token_hash)
            } else {
                session.data_session.clone()
            },
        );
        // What the session did so far: in this process's memory, or (several
        // nodes) in the database. Unreadable means unknown: deny.
        let session_facts = if self.store.is_postgres() {
            match crate::sessions::shared_facts(&store, &data_session).await {
                Ok(f) => f,
                Err(e) => {
                    return self
                        .deny_call(
                            &store,
                            refusal(),
                            "guard.classification",
                            format!(
                                "the session's data classification cannot be read ({e}), so what this call may send cannot be checked"
                            ),
                            input,
                        )
                        .await;
                }
            }
        } else {
            self.sessions.facts(&data_session)
        };
        // What a hold of this call would record (and what an approval of it
        // must match).
        let hold_base = |policy_version: i64| crate::approvals::HoldRequest {
            kind: "call",
            session: session.clone(),
            data_session: data_session.2.clone(),
            invocation: invocation.clone(),
            tool: tool.to_owned(),
            version: component.info().version.clone(),
            component: component.hash_hex(),
            action: action.to_owned(),
            input: input.to_owned(),
            import: None,
            policy_version,
            rule: String::new(),
            reason: String::new(),
            policies: Vec::new(),
        };
        let declared = manifest.actions.iter().find(|a| a.name == action);
        // The refusal stands unless the tenant's policy holds the call for
        // approval instead (decided below, once the policy has run).
        let mut classification_refusal = None;
        if let Some(dest) = declared.and_then(|a| a.sends_to) {
            let tier = session_facts.tier.unwrap_or(Classification::Public);
            if tier > dest {
                let reason = format!(
                    "data classification: this session has read {} data, and `{action}` sends data to a {} destination",
                    tier.as_str(),
                    dest.as_str()
                );
                let mut e = refusal();
                e.detail = serde_json::json!({ "session_tier": tier.as_str(), "destination": dest.as_str() });
                classification_refusal = Some((e, reason));
            }
        }
        let reads = declared.map_or(Classification::Restricted, |a| a.classification);
        // Rates, quotas and the fuel budget: counted at admission, before
        // anything runs; a refusal is recorded with the rule that made it.
        let counter_key = (
            session.tenant.clone(),
            session.agent_id.clone(),
            tool.to_owned(),
        );
        let effect = component
            .info()
            .action(action)
            .map_or(warden_policy::Effect::External, |a| a.effect);
        let admitted = if Faults::on(&self.faults.counters) {
            Err((
                "guard.counters",
                "the counters cannot count (injected fault), so rates and quotas cannot be checked"
                    .to_owned(),
            ))
        } else if self.store.is_postgres() {
            crate::counters::admit_shared(
                &store,
                &counter_key,
                action,
                effect,
                &grant.rate.unwrap_or_default(),
                self.now(),
            )
            .await
            .unwrap_or_else(|e| {
                Err((
                    "guard.counters",
                    format!("the shared counters cannot be read ({e}), so rates and quotas cannot be checked"),
                ))
            })
        } else {
            self.counters.admit(
                &counter_key,
                action,
                effect,
                &grant.rate.unwrap_or_default(),
                self.now(),
            )
        };
        let usage = match admitted {
            Ok(u) => u,
            Err((rule, reason)) => {
                return self.deny_call(&store, refusal(), rule, reason, input).await;
            }
        };
        // The tenant's Cedar policy, with everything it may look at.
        let policy_set = match self.policies_in_force(&store, session.generation).await {
            Ok(set) => set.filter(|s| !s.is_empty()),
            Err(reason) => {
                return self
                    .deny_call(&store, refusal(), "policy.store", reason, input)
                    .await;
            }
        };
        // An approved held call runs only on exactly the payload approved:
        // same tool version and component, same input, same policy version.
        if let Some(a) = approved {
            let live = crate::approvals::payload_sha256(
                &session.tenant,
                &warden_store::ApprovalRecord {
                    version: component.info().version.clone(),
                    component: component.hash_hex(),
                    policy_version: policy_set.as_ref().map_or(0, |s| s.version()),
                    input: input.to_owned(),
                    agent_id: session.agent_id.clone(),
                    tool: tool.to_owned(),
                    action: action.to_owned(),
                    ..a.clone()
                },
            );
            let stored = crate::approvals::payload_sha256(&session.tenant, a);
            if live != a.payload_sha256 || stored != a.payload_sha256 {
                let mut what = Vec::new();
                if stored != a.payload_sha256 {
                    what.push("the stored request no longer matches its hash".to_owned());
                }
                if component.hash_hex() != a.component || component.info().version != a.version {
                    what.push(format!(
                        "tool `{tool}` is now version {} (approved: {})",
                        component.info().version,
                        a.version
                    ));
                }
                let pv = policy_set.as_ref().map_or(0, |s| s.version());
                if pv != a.policy_version {
                    what.push(format!(
                        "the policy is now version {pv} (approved: {})",
                        a.policy_version
                    ));
                }
                if what.is_empty() {
                    what.push("the call differs from the approved one".into());
                }
                let mut e = refusal();
                e.detail =
                    serde_json::json!({ "approval": a.id, "payload_sha256": a.payload_sha256 });
                return self
                    .deny_call(
                        &store,
                        e,
                        "approval.payload",
                        format!(
                            "approval {} does not match this call, so it is refused: {}",
                            a.id,
                            what.join("; ")
                        ),
                        input,
                    )
                    .await;
            }
        }
        let mut decided_by = ("grant", serde_json::Value::Null);
        let call_policy = match policy_set {
            None => {
                if let Some((e, reason)) = classification_refusal.take() {
                    return self
                        .deny_call(&store, e, "guard.classification", reason, input)
                        .await;
                }
                None
            }
            Some(set) => {
                let facts = CallFacts {
                    tenant: session.tenant.clone(),
                    env: self.env.clone(),
                    agent: session.agent.clone(),
                    tool: tool.to_owned(),
                    version: component.info().version.clone(),
                    action: action.to_owned(),
                    effect,
                    classification: reads,
                    sends_to: declared.and_then(|a| a.sends_to),
                    args,
                    now: self.now(),
                    usage,
                    session: session_facts.clone(),
                };
                let verdict = set.decide(&facts, None);
                let detail = serde_json::json!({
                    "policy_version": set.version(),
                    "policies": verdict.policies(),
                });
                // A classification refusal is a Deny unless policy holds it.
                let verdict = match (classification_refusal.take(), verdict) {
                    (None, v) => v,
                    (
                        Some((_, reason)),
                        Verdict::Hold {
                            rule,
                            reason: why,
                            policies,
                        },
                    ) => Verdict::Hold {
                        rule,
                        reason: format!("{reason}; {why}"),
                        policies,
                    },
                    (Some((mut e, reason)), _) => {
                        merge_detail(&mut e.detail, detail);
                        return self
                            .deny_call(&store, e, "guard.classification", reason, input)
                            .await;
                    }
                };
                let import_hold = crate::approvals::ImportHold {
                    desk: self.desk(&store),
                    base: hold_base(set.version()),
                };
                let verdict = match (verdict, approved) {
                    // The approval releases exactly this hold.
                    (Verdict::Hold { policies, .. }, Some(a)) => {
                        decided_by = (
                            "approval",
                            serde_json::json!({
                                "policy_version": set.version(),
                                "policies": policies,
                                "approval": a.id,
                                "payload_sha256": a.payload_sha256,
                            }),
                        );
                        Verdict::Allow {
                            policies: Vec::new(),
                        }
                    }
                    (v, _) => v,
                };
                match verdict {
                    Verdict::Allow { .. } => {
                        if decided_by.0 != "approval" {
                            decided_by = ("policy", detail);
                        }
                        Some(Arc::new(crate::policies::CallPolicy {
                            set,
                            facts,
                            hold: Some(import_hold),
                        }))
                    }
                    Verdict::Deny { rule, reason, .. } => {
                        let mut e = refusal();
                        e.detail = detail;
                        return self.deny_call(&store, e, &rule, reason, input).await;
                    }
                    Verdict::Hold {
                        rule,
                        reason,
                        policies,
                    } => {
                        // The hold is a durable request first; then the
                        // decision is recorded and answered. Nothing runs.
                        let mut h = import_hold.base;
                        h.rule.clone_from(&rule);
                        h.reason.clone_from(&reason);
                        h.policies = policies;
                        let a = match import_hold.desk.request(h, &facts).await {
                            Ok(a) => a,
                            Err(e) => {
                                let mut d = refusal();
                                d.detail = detail;
                                return self
                                    .deny_call(
                                        &store,
                                        d,
                                        "approval.store",
                                        format!("the call needs approval, but the request could not be stored, so it is refused: {e}"),
                                        input,
                                    )
                                    .await;
                            }
                        };
                        let mut e = refusal();
                        e.detail = detail;
                        merge_detail(
                            &mut e.detail,
                            serde_json::json!({ "approval": a.id, "payload_sha256": a.payload_sha256, "expires_at": a.expires_at }),
                        );
                        e.decision = Some("hold".into());
                        let outcome = Outcome::Held {
                            reason: format!(
                                "{reason}; approval {} is pending until {}",
                                a.id, a.expires_at
                            ),
                            rule: rule.clone(),
                        };
                        let mut r = self.refuse_call(&store, e, &rule, outcome, input).await?;
                        r.approval_id = a.id;
                        return Ok(r);
                    }
                }
            }
        };
        // Write-ahead: when the grant gives the call any capability (a way to
        // act outside the sandbox), its decision is durable before anything
        // runs. A call with no capability has no effect to hold back: its
        // decision is committed together with its completion (one sync), and
        // both are durable before the answer.
        let effects = !grant.capabilities().is_empty();
        let mut decided = entry("invocation.decided");
        decided.decision = Some("allow".into());
        decided.rule = Some(decided_by.0.into());
        decided.component = Some(component.hash_hex());
        decided.detail = serde_json::json!({
            "capabilities": grant.capabilities().iter().map(ToString::to_string).collect::<Vec<_>>(),
            "version": component.info().version,
        });
        merge_detail(&mut decided.detail, decided_by.1);
        let decided_rx = self
            .audit
            .enqueue(&store, decided, Some(Payload::input(input)))
            .await?;
        let (decided_seq, decided_rx) = if effects {
            (Some(crate::audit::durable(decided_rx).await?), None)
        } else {
            (None, Some(decided_rx))
        };
        let mut template = entry("import.decided");
        template.component = Some(component.hash_hex());
        let backends = Backends {
            kv: self.kv_of(&session.tenant),
            secrets: Arc::new(TenantSecrets {
                dir: self.data_dir.join("secrets").join(&session.tenant),
            }),
            write_ahead: Some(self.audit.write_ahead(&store, template)),
            policy: call_policy.map(|p| p as Arc<dyn warden_runtime::ImportPolicy>),
        };
        let mut report = self
            .runtime
            .invoke(&component, grant, &backends, Call { action, input })
            .await;
        if report.outcome.is_ok() {
            let tool_action = format!("{tool}/{action}");
            if !self.store.is_postgres() {
                self.sessions
                    .read(&data_session, &tool_action, reads, self.now());
            } else if let Err(e) = crate::sessions::record_shared(
                &store,
                &data_session,
                &tool_action,
                reads,
                self.now(),
            )
            .await
            {
                // Unrecorded, the session could send what this call read
                // through another node: the answer is withheld.
                tracing::error!(error = %e, "could not record the session's data classification; answer withheld");
                report.outcome = Outcome::Denied {
                    reason: format!(
                        "the call ran, but the classification of what it read could not be recorded ({e}), so its answer is withheld"
                    ),
                    rule: "guard.classification.store".into(),
                };
                report.output = None;
            }
        }
        if self.store.is_postgres() {
            if let Err(e) =
                crate::counters::burned_shared(&store, &counter_key, report.fuel_used, self.now())
                    .await
            {
                // The call has run; its fuel goes uncounted (the budget is
                // checked again on the next call). Said loudly.
                tracing::error!(error = %e, "could not add burned fuel to the shared counters");
            }
        } else {
            self.counters
                .burned(&counter_key, report.fuel_used, self.now());
        }
        // The answer goes out only once its completion entry is durable.
        let mut finished = entry("invocation.finished");
        finished.component = Some(report.component_sha256.clone());
        finished.decision = Some(report.outcome.kind().to_owned());
        if let Outcome::Denied { rule, .. } = &report.outcome {
            finished.rule = Some(rule.clone());
        }
        finished.fuel = Some(report.fuel_used);
        finished.elapsed_us = Some(report.elapsed_us);
        let output = report.output.as_ref().map(ToString::to_string);
        finished.result_sha256 = output.as_deref().map(|o| sha256_hex(o.as_bytes()));
        // The import journal is kept with the payloads; its digest is in the
        // signed entry, so a replay can trust it only as far as the chain.
        let journal = report
            .journal
            .take()
            .and_then(|j| serde_json::to_string(&j).ok());
        finished.detail = serde_json::json!({
            "decided": decided_seq,
            "reason": (!report.outcome.is_ok()).then(|| report.outcome.reason()),
            "imports": report.imports,
            "logs_dropped": report.logs_dropped,
            "stdio_dropped": report.stdio_dropped,
            "journal_sha256": journal.as_deref().map(|j| sha256_hex(j.as_bytes())),
            "injection_markers": report.injection_markers,
            "secrets_redacted": report.secrets_redacted,
        });
        let payload = Payload {
            input: None,
            output,
            journal,
        };
        let finished_rx = self.audit.enqueue(&store, finished, Some(payload)).await?;
        if let Some(rx) = decided_rx {
            crate::audit::durable(rx).await?;
        }
        crate::audit::durable(finished_rx).await?;
        self.touch(&store, &session).await;
        report.invocation_id = invocation;
        Ok(report)
    }

    /// Refuses a call by a guardrail before it runs: records the decision
    /// (`decided`, filled with the call's ids) with `rule` and `reason`, and
    /// answers with the denial.
    async fn deny_call(
        &self,
        store: &TenantStore,
        decided: Entry,
        rule: &str,
        reason: String,
        input: &str,
    ) -> Result<Report> {
        let outcome = Outcome::Denied {
            reason,
            rule: rule.into(),
        };
        self.refuse_call(store, decided, rule, outcome, input).await
    }

    /// Records a call the guard pipeline stopped before it ran (decision
    /// `deny` unless `decided` already says, e.g. `hold`) and answers with
    /// `outcome`.
    async fn refuse_call(
        &self,
        store: &TenantStore,
        mut decided: Entry,
        rule: &str,
        outcome: Outcome,
        input: &str,
    ) -> Result<Report> {
        let reason = match &outcome {
            Outcome::Denied { reason, .. } | Outcome::Held { reason, .. } => reason.clone(),
            other => other.reason(),
        };
        tracing::info!(%reason, rule, "call stopped by a guardrail");
        if decided.decision.is_none() {
            decided.decision = Some("deny".into());
        }
        decided.rule = Some(rule.into());
        if let serde_json::Value::Object(m) = &mut decided.detail {
            m.insert("reason".into(), reason.into());
        } else {
            decided.detail = serde_json::json!({ "reason": reason });
        }
        self.audit
            .append(store, decided.clone(), Some(Payload::input(input)))
            .await?;
        let mut r = refused(
            decided.tool.as_deref().unwrap_or_default(),
            decided.action.as_deref().unwrap_or_default(),
            String::new(),
        );
        r.outcome = outcome;
        r.invocation_id = decided.invocation.unwrap_or_default();
        Ok(r)
    }

    /// Records activity, at most once a minute per agent. A failure here does
    /// not fail the call that already ran; it is logged.
    async fn touch(&self, store: &TenantStore, session: &AgentSession) {
        let now = self.now();
        let stale = self.cache.should_touch(
            &session.agent_id,
            session.last_active_at,
            now,
            TOUCH_EVERY_SECS,
        );
        if stale && let Err(e) = store.touch_agent(&session.agent_id, now).await {
            tracing::warn!(error = %e, agent = %session.agent, "cannot record agent activity");
        }
    }

    /// Resolves the grant and component of a call, from the store, now.
    async fn resolve(
        &self,
        store: &TenantStore,
        session: &AgentSession,
        tool: &str,
    ) -> Result<Resolved> {
        if let Some(scope) = &session.tools
            && !scope.iter().any(|t| t == tool)
        {
            return Ok(Resolved::Refused(format!(
                "this access token is narrowed to {} and does not cover tool `{tool}`",
                scope.join(", ")
            )));
        }
        if let Some(r) =
            self.cache
                .resolved(&session.tenant, session.generation, &session.agent_id, tool)
            && r.grant_expires_at > self.now()
        {
            return Ok(Resolved::Run {
                grant: r.grant,
                tool: r.tool,
                manifest: r.manifest,
            });
        }
        let Some(stored) = store.live_grant(&session.agent_id, tool).await? else {
            return Ok(Resolved::Refused(format!(
                "agent `{}` has no grant on tool `{tool}`",
                session.agent
            )));
        };
        if stored.expires_at <= self.now() {
            return Ok(Resolved::Refused(format!(
                "the grant of agent `{}` on tool `{tool}` expired",
                session.agent
            )));
        }
        let grant: Grant = match serde_json::from_str(&stored.spec) {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(grant = %stored.id, error = %e, "stored grant does not parse");
                return Ok(Resolved::Refused(
                    "the stored grant is unreadable; ask a deployer to grant again".into(),
                ));
            }
        };
        if let Err(e) = grant.validate() {
            return Ok(Resolved::Refused(format!(
                "the stored grant is invalid: {e}"
            )));
        }
        let Some(live) = store.live_version(tool).await? else {
            return Ok(Resolved::Refused(format!(
                "tool `{tool}` has no deployed version"
            )));
        };
        let manifest = parse_manifest(&live)?;
        if let Err(e) = manifest.check_grant(&grant) {
            return Ok(Resolved::Refused(format!(
                "the grant no longer fits live version {} of `{tool}`: {e}",
                live.version
            )));
        }
        let component = self.component(store, &live.sha256).await?;
        let resolved = crate::cache::Resolved {
            grant: Arc::new(grant),
            tool: component,
            manifest: Arc::new(manifest),
            grant_expires_at: stored.expires_at,
        };
        self.cache.put_resolved(
            &session.tenant,
            session.generation,
            &session.agent_id,
            tool,
            &resolved,
        );
        Ok(Resolved::Run {
            grant: resolved.grant,
            tool: resolved.tool,
            manifest: resolved.manifest,
        })
    }

    /// The loaded component with this hash: from memory, else from the store
    /// (hash re-checked) through the runtime's compile cache.
    pub(crate) async fn component(&self, store: &TenantStore, sha256: &str) -> Result<Arc<Tool>> {
        if let Some(t) = self.lock_tools().get(sha256) {
            return Ok(t.clone());
        }
        let bytes = store.blob(sha256).await?;
        let tool = self
            .runtime
            .load(&bytes)
            .await
            .map_err(|e| Error::Internal(format!("loading stored component {sha256}: {e}")))?;
        self.lock_tools().insert(sha256.to_owned(), tool.clone());
        Ok(tool)
    }

    pub(crate) fn lock_tools(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Arc<Tool>>> {
        self.tools
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
