//! The tenant's Cedar policy: upload (validated, versioned), reading, the
//! compiled set in force (cached per call generation), the import-call hook,
//! and `policy test`.
//!
//! Invariants: an upload that does not compile is refused and the version in
//! force stays; a stored set that cannot be read or compiled denies every
//! call (`policy.store`); an empty set means no policy layer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use warden_audit::sha256_hex;
use warden_policy::cedar::{CallFacts, Policies, SessionFacts, Usage, Verdict};
use warden_policy::{Classification, Decision, Grant, ImportCall, Operation};
use warden_runtime::{HoldWait, ImportPolicy, ImportVerdict};
use warden_store::{PolicyRecord, TenantStore};

use crate::{Caller, Error, Result, Warden};

/// Failures a test can inject to show each check fails closed. Setting one
/// can only make calls fail (deny), never allow; nothing outside the Rust
/// API can reach it.
#[derive(Debug, Default)]
pub struct Faults {
    /// Reading the tenant's policy set fails.
    pub policy_store: AtomicBool,
    /// The counters cannot count.
    pub counters: AtomicBool,
    /// The action's input schema cannot be compiled.
    pub schema: AtomicBool,
    /// The process "stops" right after an approval reaches quorum, before
    /// the approved call runs (the call then runs on the next
    /// [`Warden::resume_approvals`], as after a real restart).
    pub stop_before_execution: AtomicBool,
}

impl Faults {
    pub(crate) fn on(flag: &AtomicBool) -> bool {
        flag.load(Ordering::Relaxed)
    }
}

/// A tenant's compiled set (`None`: no policy layer) at a call generation,
/// with the SHA-256 of its text (empty for none).
type Cached = (i64, String, Option<Arc<Policies>>);

/// Compiled policy sets by tenant, valid for one call generation.
#[derive(Debug, Default)]
pub(crate) struct PolicyCache {
    sets: Mutex<HashMap<String, Cached>>,
}

/// A hypothetical call for `policy test`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyTest {
    pub agent: String,
    pub tool: String,
    pub action: String,
    /// The call's arguments (default `{}`).
    #[serde(default)]
    pub args: Option<serde_json::Value>,
    /// An import call to decide instead of the invocation.
    #[serde(default)]
    pub import: Option<ImportCall>,
    /// The data session's tier so far (default: none read).
    #[serde(default)]
    pub session_tier: Option<Classification>,
    /// Counters before the call (default zero).
    #[serde(default)]
    pub usage: Option<Usage>,
    /// The time, Unix seconds (default now).
    #[serde(default)]
    pub now: Option<i64>,
    /// A candidate policy text to test instead of the one in force.
    #[serde(default)]
    pub policy: Option<String>,
}

/// What `policy test` decided, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyExplanation {
    /// `allow`, `deny` or `hold`.
    pub decision: String,
    /// What decided: `grant`, `policy`, `policy.default`, `policy.hold`,
    /// `policy.error`...
    pub rule: String,
    pub reason: String,
    pub policies: Vec<String>,
    /// The version tested (`None`: a candidate text, or no policy set).
    pub policy_version: Option<i64>,
    /// The request context the policies saw.
    pub facts: Option<CallFacts>,
}

impl Warden {
    /// Injectable failures (tests only; see [`Faults`]).
    #[doc(hidden)]
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Uploads a new policy set. It is compiled and validated against the
    /// schema first; an invalid set is refused and the one in force stays.
    pub async fn set_policy(&self, caller: &Caller, text: &str) -> Result<PolicyRecord> {
        let p = self.principal(caller, Operation::SetPolicy)?;
        let store = self.tenant_of(p).await?;
        let compiled = Policies::compile(text, 0).map_err(|e| {
            Error::Invalid(format!("policy refused, the version in force stays: {e}"))
        })?;
        let sha = sha256_hex(text.as_bytes());
        let version = store
            .add_policy(text, &sha, &caller.actor(), self.now())
            .await?;
        tracing::info!(version, policies = compiled.len(), "policy set");
        store
            .policy(Some(version))
            .await?
            .ok_or_else(|| Error::Internal(format!("policy version {version} vanished")))
    }

    /// A stored policy version (`None`: the one in force). `Ok(None)`: no
    /// policy was ever set.
    pub async fn policy(
        &self,
        caller: &Caller,
        version: Option<i64>,
    ) -> Result<Option<PolicyRecord>> {
        let p = self.principal(caller, Operation::ReadInventory)?;
        let store = self.tenant_of(p).await?;
        match store.policy(version).await? {
            None if version.is_some() => Err(Error::NotFound(format!(
                "policy version {}",
                version.unwrap_or_default()
            ))),
            r => Ok(r),
        }
    }

    /// The tenant's compiled policy set in force, or `None` for no policy
    /// layer. An error means the set cannot be used: the call is denied.
    pub(crate) async fn policies_in_force(
        &self,
        store: &TenantStore,
        generation: i64,
    ) -> std::result::Result<Option<Arc<Policies>>, String> {
        if Faults::on(&self.faults.policy_store) {
            return Err("the policy store failed: injected fault".into());
        }
        let cached = self.policy_cache.lock().get(store.name()).cloned();
        if let Some((g, _, set)) = &cached
            && *g == generation
        {
            return Ok(set.clone());
        }
        let record = store
            .policy(None)
            .await
            .map_err(|e| format!("the policy store failed: {e}"))?;
        let (sha, set) = match record {
            None => (String::new(), None),
            Some(r) if r.text.trim().is_empty() => (String::new(), None),
            Some(r) => {
                if sha256_hex(r.text.as_bytes()) != r.sha256 {
                    return Err(format!(
                        "stored policy version {} does not match its recorded SHA-256",
                        r.version
                    ));
                }
                // The generation moves on any change (a grant, a token); the
                // policy text often did not: keep the compiled set.
                if let Some((_, old_sha, Some(old))) = &cached
                    && *old_sha == r.sha256
                    && old.version() == r.version
                {
                    let set = Some(old.clone());
                    self.policy_cache.lock().insert(
                        store.name().to_owned(),
                        (generation, r.sha256.clone(), set.clone()),
                    );
                    return Ok(set);
                }
                let set = Policies::compile(&r.text, r.version).map_err(|e| {
                    format!("stored policy version {} does not compile: {e}", r.version)
                })?;
                tracing::info!(
                    tenant = store.name(),
                    version = r.version,
                    generation,
                    "policy set compiled"
                );
                (r.sha256, Some(Arc::new(set)))
            }
        };
        self.policy_cache
            .lock()
            .insert(store.name().to_owned(), (generation, sha, set.clone()));
        Ok(set)
    }

    /// Evaluates a hypothetical call: the grant, then the policy (in force,
    /// or the candidate text), and says which decided and why.
    pub async fn test_policy(&self, caller: &Caller, t: &PolicyTest) -> Result<PolicyExplanation> {
        let p = self.principal(caller, Operation::ReadInventory)?;
        let store = self.tenant_of(p).await?;
        let agent = store.agent_by_name(&t.agent).await?;
        let Some(live) = store.live_version(&t.tool).await? else {
            return Err(Error::NotFound(format!(
                "a deployed version of tool `{}`",
                t.tool
            )));
        };
        let manifest = crate::governance::parse_manifest(&live)?;
        let Some(declared) = manifest.actions.iter().find(|a| a.name == t.action) else {
            return Err(Error::NotFound(format!(
                "action `{}` of tool `{}`",
                t.action, t.tool
            )));
        };
        let explain = |decision: &str, rule: &str, reason: String| PolicyExplanation {
            decision: decision.into(),
            rule: rule.into(),
            reason,
            policies: Vec::new(),
            policy_version: None,
            facts: None,
        };
        // The grant first, as on the real path.
        let grant: Option<Grant> = match store.live_grant(&agent.id, &t.tool).await? {
            Some(g) if g.expires_at > self.now() => serde_json::from_str(&g.spec).ok(),
            _ => None,
        };
        let Some(grant) = grant else {
            return Ok(explain(
                "deny",
                "grant",
                format!("agent `{}` has no live grant on tool `{}`", t.agent, t.tool),
            ));
        };
        if !grant.allows_action(&t.action) {
            return Ok(explain(
                "deny",
                "grant",
                format!(
                    "action `{}` of tool `{}` is not in the grant",
                    t.action, t.tool
                ),
            ));
        }
        if let Some(call) = &t.import
            && let Decision::Deny { reason, rule } = warden_policy::check_import(&grant, call)
        {
            return Ok(explain("deny", &rule, reason));
        }
        let (set, version) = match &t.policy {
            Some(text) => (
                Some(Arc::new(Policies::compile(text, 0).map_err(|e| {
                    Error::Invalid(format!("the candidate policy is invalid: {e}"))
                })?)),
                None,
            ),
            None => {
                let set = self
                    .policies_in_force(&store, store.call_generation().await?)
                    .await
                    .map_err(Error::Internal)?;
                let v = set.as_ref().map(|s| s.version());
                (set, v)
            }
        };
        let facts = CallFacts {
            tenant: p.tenant.clone(),
            env: self.env.clone(),
            agent: t.agent.clone(),
            tool: t.tool.clone(),
            version: live.version.clone(),
            action: t.action.clone(),
            effect: declared.effect,
            classification: declared.classification,
            sends_to: declared.sends_to,
            args: t.args.clone().unwrap_or_else(|| serde_json::json!({})),
            now: t.now.unwrap_or_else(|| self.now()),
            usage: t.usage.unwrap_or_default(),
            session: SessionFacts {
                id: "policy-test".into(),
                tier: t.session_tier,
                calls: 0,
                tools: Vec::new(),
            },
        };
        let Some(set) = set.filter(|s| !s.is_empty()) else {
            let mut e = explain(
                "allow",
                "grant",
                "the grant allows it and no policy is set (grants alone decide)".into(),
            );
            e.facts = Some(facts);
            return Ok(e);
        };
        let verdict = set.decide(&facts, t.import.as_ref());
        let (rule, reason) = match &verdict {
            Verdict::Allow { policies } => (
                "policy".to_owned(),
                format!("permitted by policy {}", policies.join(", ")),
            ),
            Verdict::Deny { rule, reason, .. } | Verdict::Hold { rule, reason, .. } => {
                (rule.clone(), reason.clone())
            }
        };
        Ok(PolicyExplanation {
            decision: verdict.name().into(),
            rule,
            reason,
            policies: verdict.policies().to_vec(),
            policy_version: version,
            facts: Some(facts),
        })
    }
}

impl PolicyCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        self.sets.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The import-call hook of one invocation: the tenant's policy with the
/// invocation's facts.
#[derive(Debug)]
pub(crate) struct CallPolicy {
    pub set: Arc<Policies>,
    pub facts: CallFacts,
    /// How a held import call is stored and waited for; `None` refuses it.
    pub hold: Option<crate::approvals::ImportHold>,
}

impl ImportPolicy for CallPolicy {
    fn decide(&self, call: &ImportCall) -> ImportVerdict {
        match self.set.decide(&self.facts, Some(call)) {
            Verdict::Allow { .. } => ImportVerdict::Decided(Decision::Allow),
            Verdict::Deny { rule, reason, .. } => {
                ImportVerdict::Decided(Decision::Deny { reason, rule })
            }
            Verdict::Hold { rule, reason, .. } => ImportVerdict::Hold { reason, rule },
        }
    }

    fn hold(&self, call: ImportCall, _seq: u32, reason: String, rule: String) -> HoldWait {
        match &self.hold {
            Some(h) => Box::pin(h.clone().wait(self.facts.clone(), call, reason, rule)),
            None => Box::pin(async move {
                Err((
                    rule,
                    format!("{reason}; this call cannot wait for an approval, so it is refused"),
                ))
            }),
        }
    }
}
