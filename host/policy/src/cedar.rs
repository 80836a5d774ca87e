//! Cedar policy: a tenant's conditions on top of its grants.
//!
//! A grant says what an agent may use; a policy set says under which
//! conditions. [`Policies::compile`] parses a policy set, names each policy by
//! its `@id` annotation, and validates it in strict mode against Warden's
//! fixed [`SCHEMA`]; anything invalid is refused. [`Policies::decide`] then
//! evaluates one request and returns a [`Verdict`]:
//!
//! - `invoke` (or `import`) not permitted: **Deny** (the forbids that
//!   matched, or Cedar's default when nothing permits);
//! - permitted, but `invoke_unattended` (or `import_unattended`) not:
//!   **Hold** (a human must approve);
//! - both permitted: **Allow**.
//!
//! Invariant: an evaluation error is a Deny naming the policies that
//! errored. Cedar skips a policy whose condition errors, so a failing
//! `forbid` would otherwise let the call through.
//!
//! Cost stays flat as a set grows: every policy is indexed by the agent its
//! principal scope names, the tool its resource scope names and the kind of
//! action its action scope names, and a request evaluates only its slice
//! (built once per agent × tool × kind and cached).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, LazyLock, Mutex};

use cedar_policy::{
    ActionConstraint, Authorizer, Context, Entities, Entity, EntityId, EntityTypeName, EntityUid,
    Policy, PolicyId, PolicySet, PrincipalConstraint, Request, ResourceConstraint,
    RestrictedExpression, Schema, ValidationMode, Validator,
};
use serde::{Deserialize, Serialize};

use crate::check::ImportCall;
use crate::manifest::{Classification, Effect};

/// Warden's Cedar schema: the entity types, actions and context a policy may
/// use. Policies are validated against it in strict mode.
pub const SCHEMA: &str = r#"
namespace Warden {
  // The calling agent (principal of every request).
  entity Agent = { name: String };
  // A tool, parent of its actions and of the resources its imports touch.
  entity Tool = { name: String, version: String };
  // One action of a tool; its id is "tool/action".
  entity ToolAction in [Tool] = {
    name: String,
    tool: String,
    effect: String,
    classification: String,
    sends_to: String,
  };
  // Import resources, each "in" the tool that touches it.
  entity HttpEndpoint in [Tool] = {
    scheme: String, host: String, port: Long, method: String, path: String,
  };
  entity KvKey in [Tool] = { key: String, operation: String };
  entity Secret in [Tool] = { name: String };
  entity File in [Tool] = { path: String, operation: String };
  entity LogSink in [Tool];
  // The call's top-level arguments: every one as text in `Args`, integers
  // also as numbers in `Numbers`.
  entity Args tags String;
  entity Numbers tags Long;

  type Time = { unix: Long, hour: Long, minute: Long, weekday: Long };
  type Counters = { minute: Long, hour: Long, day: Long, writes_today: Long, fuel_today: Long };
  type Session = { id: String, tier: String, rank: Long, calls: Long, tools: Set<String> };
  type InvokeContext = {
    tenant: String, env: String, tool: String, action: String, effect: String,
    args: Args, numbers: Numbers, time: Time, counters: Counters, session: Session,
  };
  type ImportContext = {
    tenant: String, env: String, tool: String, action: String, effect: String,
    args: Args, numbers: Numbers, time: Time, counters: Counters, session: Session,
    capability: String, operation: String, leaves_sandbox: Bool,
  };

  action invoke, invoke_unattended appliesTo {
    principal: Agent, resource: ToolAction, context: InvokeContext,
  };
  // A principal of the tenant deciding a held call (`approve`).
  entity Approver = { name: String };
  type ApproveContext = {
    tenant: String, env: String, agent: String, tool: String, action: String,
    effect: String, kind: String, args: Args, numbers: Numbers, time: Time,
  };
  action approve appliesTo {
    principal: Approver, resource: ToolAction, context: ApproveContext,
  };
  action import, import_unattended appliesTo {
    principal: Agent,
    resource: [HttpEndpoint, KvKey, Secret, File, LogSink],
    context: ImportContext,
  };
}
"#;

/// Most policies one set may hold.
pub const MAX_POLICIES: usize = 10_000;
/// Most bytes of policy text.
pub const MAX_POLICY_BYTES: usize = 4 << 20;
/// Stack a decision wants left before it starts; below it, it runs on a
/// fresh segment of [`STACK_SEGMENT`] bytes.
const STACK_RED_ZONE: usize = 256 * 1024;
const STACK_SEGMENT: usize = 1024 * 1024;
/// Most cached slices per policy set (cleared when full).
const MAX_SLICES: usize = 16_384;

static PARSED_SCHEMA: LazyLock<Result<Schema, String>> = LazyLock::new(|| {
    Schema::from_cedarschema_str(SCHEMA)
        .map(|(s, _warnings)| s)
        .map_err(|e| format!("Warden's Cedar schema does not parse: {e}"))
});

/// Warden's parsed schema.
pub fn schema() -> Result<&'static Schema, String> {
    PARSED_SCHEMA.as_ref().map_err(Clone::clone)
}

/// Which pair of Cedar actions a request evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Invoke,
    Import,
}

impl Kind {
    fn actions(self) -> (&'static str, &'static str) {
        match self {
            Kind::Invoke => ("invoke", "invoke_unattended"),
            Kind::Import => ("import", "import_unattended"),
        }
    }
}

/// Warden's Cedar actions; a policy's action scope is a bit set over them.
const ACTIONS: [&str; 5] = [
    "invoke",
    "invoke_unattended",
    "import",
    "import_unattended",
    "approve",
];

fn action_bit(name: &str) -> u8 {
    ACTIONS
        .iter()
        .position(|a| *a == name)
        .map_or(0, |i| 1 << i)
}

/// Counts of this agent × tool (× action, for the rates) before this call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub minute: u64,
    pub hour: u64,
    pub day: u64,
    pub writes_today: u64,
    pub fuel_today: u64,
}

/// What the agent's data session has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionFacts {
    pub id: String,
    pub tier: Option<Classification>,
    pub calls: u64,
    /// `tool/action` of the calls that succeeded in this session.
    pub tools: Vec<String>,
}

/// Everything a policy can see about one call (the request context).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallFacts {
    pub tenant: String,
    /// The host's environment label (`production`, `staging`...).
    pub env: String,
    pub agent: String,
    pub tool: String,
    pub version: String,
    pub action: String,
    pub effect: Effect,
    pub classification: Classification,
    pub sends_to: Option<Classification>,
    /// The call's arguments (a JSON object; anything else has no fields).
    pub args: serde_json::Value,
    /// Seconds since the Unix epoch (UTC).
    pub now: i64,
    pub usage: Usage,
    pub session: SessionFacts,
}

/// A policy decision with the policies that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "lowercase")]
pub enum Verdict {
    Allow {
        /// The permits that allowed it.
        policies: Vec<String>,
    },
    Deny {
        rule: String,
        reason: String,
        policies: Vec<String>,
    },
    Hold {
        rule: String,
        reason: String,
        policies: Vec<String>,
    },
}

impl Verdict {
    /// The policies that decided.
    pub fn policies(&self) -> &[String] {
        match self {
            Verdict::Allow { policies }
            | Verdict::Deny { policies, .. }
            | Verdict::Hold { policies, .. } => policies,
        }
    }

    /// A Deny made by a check that failed (not by a policy).
    pub fn failed(rule: &str, reason: String) -> Verdict {
        Verdict::Deny {
            rule: rule.to_owned(),
            reason,
            policies: Vec::new(),
        }
    }

    /// The decision's name: `allow`, `deny` or `hold`.
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Allow { .. } => "allow",
            Verdict::Deny { .. } => "deny",
            Verdict::Hold { .. } => "hold",
        }
    }
}

/// Where a policy's scope points, for slicing.
#[derive(Debug, Clone)]
struct Scoped {
    policy: Policy,
    agent: Option<String>,
    tool: Option<String>,
    /// The actions (bits over [`ACTIONS`]) the action scope can match.
    actions: u8,
}

/// A compiled, validated policy set of one version.
#[derive(Debug)]
pub struct Policies {
    version: i64,
    scoped: Vec<Scoped>,
    /// `@reason` annotations by policy id.
    reasons: HashMap<String, String>,
    slices: Mutex<HashMap<(String, String, u8), Arc<PolicySet>>>,
    authorizer: Authorizer,
}

/// Type names, parsed once.
struct Types {
    agent: EntityTypeName,
    tool: EntityTypeName,
    tool_action: EntityTypeName,
    approver: EntityTypeName,
    action: EntityTypeName,
    args: EntityTypeName,
    numbers: EntityTypeName,
    http: EntityTypeName,
    kv: EntityTypeName,
    secret: EntityTypeName,
    file: EntityTypeName,
    log: EntityTypeName,
}

static TYPES: LazyLock<Result<Types, String>> = LazyLock::new(|| {
    let t = |n: &str| EntityTypeName::from_str(n).map_err(|e| format!("type {n}: {e}"));
    Ok(Types {
        agent: t("Warden::Agent")?,
        approver: t("Warden::Approver")?,
        tool: t("Warden::Tool")?,
        tool_action: t("Warden::ToolAction")?,
        action: t("Warden::Action")?,
        args: t("Warden::Args")?,
        numbers: t("Warden::Numbers")?,
        http: t("Warden::HttpEndpoint")?,
        kv: t("Warden::KvKey")?,
        secret: t("Warden::Secret")?,
        file: t("Warden::File")?,
        log: t("Warden::LogSink")?,
    })
});

fn types() -> Result<&'static Types, String> {
    TYPES.as_ref().map_err(Clone::clone)
}

fn uid(t: &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(t.clone(), EntityId::new(id))
}

/// Why an upload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

impl Policies {
    /// Parses and validates `text` as policy set `version`. Refuses templates,
    /// duplicate ids, sets over [`MAX_POLICIES`] and anything the schema
    /// rejects, listing every problem.
    pub fn compile(text: &str, version: i64) -> Result<Policies, PolicyError> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(PolicyError(format!(
                "the policy text is {} bytes; at most {MAX_POLICY_BYTES}",
                text.len()
            )));
        }
        let schema = schema().map_err(PolicyError)?;
        let types = types().map_err(PolicyError)?;
        let parsed = PolicySet::from_str(text)
            .map_err(|e| PolicyError(format!("the policies do not parse: {}", render(&e))))?;
        if parsed.templates().next().is_some() {
            return Err(PolicyError(
                "policy templates are not supported; write each policy out".into(),
            ));
        }
        let mut named = PolicySet::new();
        let mut reasons = HashMap::new();
        let mut count = 0usize;
        for p in parsed.policies() {
            count += 1;
            if count > MAX_POLICIES {
                return Err(PolicyError(format!(
                    "more than {MAX_POLICIES} policies in one set"
                )));
            }
            let p = match p.annotation("id") {
                Some(id) if id.trim().is_empty() => {
                    return Err(PolicyError(format!("policy {} has an empty @id", p.id())));
                }
                Some(id) => p.new_id(PolicyId::new(id)),
                None => p.clone(),
            };
            if let Some(r) = p.annotation("reason") {
                reasons.insert(p.id().to_string(), r.to_owned());
            }
            let id = p.id().to_string();
            named
                .add(p)
                .map_err(|e| PolicyError(format!("policy `{id}`: {e}")))?;
        }
        let result = Validator::new(schema.clone()).validate(&named, ValidationMode::Strict);
        if !result.validation_passed() {
            let errors: Vec<String> = result
                .validation_errors()
                .map(|e| format!("policy `{}`: {}", e.policy_id(), render(e)))
                .collect();
            return Err(PolicyError(format!(
                "the policies do not validate against Warden's schema: {}",
                errors.join("; ")
            )));
        }
        let scoped = named
            .policies()
            .map(|p| Scoped {
                agent: agent_scope(types, p),
                tool: tool_scope(types, p),
                actions: action_scope(types, p),
                policy: p.clone(),
            })
            .collect();
        Ok(Policies {
            version,
            scoped,
            reasons,
            slices: Mutex::new(HashMap::new()),
            authorizer: Authorizer::new(),
        })
    }

    /// The version this set was compiled as.
    pub fn version(&self) -> i64 {
        self.version
    }

    /// How many policies the set holds.
    pub fn len(&self) -> usize {
        self.scoped.len()
    }

    /// Whether the set holds no policy (then grants alone decide).
    pub fn is_empty(&self) -> bool {
        self.scoped.is_empty()
    }

    /// The policies that can apply to `agent` calling `tool` with the Cedar
    /// action `action`.
    fn slice(&self, agent: &str, tool: &str, action: &str) -> Result<Arc<PolicySet>, String> {
        let bit = action_bit(action);
        let key = (agent.to_owned(), tool.to_owned(), bit);
        let mut slices = self.slices.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slices.get(&key) {
            return Ok(s.clone());
        }
        let set = PolicySet::from_policies(
            self.scoped
                .iter()
                .filter(|s| {
                    s.agent.as_deref().is_none_or(|a| a == agent)
                        && s.tool.as_deref().is_none_or(|t| t == tool)
                        && s.actions & bit != 0
                })
                .map(|s| s.policy.clone()),
        )
        .map_err(|e| format!("slicing the policy set: {e}"))?;
        let set = Arc::new(set);
        if slices.len() >= MAX_SLICES {
            slices.clear();
        }
        slices.insert(key, set.clone());
        Ok(set)
    }

    /// Decides an invocation (`call` is `None`) or one of its import calls.
    /// Never fails: a problem building or evaluating the request is a Deny
    /// (`policy.error`) that says what failed.
    pub fn decide(&self, facts: &CallFacts, call: Option<&ImportCall>) -> Verdict {
        // Cedar refuses to evaluate when `stacker` reports little stack left,
        // and on a foreign stack (a wasmtime fiber, where import calls are
        // decided) that report is wrong. Run on a fresh segment whenever the
        // report is low; on an ordinary thread stack this costs nothing.
        stacker::maybe_grow(STACK_RED_ZONE, STACK_SEGMENT, || {
            self.decide_here(facts, call)
        })
    }

    fn decide_here(&self, facts: &CallFacts, call: Option<&ImportCall>) -> Verdict {
        match self.try_decide(facts, call) {
            Ok(v) => v,
            Err(e) => Verdict::failed(
                "policy.error",
                format!("policy check failed (policy version {}): {e}", self.version),
            ),
        }
    }

    fn try_decide(&self, facts: &CallFacts, call: Option<&ImportCall>) -> Result<Verdict, String> {
        let types = types()?;
        let kind = if call.is_some() {
            Kind::Import
        } else {
            Kind::Invoke
        };
        let (list, principal, resource) = entity_list(types, facts, call)?;
        let entities = Entities::from_entities(list, None).map_err(|e| e.to_string())?;
        let context = context(types, facts, call)?;
        let (attended, unattended) = kind.actions();
        let ask = |action: &str| -> Result<cedar_policy::Response, String> {
            let request = Request::new(
                principal.clone(),
                uid(&types.action, action),
                resource.clone(),
                context.clone(),
                None,
            )
            .map_err(|e| format!("building the request: {e}"))?;
            let slice = self.slice(&facts.agent, &facts.tool, action)?;
            Ok(self.authorizer.is_authorized(&request, &slice, &entities))
        };
        let first = ask(attended)?;
        if let Some(v) = self.errored(&first) {
            return Ok(v);
        }
        let ids = |r: &cedar_policy::Response| -> Vec<String> {
            let mut v: Vec<String> = r.diagnostics().reason().map(ToString::to_string).collect();
            v.sort();
            v
        };
        if first.decision() == cedar_policy::Decision::Deny {
            let policies = ids(&first);
            let reason = if policies.is_empty() {
                format!(
                    "no policy permits `{attended}` here (policy version {}: Cedar denies by default)",
                    self.version
                )
            } else {
                self.forbidden_by(&policies)
            };
            let rule = if policies.is_empty() {
                "policy.default"
            } else {
                "policy"
            };
            return Ok(Verdict::Deny {
                rule: rule.into(),
                reason,
                policies,
            });
        }
        let second = ask(unattended)?;
        if let Some(v) = self.errored(&second) {
            return Ok(v);
        }
        if second.decision() == cedar_policy::Decision::Deny {
            let policies = ids(&second);
            let reason = format!(
                "needs human approval: `{unattended}` is not permitted{} (policy version {}){}",
                if policies.is_empty() {
                    String::new()
                } else {
                    format!(" by policy {}", policies.join(", "))
                },
                self.version,
                self.why(&policies)
            );
            return Ok(Verdict::Hold {
                rule: "policy.hold".into(),
                reason,
                policies,
            });
        }
        Ok(Verdict::Allow {
            policies: ids(&first),
        })
    }

    /// Whether principal `approver` may decide a held call described by
    /// `facts` (`kind`: `call` or `import`): Cedar action `approve` on the
    /// call's `ToolAction`. Allow or Deny; no permit is a Deny.
    pub fn decide_approver(&self, approver: &str, facts: &CallFacts, kind: &str) -> Verdict {
        stacker::maybe_grow(STACK_RED_ZONE, STACK_SEGMENT, || {
            self.try_decide_approver(approver, facts, kind)
                .unwrap_or_else(|e| {
                    Verdict::failed(
                        "policy.error",
                        format!(
                            "approver check failed (policy version {}): {e}",
                            self.version
                        ),
                    )
                })
        })
    }

    fn try_decide_approver(
        &self,
        approver: &str,
        facts: &CallFacts,
        kind: &str,
    ) -> Result<Verdict, String> {
        let types = types()?;
        let (mut list, _agent, resource) = entity_list(types, facts, None)?;
        let principal = uid(&types.approver, approver);
        list.push(
            Entity::new(
                principal.clone(),
                HashMap::from([("name".to_owned(), s(approver))]),
                Default::default(),
            )
            .map_err(|e| e.to_string())?,
        );
        let entities = Entities::from_entities(list, None).map_err(|e| e.to_string())?;
        let time = time_record(facts.now)?;
        let context = Context::from_pairs(
            [
                ("tenant", s(&facts.tenant)),
                ("env", s(&facts.env)),
                ("agent", s(&facts.agent)),
                ("tool", s(&facts.tool)),
                ("action", s(&facts.action)),
                ("effect", s(facts.effect.as_str())),
                ("kind", s(kind)),
                (
                    "args",
                    RestrictedExpression::new_entity_uid(uid(&types.args, "call")),
                ),
                (
                    "numbers",
                    RestrictedExpression::new_entity_uid(uid(&types.numbers, "call")),
                ),
                ("time", time),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v)),
        )
        .map_err(|e| e.to_string())?;
        let request = Request::new(
            principal,
            uid(&types.action, "approve"),
            resource,
            context,
            None,
        )
        .map_err(|e| format!("building the request: {e}"))?;
        // Agent-scoped policies cannot name an Approver: slice with no agent.
        let slice = self.slice("", &facts.tool, "approve")?;
        let r = self.authorizer.is_authorized(&request, &slice, &entities);
        if let Some(v) = self.errored(&r) {
            return Ok(v);
        }
        let mut policies: Vec<String> = r.diagnostics().reason().map(ToString::to_string).collect();
        policies.sort();
        if r.decision() == cedar_policy::Decision::Allow {
            return Ok(Verdict::Allow { policies });
        }
        let reason = if policies.is_empty() {
            format!(
                "no policy permits `{approver}` to approve `{}/{}` (policy version {}: Cedar denies by default)",
                facts.tool, facts.action, self.version
            )
        } else {
            self.forbidden_by(&policies)
        };
        Ok(Verdict::Deny {
            rule: "approval.authority".into(),
            reason,
            policies,
        })
    }

    /// A Deny when evaluation errored in any policy.
    fn errored(&self, r: &cedar_policy::Response) -> Option<Verdict> {
        let errors: Vec<(String, String)> = r
            .diagnostics()
            .errors()
            .map(|e| match e {
                cedar_policy::AuthorizationError::PolicyEvaluationError(pe) => {
                    (pe.policy_id().to_string(), e.to_string())
                }
            })
            .collect();
        if errors.is_empty() {
            return None;
        }
        let mut policies: Vec<String> = errors.iter().map(|(id, _)| id.clone()).collect();
        policies.sort();
        policies.dedup();
        Some(Verdict::Deny {
            rule: "policy.error".into(),
            reason: format!(
                "policy evaluation failed, so the call is denied (version {}): {}",
                self.version,
                errors
                    .iter()
                    .map(|(_, e)| e.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            policies,
        })
    }

    /// "forbidden by policy a, b (version n): reasons".
    fn forbidden_by(&self, policies: &[String]) -> String {
        format!(
            "forbidden by policy {} (version {}){}",
            policies.join(", "),
            self.version,
            self.why(policies)
        )
    }

    /// ": reason" from the `@reason` annotations of `policies`.
    fn why(&self, policies: &[String]) -> String {
        let reasons: Vec<&str> = policies
            .iter()
            .filter_map(|p| self.reasons.get(p).map(String::as_str))
            .collect();
        if reasons.is_empty() {
            String::new()
        } else {
            format!(": {}", reasons.join("; "))
        }
    }
}

/// A diagnostic with its causes on one line.
fn render(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = c.source();
    }
    s
}

fn agent_scope(t: &Types, p: &Policy) -> Option<String> {
    let u = match p.principal_constraint() {
        PrincipalConstraint::Eq(u)
        | PrincipalConstraint::In(u)
        | PrincipalConstraint::IsIn(_, u) => u,
        PrincipalConstraint::Any | PrincipalConstraint::Is(_) => return None,
    };
    // Agents have no parents: `principal in Agent::"a"` matches only `a`.
    (u.type_name() == &t.agent).then(|| u.id().unescaped().to_owned())
}

fn tool_scope(t: &Types, p: &Policy) -> Option<String> {
    let u = match p.resource_constraint() {
        ResourceConstraint::Eq(u) | ResourceConstraint::In(u) | ResourceConstraint::IsIn(_, u) => u,
        ResourceConstraint::Any | ResourceConstraint::Is(_) => return None,
    };
    let id = u.id().unescaped();
    if u.type_name() == &t.tool {
        Some(id.to_owned())
    } else if u.type_name() == &t.tool_action {
        // "tool/action": tool names never contain `/`.
        id.split_once('/').map(|(tool, _)| tool.to_owned())
    } else {
        None
    }
}

fn action_scope(t: &Types, p: &Policy) -> u8 {
    // Warden's actions have no groups: `action in [a, b]` matches a and b.
    let bit = |u: &EntityUid| {
        if u.type_name() == &t.action {
            action_bit(u.id().unescaped())
        } else {
            0
        }
    };
    match p.action_constraint() {
        ActionConstraint::Any => u8::MAX,
        ActionConstraint::Eq(u) => bit(&u),
        ActionConstraint::In(us) => us.iter().map(bit).fold(0, |a, b| a | b),
    }
}

fn s(v: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(v.to_owned())
}

fn n(v: u64) -> RestrictedExpression {
    RestrictedExpression::new_long(i64::try_from(v).unwrap_or(i64::MAX))
}

fn n_i(v: i64) -> RestrictedExpression {
    RestrictedExpression::new_long(v)
}

/// The request's entities and its principal and resource.
fn entity_list(
    t: &Types,
    f: &CallFacts,
    call: Option<&ImportCall>,
) -> Result<(Vec<Entity>, EntityUid, EntityUid), String> {
    let e = |r: Result<Entity, _>| {
        r.map_err(|e: cedar_policy::EntityAttrEvaluationError| e.to_string())
    };
    let agent = uid(&t.agent, &f.agent);
    let tool = uid(&t.tool, &f.tool);
    let mut list = vec![
        e(Entity::new(
            agent.clone(),
            HashMap::from([("name".to_owned(), s(&f.agent))]),
            Default::default(),
        ))?,
        e(Entity::new(
            tool.clone(),
            HashMap::from([
                ("name".to_owned(), s(&f.tool)),
                ("version".to_owned(), s(&f.version)),
            ]),
            Default::default(),
        ))?,
    ];
    let (arg_text, arg_numbers) = arg_tags(&f.args);
    list.push(e(Entity::new_with_tags(
        uid(&t.args, "call"),
        [],
        [],
        arg_text.into_iter().map(|(k, v)| (k, s(&v))),
    ))?);
    list.push(e(Entity::new_with_tags(
        uid(&t.numbers, "call"),
        [],
        [],
        arg_numbers.into_iter().map(|(k, v)| (k, n_i(v))),
    ))?);
    let parent = [tool.clone()];
    let resource = match call {
        None => {
            let r = uid(&t.tool_action, &format!("{}/{}", f.tool, f.action));
            list.push(e(Entity::new_with_tags(
                r.clone(),
                [
                    ("name".to_owned(), s(&f.action)),
                    ("tool".to_owned(), s(&f.tool)),
                    ("effect".to_owned(), s(f.effect.as_str())),
                    ("classification".to_owned(), s(f.classification.as_str())),
                    (
                        "sends_to".to_owned(),
                        s(f.sends_to.map_or("", Classification::as_str)),
                    ),
                ],
                parent,
                [],
            ))?);
            r
        }
        Some(c) => {
            let (ty, attrs): (&EntityTypeName, Vec<(String, RestrictedExpression)>) = match c {
                ImportCall::HttpRequest {
                    scheme,
                    host,
                    port,
                    method,
                    path,
                } => (
                    &t.http,
                    vec![
                        ("scheme".into(), s(scheme)),
                        ("host".into(), s(host)),
                        ("port".into(), n(u64::from(*port))),
                        ("method".into(), s(method)),
                        ("path".into(), s(path)),
                    ],
                ),
                ImportCall::KvGet { key }
                | ImportCall::KvSet { key, .. }
                | ImportCall::KvDelete { key }
                | ImportCall::KvList { prefix: key } => (
                    &t.kv,
                    vec![
                        ("key".into(), s(key)),
                        ("operation".into(), s(c.operation())),
                    ],
                ),
                ImportCall::SecretGet { name } => (&t.secret, vec![("name".into(), s(name))]),
                ImportCall::FsOpen { path, .. }
                | ImportCall::FsRead { path }
                | ImportCall::FsWrite { path }
                | ImportCall::FsDelete { path } => (
                    &t.file,
                    vec![
                        ("path".into(), s(path)),
                        ("operation".into(), s(c.operation())),
                    ],
                ),
                ImportCall::Log { .. } => (&t.log, vec![]),
            };
            let r = uid(ty, &c.resource());
            list.push(e(Entity::new_with_tags(r.clone(), attrs, parent, []))?);
            r
        }
    };
    Ok((list, agent, resource))
}

/// Tags of the `Args` (text) and `Numbers` entities.
type ArgTags = (Vec<(String, String)>, Vec<(String, i64)>);

/// Top-level arguments as text tags, and integer ones as number tags.
fn arg_tags(args: &serde_json::Value) -> ArgTags {
    let mut text = Vec::new();
    let mut numbers = Vec::new();
    if let serde_json::Value::Object(m) = args {
        for (k, v) in m {
            match v {
                serde_json::Value::String(x) => text.push((k.clone(), x.clone())),
                other => text.push((k.clone(), other.to_string())),
            }
            if let Some(i) = v.as_i64() {
                numbers.push((k.clone(), i));
            }
        }
    }
    (text, numbers)
}

/// `context.time` for Unix second `now` (UTC).
fn time_record(now: i64) -> Result<RestrictedExpression, String> {
    let secs = now.rem_euclid(86_400);
    let days = now.div_euclid(86_400);
    RestrictedExpression::new_record(
        [
            ("unix", n_i(now)),
            ("hour", n_i(secs / 3600)),
            ("minute", n_i(secs % 3600 / 60)),
            // 0 = Monday; 1970-01-01 was a Thursday.
            ("weekday", n_i((days + 3).rem_euclid(7))),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v)),
    )
    .map_err(|e| e.to_string())
}

/// The request context.
fn context(t: &Types, f: &CallFacts, call: Option<&ImportCall>) -> Result<Context, String> {
    let rec = |pairs: Vec<(&str, RestrictedExpression)>| {
        RestrictedExpression::new_record(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)))
            .map_err(|e| e.to_string())
    };
    let time = time_record(f.now)?;
    let counters = rec(vec![
        ("minute", n(f.usage.minute)),
        ("hour", n(f.usage.hour)),
        ("day", n(f.usage.day)),
        ("writes_today", n(f.usage.writes_today)),
        ("fuel_today", n(f.usage.fuel_today)),
    ])?;
    let tier = f.session.tier;
    let session = rec(vec![
        ("id", s(&f.session.id)),
        ("tier", s(tier.map_or("none", Classification::as_str))),
        ("rank", n_i(tier.map_or(0, |c| c as i64 + 1))),
        ("calls", n(f.session.calls)),
        (
            "tools",
            RestrictedExpression::new_set(f.session.tools.iter().map(|x| s(x))),
        ),
    ])?;
    let mut pairs = vec![
        ("tenant", s(&f.tenant)),
        ("env", s(&f.env)),
        ("tool", s(&f.tool)),
        ("action", s(&f.action)),
        ("effect", s(f.effect.as_str())),
        (
            "args",
            RestrictedExpression::new_entity_uid(uid(&t.args, "call")),
        ),
        (
            "numbers",
            RestrictedExpression::new_entity_uid(uid(&t.numbers, "call")),
        ),
        ("time", time),
        ("counters", counters),
        ("session", session),
    ];
    if let Some(c) = call {
        pairs.push(("capability", s(&c.capability().to_string())));
        pairs.push(("operation", s(c.operation())));
        pairs.push((
            "leaves_sandbox",
            RestrictedExpression::new_bool(c.leaves_sandbox()),
        ));
    }
    Context::from_pairs(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> CallFacts {
        CallFacts {
            tenant: "acme".into(),
            env: "production".into(),
            agent: "bot".into(),
            tool: "notes".into(),
            version: "1.0.0".into(),
            action: "write".into(),
            effect: Effect::Write,
            classification: Classification::Internal,
            sends_to: None,
            args: serde_json::json!({ "path": "a.txt", "amount": 5 }),
            now: 1_700_000_000,
            usage: Usage::default(),
            session: SessionFacts::default(),
        }
    }

    #[test]
    fn approver_authority_is_a_policy_decision() {
        let p = Policies::compile(
            r#"
            @id("base") permit(principal, action == Warden::Action::"invoke", resource);
            @id("alice-notes")
            permit(principal == Warden::Approver::"alice", action == Warden::Action::"approve", resource in Warden::Tool::"notes");
            @id("bob") permit(principal == Warden::Approver::"bob", action == Warden::Action::"approve", resource);
            @id("bob-small") @reason("bob releases small amounts only")
            forbid(principal == Warden::Approver::"bob", action == Warden::Action::"approve", resource)
              when { context.numbers.hasTag("amount") && context.numbers.getTag("amount") > 100 };
            "#,
            3,
        )
        .expect("compiles");
        let f = facts();
        assert!(matches!(
            p.decide_approver("alice", &f, "call"),
            Verdict::Allow { policies } if policies == ["alice-notes"]
        ));
        assert!(matches!(
            p.decide_approver("bob", &f, "import"),
            Verdict::Allow { .. }
        ));
        let mut big = facts();
        big.args = serde_json::json!({ "amount": 500 });
        match p.decide_approver("bob", &big, "call") {
            Verdict::Deny {
                rule,
                reason,
                policies,
            } => {
                assert_eq!(rule, "approval.authority");
                assert_eq!(policies, ["bob-small"]);
                assert!(reason.contains("small amounts only"), "{reason}");
            }
            v => panic!("{v:?}"),
        }
        let mut other = facts();
        other.tool = "pay".into();
        match p.decide_approver("alice", &other, "call") {
            Verdict::Deny { rule, reason, .. } => {
                assert_eq!(rule, "approval.authority");
                assert!(reason.contains("no policy permits `alice`"), "{reason}");
            }
            v => panic!("{v:?}"),
        }
        // An invoke permit never grants approval authority.
        assert!(matches!(
            p.decide_approver("carol", &f, "call"),
            Verdict::Deny { .. }
        ));
    }

    /// A policy set used by the table below.
    const SET: &str = r#"
        @id("baseline")
        permit(principal, action, resource);

        @id("no-destructive-in-production")
        @reason("destructive actions are off in production")
        forbid(principal, action == Warden::Action::"invoke", resource)
        when { context.effect == "destructive" && context.env == "production" };

        @id("big-amounts-need-approval")
        @reason("amounts over 1000 need a human")
        forbid(principal, action == Warden::Action::"invoke_unattended", resource == Warden::ToolAction::"pay/transfer")
        when { context.numbers.hasTag("amount") && context.numbers.getTag("amount") > 1000 };

        @id("intruder-is-out")
        forbid(principal == Warden::Agent::"intruder", action, resource);

        @id("no-internal-hosts")
        forbid(principal, action == Warden::Action::"import", resource is Warden::HttpEndpoint)
        when { resource.host like "*.internal" };

        @id("kv-secret-prefix-held")
        forbid(principal, action == Warden::Action::"import_unattended", resource is Warden::KvKey)
        when { resource.operation == "set" && resource.key like "payroll/*" };

        @id("rate")
        forbid(principal, action == Warden::Action::"invoke", resource in Warden::Tool::"search")
        when { context.counters.minute >= 3 };

        @id("confidential-sessions-stay-in")
        @reason("this session read confidential data")
        forbid(principal, action == Warden::Action::"invoke", resource)
        when { context.session.rank >= 3 && resource.sends_to == "public" };

        @id("night")
        forbid(principal, action == Warden::Action::"invoke", resource in Warden::Tool::"batch")
        when { context.time.hour < 6 };
    "#;

    fn http(host: &str) -> ImportCall {
        ImportCall::HttpRequest {
            scheme: "https".into(),
            host: host.into(),
            port: 443,
            method: "GET".into(),
            path: "/".into(),
        }
    }

    #[test]
    fn policy_table_allow_deny_hold_with_explanations() {
        let p = Policies::compile(SET, 7).expect("valid set");
        type Row = (
            &'static str,
            Box<dyn Fn(&mut CallFacts)>,
            Option<ImportCall>,
            &'static str,
            &'static [&'static str],
            &'static str,
        );
        let rows: Vec<Row> = vec![
            (
                "plain write",
                Box::new(|_| {}),
                None,
                "allow",
                &["baseline"],
                "",
            ),
            (
                "destructive in production",
                Box::new(|f| f.effect = Effect::Destructive),
                None,
                "deny",
                &["no-destructive-in-production"],
                "destructive actions are off in production",
            ),
            (
                "destructive in staging",
                Box::new(|f| {
                    f.effect = Effect::Destructive;
                    f.env = "staging".into();
                }),
                None,
                "allow",
                &["baseline"],
                "",
            ),
            (
                "small transfer",
                Box::new(|f| {
                    f.tool = "pay".into();
                    f.action = "transfer".into();
                    f.args = serde_json::json!({"amount": 10});
                }),
                None,
                "allow",
                &["baseline"],
                "",
            ),
            (
                "big transfer",
                Box::new(|f| {
                    f.tool = "pay".into();
                    f.action = "transfer".into();
                    f.args = serde_json::json!({"amount": 5000});
                }),
                None,
                "hold",
                &["big-amounts-need-approval"],
                "amounts over 1000 need a human",
            ),
            (
                "transfer without amount",
                Box::new(|f| {
                    f.tool = "pay".into();
                    f.action = "transfer".into();
                    f.args = serde_json::json!({});
                }),
                None,
                "allow",
                &["baseline"],
                "",
            ),
            (
                "intruder",
                Box::new(|f| f.agent = "intruder".into()),
                None,
                "deny",
                &["intruder-is-out"],
                "intruder-is-out",
            ),
            (
                "public host",
                Box::new(|_| {}),
                Some(http("api.example.com")),
                "allow",
                &["baseline"],
                "",
            ),
            (
                "internal host",
                Box::new(|_| {}),
                Some(http("db.internal")),
                "deny",
                &["no-internal-hosts"],
                "no-internal-hosts",
            ),
            (
                "payroll write",
                Box::new(|_| {}),
                Some(ImportCall::KvSet {
                    key: "payroll/alice".into(),
                    len: 3,
                }),
                "hold",
                &["kv-secret-prefix-held"],
                "needs human approval",
            ),
            (
                "payroll read",
                Box::new(|_| {}),
                Some(ImportCall::KvGet {
                    key: "payroll/alice".into(),
                }),
                "allow",
                &["baseline"],
                "",
            ),
            (
                "rate under",
                Box::new(|f| {
                    f.tool = "search".into();
                    f.usage.minute = 2;
                }),
                None,
                "allow",
                &["baseline"],
                "",
            ),
            (
                "rate at bound",
                Box::new(|f| {
                    f.tool = "search".into();
                    f.usage.minute = 3;
                }),
                None,
                "deny",
                &["rate"],
                "rate",
            ),
            (
                "confidential session sends public",
                Box::new(|f| {
                    f.session.tier = Some(Classification::Confidential);
                    f.sends_to = Some(Classification::Public);
                }),
                None,
                "deny",
                &["confidential-sessions-stay-in"],
                "this session read confidential data",
            ),
            (
                "fresh session sends public",
                Box::new(|f| f.sends_to = Some(Classification::Public)),
                None,
                "allow",
                &["baseline"],
                "",
            ),
            (
                "batch at 05:59",
                Box::new(|f| {
                    f.tool = "batch".into();
                    f.now = 1_699_999_200 + 5 * 3600 + 59 * 60 - 1_699_999_200 % 86_400;
                }),
                None,
                "deny",
                &["night"],
                "night",
            ),
            (
                "batch at 06:00",
                Box::new(|f| {
                    f.tool = "batch".into();
                    f.now = 1_699_999_200 + 6 * 3600 - 1_699_999_200 % 86_400;
                }),
                None,
                "allow",
                &["baseline"],
                "",
            ),
        ];
        for (name, change, call, want, ids, why) in rows {
            let mut f = facts();
            change(&mut f);
            let v = p.decide(&f, call.as_ref());
            assert_eq!(v.name(), want, "{name}: {v:?}");
            assert_eq!(
                v.policies(),
                ids.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                "{name}"
            );
            match &v {
                Verdict::Deny { reason, .. } | Verdict::Hold { reason, .. } => {
                    assert!(reason.contains(why), "{name}: {reason}");
                    assert!(reason.contains("version 7"), "{name}: {reason}");
                }
                Verdict::Allow { .. } => {}
            }
        }
    }

    #[test]
    fn a_policy_that_errors_never_allows() {
        // Long overflow is an evaluation error: Cedar skips the forbid, and
        // the baseline permit alone would allow. We deny, naming the policy.
        let p = Policies::compile(
            r#"
            @id("baseline") permit(principal, action, resource);
            @id("sum") forbid(principal, action == Warden::Action::"invoke", resource)
            when { context.counters.fuel_today + 9223372036854775807 > 0 };
            "#,
            1,
        )
        .expect("valid");
        let mut f = facts();
        f.usage.fuel_today = 5;
        match p.decide(&f, None) {
            Verdict::Deny {
                rule,
                policies,
                reason,
            } => {
                assert_eq!(rule, "policy.error");
                assert_eq!(policies, vec!["sum".to_string()]);
                assert!(reason.contains("evaluation failed"), "{reason}");
            }
            other => panic!("an erroring policy must deny: {other:?}"),
        }
        // Without the overflow the forbid evaluates, and decides as a policy.
        f.usage.fuel_today = 0;
        match p.decide(&f, None) {
            Verdict::Deny { rule, .. } => assert_eq!(rule, "policy"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_permit_is_a_default_deny() {
        let p = Policies::compile(
            r#"@id("reads") permit(principal, action, resource) when { context.effect == "read" };"#,
            3,
        )
        .expect("valid");
        match p.decide(&facts(), None) {
            Verdict::Deny { rule, reason, .. } => {
                assert_eq!(rule, "policy.default");
                assert!(reason.contains("no policy permits `invoke`"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn invalid_uploads_are_refused_with_the_reason() {
        for (text, want) in [
            ("permit(principal, action, resource", "do not parse"),
            (
                r#"permit(principal, action, resource) when { context.nonsense == 1 };"#,
                "do not validate",
            ),
            (
                r#"permit(principal, action, resource) when { context.effect > 1 };"#,
                "do not validate",
            ),
            (
                // An unguarded tag access could error at run time: refused.
                r#"forbid(principal, action == Warden::Action::"invoke", resource) when { context.numbers.getTag("amount") > 10 };"#,
                "unable to guarantee safety",
            ),
            (
                r#"permit(principal, action == Warden::Action::"fly", resource);"#,
                "do not validate",
            ),
            (
                r#"@id("a") permit(principal, action, resource); @id("a") forbid(principal, action, resource);"#,
                "`a`",
            ),
            (
                r#"permit(principal == ?principal, action, resource);"#,
                "templates",
            ),
            (
                r#"@id("") permit(principal, action, resource);"#,
                "empty @id",
            ),
        ] {
            let e = Policies::compile(text, 1).expect_err(text);
            assert!(e.0.contains(want), "{text}: {e}");
        }
        assert!(Policies::compile("", 1).expect("empty").is_empty());
    }

    #[test]
    fn slices_hold_only_the_policies_that_can_apply() {
        let mut text = String::from("@id(\"baseline\") permit(principal, action, resource);\n");
        for i in 0..200 {
            text.push_str(&format!(
                "@id(\"a{i}\") forbid(principal == Warden::Agent::\"agent-{i}\", action == Warden::Action::\"invoke\", resource in Warden::Tool::\"tool-{i}\") when {{ context.counters.minute > 100 }};\n"
            ));
        }
        let p = Policies::compile(&text, 1).expect("valid");
        assert_eq!(p.len(), 201);
        let slice = p.slice("agent-5", "tool-5", "invoke").expect("slice");
        let ids: Vec<String> = slice.policies().map(|p| p.id().to_string()).collect();
        assert_eq!(ids.len(), 2, "{ids:?}");
        assert_eq!(
            p.slice("agent-5", "tool-6", "invoke")
                .expect("slice")
                .policies()
                .count(),
            1
        );
        assert_eq!(
            p.slice("agent-5", "tool-5", "import")
                .expect("slice")
                .policies()
                .count(),
            1
        );
        // The forbids name `invoke`: the unattended slice has the baseline only.
        assert_eq!(
            p.slice("agent-5", "tool-5", "invoke_unattended")
                .expect("slice")
                .policies()
                .count(),
            1
        );
        let mut f = facts();
        f.agent = "agent-5".into();
        f.tool = "tool-5".into();
        f.usage.minute = 101;
        assert_eq!(p.decide(&f, None).policies(), ["a5".to_string()]);
    }

    #[test]
    fn the_schema_parses_and_requests_conform_to_it() {
        let schema = schema().expect("schema");
        let t = types().expect("types");
        let f = facts();
        let (entities, principal, resource) = entity_list(t, &f, None).expect("entities");
        let ctx = context(t, &f, None).expect("context");
        Request::new(
            principal.clone(),
            uid(&t.action, "invoke"),
            resource,
            ctx,
            Some(schema),
        )
        .expect("invoke request conforms");
        Entities::from_entities(entities, Some(schema)).expect("entities conform");
        let call = ImportCall::HttpRequest {
            scheme: "https".into(),
            host: "api.example.com".into(),
            port: 443,
            method: "GET".into(),
            path: "/x".into(),
        };
        let (entities, principal, resource) = entity_list(t, &f, Some(&call)).expect("entities");
        let ctx = context(t, &f, Some(&call)).expect("context");
        Request::new(
            principal,
            uid(&t.action, "import"),
            resource,
            ctx,
            Some(schema),
        )
        .expect("import request conforms");
        Entities::from_entities(entities, Some(schema)).expect("entities conform");
    }
}
