//! Operator operations: tenants, principals, settings, the tool registry,
//! agents, credentials and grants. Each checks the caller first (tenant, then
//! role, then separation of duties), validates its input completely, and only
//! then writes, in one store transaction.

use serde::{Deserialize, Serialize};
use warden_policy::{Grant, Manifest, Operation, Roles, SeparationRule};
use warden_store::{NewAgent, NewGrant, NewPrincipal, NewToolVersion, TenantStore};

use crate::keys::{self, KeyKind};
use crate::{
    AgentRecord, AgentStatus, Caller, DeploymentRecord, Error, EventRecord, GrantRecord, Principal,
    PrincipalRecord, Result, ToolVersionRecord, Warden,
};

/// Seconds in a day.
const DAY: i64 = 86_400;
/// Renewal period of a new agent when none is given.
pub const DEFAULT_RENEW_DAYS: u32 = 90;
/// Longest renewal period: agents are reviewed at least yearly.
pub const MAX_RENEW_DAYS: u32 = 366;
/// Days without activity after which an agent is flagged idle, unless the
/// tenant sets `idle_days`.
pub const DEFAULT_IDLE_DAYS: u32 = 30;
/// Grant lifetime when none is given.
pub const DEFAULT_GRANT_DAYS: u32 = 90;

/// Approvals a held call needs when the tenant sets none.
pub const DEFAULT_APPROVALS_REQUIRED: u32 = 1;
/// Seconds a held call waits for its approvers when the tenant sets none.
pub const DEFAULT_APPROVAL_TTL_SECS: i64 = 3600;
/// Longest a held call may wait: a week.
pub const MAX_APPROVAL_TTL_SECS: i64 = 7 * DAY;

/// Tenant settings and their meaning. Only these keys exist.
const SETTINGS: [(&str, &str); 6] = [
    (
        "approvals_required",
        "approving votes a held call needs, 1-9 (default 1); any reject vetoes",
    ),
    (
        "approval_ttl_secs",
        "seconds a held call waits for its approvers before it expires (= rejected), 10-604800 (default 3600)",
    ),
    (
        "approval_webhook",
        "http(s) URL posted a JSON note on each new hold and each decision (empty: none)",
    ),
    (
        "allow_self_deploy",
        "`true` lets a deployer deploy a version they published",
    ),
    (
        "allow_owner_approval",
        "`true` lets an approver decide calls of an agent they own",
    ),
    (
        "idle_days",
        "days without activity before an agent is flagged idle (default 30)",
    ),
];

/// A tenant's settings as they apply now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub allow_self_deploy: bool,
    pub allow_owner_approval: bool,
    pub idle_days: u32,
    pub approvals_required: u32,
    pub approval_ttl_secs: i64,
    pub approval_webhook: Option<String>,
    /// Every explicitly set value: (key, value, changed by, changed at).
    pub changes: Vec<(String, String, String, i64)>,
}

impl Settings {
    /// Whether a separation rule has been relaxed.
    pub fn relaxed(&self, rule: SeparationRule) -> bool {
        match rule {
            SeparationRule::DeployOwnVersion => self.allow_self_deploy,
            SeparationRule::ApproveOwnAgent => self.allow_owner_approval,
        }
    }
}

/// One agent in the inventory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentSummary {
    #[serde(flatten)]
    pub agent: AgentRecord,
    /// No activity for the tenant's `idle_days`.
    pub idle: bool,
    /// The renewal date has passed.
    pub overdue: bool,
    /// Tools with a live, unexpired grant.
    pub grants: Vec<String>,
}

/// One tool in the inventory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToolSummary {
    pub tool: String,
    pub live: Option<String>,
    pub versions: Vec<ToolVersionRecord>,
}

/// What `warden inventory` shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Inventory {
    pub tenant: String,
    pub agents: Vec<AgentSummary>,
    pub tools: Vec<ToolSummary>,
    pub principals: Vec<PrincipalRecord>,
}

fn valid_name(kind: &str, name: &str) -> Result<()> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{kind} name `{name}` must be 1-64 ASCII letters, digits, `-`, `_` or `.`"
        )))
    }
}

fn days(kind: &str, n: u32, max: u32) -> Result<i64> {
    if n == 0 || n > max {
        return Err(Error::Invalid(format!(
            "{kind} must be between 1 and {max} days"
        )));
    }
    Ok(i64::from(n) * DAY)
}

impl Warden {
    /// The principal calling, checked to hold the role `op` needs. The admin
    /// key holds no tenant role.
    pub(crate) fn principal<'a>(&self, caller: &'a Caller, op: Operation) -> Result<&'a Principal> {
        match caller {
            Caller::Admin => Err(Error::Forbidden(format!(
                "the admin key only creates tenants and their first deployer; `{}` needs a principal with the {} role",
                op.name(),
                op.required_role()
            ))),
            Caller::Principal(p) => {
                p.roles.authorize(op).map_err(Error::Forbidden)?;
                Ok(p)
            }
        }
    }

    pub(crate) async fn tenant_of(&self, p: &Principal) -> Result<TenantStore> {
        Ok(self.store.tenant(&p.tenant).await?)
    }

    /// Checks that a `--tenant` the caller named is the caller's own.
    pub fn check_tenant(&self, caller: &Caller, tenant: &str) -> Result<()> {
        match caller {
            Caller::Principal(p) if p.tenant != tenant => Err(Error::Forbidden(format!(
                "your key belongs to tenant `{}`, not `{tenant}`",
                p.tenant
            ))),
            _ => Ok(()),
        }
    }

    // ---- tenants, principals, settings -------------------------------------------

    /// Creates a tenant (admin only).
    pub async fn create_tenant(&self, caller: &Caller, name: &str) -> Result<()> {
        if *caller != Caller::Admin {
            return Err(Error::Forbidden(
                "only the admin key creates tenants".into(),
            ));
        }
        if !warden_store::valid_tenant_name(name) {
            return Err(Error::Invalid(format!(
                "tenant name `{name}` must be 1-63 lower-case letters, digits or `-`, starting with a letter"
            )));
        }
        self.store
            .create_tenant(name, &caller.actor(), self.now())
            .await?;
        Ok(())
    }

    /// Every tenant's name (admin only).
    pub async fn tenants(&self, caller: &Caller) -> Result<Vec<String>> {
        if *caller != Caller::Admin {
            return Err(Error::Forbidden("only the admin key lists tenants".into()));
        }
        Ok(self.store.tenant_names().await?)
    }

    /// Adds a principal and returns its API key (shown once). Deployers add
    /// principals to their tenant; the admin key adds only a tenant's first
    /// deployer.
    pub async fn add_principal(
        &self,
        caller: &Caller,
        tenant: &str,
        name: &str,
        roles: &[String],
    ) -> Result<(PrincipalRecord, String)> {
        self.check_tenant(caller, tenant)?;
        valid_name("principal", name)?;
        let roles = Roles::parse(roles).map_err(|e| Error::Invalid(e.to_string()))?;
        let store = match caller {
            Caller::Admin => {
                let store = self.store.tenant(tenant).await?;
                let principals = store.principals().await?;
                if principals
                    .iter()
                    .any(|p| p.roles.iter().any(|r| r == "deployer"))
                {
                    return Err(Error::Forbidden(format!(
                        "tenant `{tenant}` already has a deployer; the admin key only bootstraps the first one"
                    )));
                }
                if !roles.has(warden_policy::Role::Deployer) {
                    return Err(Error::Forbidden(
                        "the admin key adds only a tenant's first deployer: include the deployer role"
                            .into(),
                    ));
                }
                store
            }
            Caller::Principal(_) => {
                let p = self.principal(caller, Operation::AddPrincipal)?;
                self.tenant_of(p).await?
            }
        };
        let key = keys::generate(KeyKind::ApiKey, Some(tenant))?;
        let record = store
            .add_principal(NewPrincipal {
                name,
                roles: &roles.names(),
                key_hash: &warden_store::hash_secret(&key),
                actor: &caller.actor(),
                now: self.now(),
            })
            .await?;
        Ok((record, key))
    }

    /// The tenant's settings.
    pub async fn settings(&self, caller: &Caller) -> Result<Settings> {
        let p = self.principal(caller, Operation::ReadInventory)?;
        load_settings(&self.tenant_of(p).await?).await
    }

    /// Changes a tenant setting; the change is recorded with who made it.
    pub async fn set_setting(&self, caller: &Caller, key: &str, value: &str) -> Result<()> {
        let p = self.principal(caller, Operation::ChangeSettings)?;
        let Some(_) = SETTINGS.iter().find(|(k, _)| *k == key) else {
            let known: Vec<String> = SETTINGS.iter().map(|(k, d)| format!("{k} ({d})")).collect();
            return Err(Error::Invalid(format!(
                "unknown setting `{key}`; known: {}",
                known.join("; ")
            )));
        };
        let valid = match key {
            "idle_days" => value.parse::<u32>().is_ok_and(|d| (1..=3650).contains(&d)),
            "approvals_required" => value.parse::<u32>().is_ok_and(|d| (1..=9).contains(&d)),
            "approval_ttl_secs" => value
                .parse::<i64>()
                .is_ok_and(|d| (10..=MAX_APPROVAL_TTL_SECS).contains(&d)),
            "approval_webhook" => {
                value.is_empty()
                    || reqwest::Url::parse(value)
                        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            }
            _ => matches!(value, "true" | "false"),
        };
        if !valid {
            let what = SETTINGS
                .iter()
                .find(|(k, _)| *k == key)
                .map_or("", |(_, d)| *d);
            return Err(Error::Invalid(format!(
                "setting `{key}` does not accept `{value}`: {what}"
            )));
        }
        let store = self.tenant_of(p).await?;
        store
            .set_setting(key, value, &caller.actor(), self.now())
            .await?;
        Ok(())
    }

    // ---- tool registry ------------------------------------------------------------

    /// Publishes a tool version: checks the manifest, compiles the component,
    /// checks that its own description agrees with the manifest, then stores
    /// both. Any failure writes nothing.
    pub async fn publish_tool(
        &self,
        caller: &Caller,
        component: &[u8],
        manifest_toml: &str,
    ) -> Result<ToolVersionRecord> {
        let p = self.principal(caller, Operation::PublishTool)?;
        let manifest =
            Manifest::from_toml(manifest_toml).map_err(|e| Error::Invalid(e.to_string()))?;
        let tool = self
            .runtime
            .load(component)
            .await
            .map_err(|e| Error::Invalid(format!("the component was refused: {e}")))?;
        let info = tool.info();
        if info.name != manifest.name || info.version != manifest.version {
            return Err(Error::Invalid(format!(
                "the component describes itself as `{}` {} but the manifest says `{}` {}",
                info.name, info.version, manifest.name, manifest.version
            )));
        }
        manifest
            .check_component(&info.effects(), tool.required_capabilities())
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let sha256 = tool.hash_hex();
        let manifest_json = serde_json::to_string(&manifest)
            .map_err(|e| Error::Internal(format!("encoding a manifest: {e}")))?;
        let store = self.tenant_of(p).await?;
        let record = store
            .publish(NewToolVersion {
                tool: &manifest.name,
                version: &manifest.version,
                sha256: &sha256,
                bytes: component,
                manifest_json: &manifest_json,
                actor: &p.actor(),
                now: self.now(),
            })
            .await?;
        self.lock_tools().insert(sha256, tool);
        Ok(record)
    }

    /// Deploys a published version: it becomes the live version of its tool.
    pub async fn deploy_tool(
        &self,
        caller: &Caller,
        tool: &str,
        version: &str,
    ) -> Result<DeploymentRecord> {
        let p = self.principal(caller, Operation::DeployTool)?;
        self.deploy(p, tool, version, "deploy").await
    }

    /// Rolls a tool back to `to`, or to the version live before the current one.
    pub async fn rollback_tool(
        &self,
        caller: &Caller,
        tool: &str,
        to: Option<&str>,
    ) -> Result<DeploymentRecord> {
        let p = self.principal(caller, Operation::RollbackTool)?;
        let store = self.tenant_of(p).await?;
        let history = store.deployments(tool).await?;
        let Some(current) = history.first() else {
            return Err(Error::Invalid(format!(
                "tool `{tool}` has never been deployed; there is nothing to roll back"
            )));
        };
        let target = match to {
            Some(v) => v.to_owned(),
            None => history
                .iter()
                .find(|d| d.version != current.version)
                .map(|d| d.version.clone())
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "tool `{tool}` has had only version {} live; name a version with --to",
                        current.version
                    ))
                })?,
        };
        if target == current.version {
            return Err(Error::Invalid(format!(
                "version {target} of `{tool}` is already live"
            )));
        }
        self.deploy(p, tool, &target, "rollback").await
    }

    async fn deploy(
        &self,
        p: &Principal,
        tool: &str,
        version: &str,
        kind: &str,
    ) -> Result<DeploymentRecord> {
        let store = self.tenant_of(p).await?;
        let published = store.tool_version(tool, version).await?;
        let settings = load_settings(&store).await?;
        let rule = SeparationRule::DeployOwnVersion;
        rule.check(&p.actor(), &published.published_by, settings.relaxed(rule))
            .map_err(Error::Forbidden)?;
        Ok(store
            .deploy(tool, version, kind, &p.actor(), self.now())
            .await?)
    }

    // ---- agents -------------------------------------------------------------------

    /// Drafts an agent owned by `owner` (default: the caller).
    pub async fn create_agent(
        &self,
        caller: &Caller,
        name: &str,
        purpose: &str,
        owner: Option<&str>,
        renew_days: Option<u32>,
    ) -> Result<AgentRecord> {
        let p = self.principal(caller, Operation::DraftAgent)?;
        valid_name("agent", name)?;
        if purpose.trim().is_empty() {
            return Err(Error::Invalid("an agent needs a purpose".into()));
        }
        let renew = days(
            "the renewal period",
            renew_days.unwrap_or(DEFAULT_RENEW_DAYS),
            MAX_RENEW_DAYS,
        )?;
        let store = self.tenant_of(p).await?;
        let owner_id = match owner {
            None => p.id.clone(),
            Some(name) => store.principal_by_name(name).await?.id,
        };
        let now = self.now();
        Ok(store
            .create_agent(NewAgent {
                name,
                owner_id: &owner_id,
                purpose: purpose.trim(),
                renew_by: now + renew,
                actor: &caller.actor(),
                now,
            })
            .await?)
    }

    /// Activates a draft or suspended agent.
    pub async fn activate_agent(&self, caller: &Caller, agent: &str) -> Result<AgentRecord> {
        let p = self.principal(caller, Operation::ActivateAgent)?;
        let store = self.tenant_of(p).await?;
        let a = store.agent_by_name(agent).await?;
        match a.status {
            AgentStatus::Decommissioned => {
                return Err(Error::Forbidden(format!(
                    "agent `{agent}` is decommissioned; create a new agent instead"
                )));
            }
            AgentStatus::Active => {
                return Err(Error::Conflict(format!(
                    "agent `{agent}` is already active"
                )));
            }
            AgentStatus::Draft | AgentStatus::Suspended => {}
        }
        if a.renew_by <= self.now() {
            return Err(Error::Forbidden(format!(
                "agent `{agent}` is past its renewal date; renew it first"
            )));
        }
        store
            .set_agent_status(
                &a.id,
                AgentStatus::Active,
                "activated",
                &caller.actor(),
                self.now(),
            )
            .await?;
        Ok(store.agent_by_id(&a.id).await?)
    }

    /// Suspends an agent: its tokens stop working until it is activated again.
    pub async fn suspend_agent(
        &self,
        caller: &Caller,
        agent: &str,
        reason: &str,
    ) -> Result<AgentRecord> {
        let p = self.principal(caller, Operation::SuspendAgent)?;
        let store = self.tenant_of(p).await?;
        let a = store.agent_by_name(agent).await?;
        if a.status == AgentStatus::Decommissioned {
            return Err(Error::Forbidden(format!(
                "agent `{agent}` is decommissioned"
            )));
        }
        store
            .set_agent_status(
                &a.id,
                AgentStatus::Suspended,
                reason,
                &caller.actor(),
                self.now(),
            )
            .await?;
        Ok(store.agent_by_id(&a.id).await?)
    }

    /// Moves an agent's renewal date to `days` from now.
    pub async fn renew_agent(
        &self,
        caller: &Caller,
        agent: &str,
        days_ahead: u32,
    ) -> Result<AgentRecord> {
        let p = self.principal(caller, Operation::RenewAgent)?;
        let period = days("the renewal period", days_ahead, MAX_RENEW_DAYS)?;
        let store = self.tenant_of(p).await?;
        let a = store.agent_by_name(agent).await?;
        if a.status == AgentStatus::Decommissioned {
            return Err(Error::Forbidden(format!(
                "agent `{agent}` is decommissioned"
            )));
        }
        let now = self.now();
        store
            .renew_agent(&a.id, now + period, &caller.actor(), now)
            .await?;
        Ok(store.agent_by_id(&a.id).await?)
    }

    /// Decommissions an agent: revokes its credentials, tokens and grants in
    /// one transaction and keeps its history. There is no way back.
    pub async fn decommission_agent(
        &self,
        caller: &Caller,
        agent: &str,
        reason: &str,
    ) -> Result<AgentRecord> {
        let p = self.principal(caller, Operation::DecommissionAgent)?;
        let store = self.tenant_of(p).await?;
        let a = store.agent_by_name(agent).await?;
        if a.status == AgentStatus::Decommissioned {
            return Err(Error::Conflict(format!(
                "agent `{agent}` is already decommissioned"
            )));
        }
        store
            .set_agent_status(
                &a.id,
                AgentStatus::Decommissioned,
                reason,
                &caller.actor(),
                self.now(),
            )
            .await?;
        Ok(store.agent_by_id(&a.id).await?)
    }

    /// Issues a long-lived credential to an agent and returns it (shown once).
    pub async fn issue_credential(&self, caller: &Caller, agent: &str) -> Result<String> {
        let p = self.principal(caller, Operation::IssueCredential)?;
        let store = self.tenant_of(p).await?;
        let a = store.agent_by_name(agent).await?;
        if a.status == AgentStatus::Decommissioned {
            return Err(Error::Forbidden(format!(
                "agent `{agent}` is decommissioned"
            )));
        }
        let credential = keys::generate(KeyKind::Credential, Some(&p.tenant))?;
        store
            .add_credential(
                &a.id,
                &warden_store::hash_secret(&credential),
                &caller.actor(),
                self.now(),
            )
            .await?;
        Ok(credential)
    }

    // ---- grants -------------------------------------------------------------------

    /// Grants an agent a tool: `grant` (already parsed and validated) must be
    /// within the live version's manifest. Replaces the agent's previous grant
    /// on the tool.
    pub async fn add_grant(
        &self,
        caller: &Caller,
        agent: &str,
        tool: &str,
        grant: &Grant,
        expires_in_days: Option<u32>,
    ) -> Result<GrantRecord> {
        let p = self.principal(caller, Operation::AddGrant)?;
        grant
            .validate()
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let lifetime = days(
            "a grant's lifetime",
            expires_in_days.unwrap_or(DEFAULT_GRANT_DAYS),
            MAX_RENEW_DAYS,
        )?;
        let store = self.tenant_of(p).await?;
        let a = store.agent_by_name(agent).await?;
        if a.status == AgentStatus::Decommissioned {
            return Err(Error::Forbidden(format!(
                "agent `{agent}` is decommissioned"
            )));
        }
        let live = store.live_version(tool).await?.ok_or_else(|| {
            Error::Invalid(format!(
                "tool `{tool}` has no deployed version; deploy one before granting it"
            ))
        })?;
        let manifest = parse_manifest(&live)?;
        manifest
            .check_grant(grant)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let spec = serde_json::to_string(grant)
            .map_err(|e| Error::Internal(format!("encoding a grant: {e}")))?;
        let now = self.now();
        Ok(store
            .add_grant(NewGrant {
                agent_id: &a.id,
                tool,
                spec_json: &spec,
                expires_at: now + lifetime,
                actor: &caller.actor(),
                now,
            })
            .await?)
    }

    /// Revokes an agent's grant on a tool; the next call is denied.
    pub async fn revoke_grant(&self, caller: &Caller, agent: &str, tool: &str) -> Result<()> {
        let p = self.principal(caller, Operation::RevokeGrant)?;
        let store = self.tenant_of(p).await?;
        let a = store.agent_by_name(agent).await?;
        if store
            .revoke_grant(&a.id, tool, &caller.actor(), self.now())
            .await?
        {
            Ok(())
        } else {
            Err(Error::NotFound(format!(
                "a live grant of `{agent}` on `{tool}`"
            )))
        }
    }

    /// Grants, optionally of one agent; `history` includes revoked ones.
    pub async fn grants(
        &self,
        caller: &Caller,
        agent: Option<&str>,
        history: bool,
    ) -> Result<Vec<GrantRecord>> {
        let p = self.principal(caller, Operation::ReadInventory)?;
        let store = self.tenant_of(p).await?;
        let agent_id = match agent {
            Some(name) => Some(store.agent_by_name(name).await?.id),
            None => None,
        };
        Ok(store.grants(agent_id.as_deref(), history).await?)
    }

    // ---- reading ------------------------------------------------------------------

    /// Agents (with idle and overdue flags and granted tools), tools and
    /// principals of the caller's tenant.
    pub async fn inventory(&self, caller: &Caller) -> Result<Inventory> {
        let p = self.principal(caller, Operation::ReadInventory)?;
        let store = self.tenant_of(p).await?;
        let settings = load_settings(&store).await?;
        let now = self.now();
        let grants = store.grants(None, false).await?;
        let agents = store
            .agents()
            .await?
            .into_iter()
            .map(|agent| {
                let last = agent.last_active_at.unwrap_or(agent.created_at);
                AgentSummary {
                    idle: agent.status != AgentStatus::Decommissioned
                        && now - last > i64::from(settings.idle_days) * DAY,
                    overdue: agent.status != AgentStatus::Decommissioned && agent.renew_by <= now,
                    grants: grants
                        .iter()
                        .filter(|g| g.agent_id == agent.id && g.expires_at > now)
                        .map(|g| g.tool.clone())
                        .collect(),
                    agent,
                }
            })
            .collect();
        let mut tools: Vec<ToolSummary> = Vec::new();
        for v in store.tool_versions().await? {
            match tools.last_mut() {
                Some(t) if t.tool == v.tool => t.versions.push(v),
                _ => tools.push(ToolSummary {
                    tool: v.tool.clone(),
                    live: None,
                    versions: vec![v],
                }),
            }
        }
        for t in &mut tools {
            t.live = store.live_version(&t.tool).await?.map(|v| v.version);
        }
        Ok(Inventory {
            tenant: p.tenant.clone(),
            agents,
            tools,
            principals: store.principals().await?,
        })
    }

    /// The tenant's governance history.
    pub async fn events(&self, caller: &Caller) -> Result<Vec<EventRecord>> {
        let p = self.principal(caller, Operation::ReadInventory)?;
        Ok(self.tenant_of(p).await?.events().await?)
    }

    /// Suspends every agent, in every tenant, whose renewal date has passed.
    /// Returns (tenant, agent) of each one suspended. `warden serve` runs this
    /// periodically; authentication also checks the date on every use. On
    /// PostgreSQL it also deletes data-classification sessions idle for a
    /// day (a single process forgets those in memory).
    pub async fn sweep(&self) -> Result<Vec<(String, String)>> {
        let now = self.now();
        let mut suspended = Vec::new();
        for tenant in self.store.tenant_names().await? {
            let store = self.store.tenant(&tenant).await?;
            for a in store.agents().await? {
                if a.status == AgentStatus::Active && a.renew_by <= now {
                    store
                        .set_agent_status(
                            &a.id,
                            AgentStatus::Suspended,
                            "renewal date passed",
                            "system",
                            now,
                        )
                        .await?;
                    suspended.push((tenant.clone(), a.name));
                }
            }
            // Housekeeping: a failure is logged, and never stops the
            // suspensions of the tenants after this one.
            if self.store.is_postgres()
                && let Err(e) = crate::sessions::prune_shared(&store, now).await
            {
                tracing::warn!(%tenant, error = %e, "pruning idle data sessions failed");
            }
        }
        Ok(suspended)
    }
}

pub(crate) async fn load_settings(store: &TenantStore) -> Result<Settings> {
    let changes = store.settings().await?;
    let get = |k: &str| changes.iter().find(|c| c.0 == k).map(|c| c.1.as_str());
    Ok(Settings {
        allow_self_deploy: get("allow_self_deploy") == Some("true"),
        allow_owner_approval: get("allow_owner_approval") == Some("true"),
        idle_days: get("idle_days")
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_IDLE_DAYS),
        approvals_required: get("approvals_required")
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_APPROVALS_REQUIRED),
        approval_ttl_secs: get("approval_ttl_secs")
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_APPROVAL_TTL_SECS),
        approval_webhook: get("approval_webhook")
            .filter(|v| !v.is_empty())
            .map(str::to_owned),
        changes,
    })
}

pub(crate) fn parse_manifest(v: &ToolVersionRecord) -> Result<Manifest> {
    serde_json::from_str(&v.manifest).map_err(|e| {
        Error::Internal(format!(
            "stored manifest of `{}` {} does not parse: {e}",
            v.tool, v.version
        ))
    })
}
