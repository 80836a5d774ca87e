//! Rows as the store returns them. Plain data with public fields: the store keeps
//! no invariant on them beyond what the schema enforces.

use serde::{Deserialize, Serialize};

/// Lifecycle state of an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    Draft,
    Active,
    Suspended,
    Decommissioned,
}

impl AgentStatus {
    /// The name stored in the database and shown to people.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Draft => "draft",
            AgentStatus::Active => "active",
            AgentStatus::Suspended => "suspended",
            AgentStatus::Decommissioned => "decommissioned",
        }
    }

    pub(crate) fn parse(s: &str) -> AgentStatus {
        match s {
            "active" => AgentStatus::Active,
            "suspended" => AgentStatus::Suspended,
            "decommissioned" => AgentStatus::Decommissioned,
            // The schema's CHECK allows only the four names; `draft` is the
            // least capable state should anything else ever appear.
            _ => AgentStatus::Draft,
        }
    }
}

impl std::fmt::Display for AgentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A person (or service account) of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrincipalRecord {
    pub id: String,
    pub name: String,
    /// Role names as stored (`viewer`, `builder`, `approver`, `deployer`).
    pub roles: Vec<String>,
    pub created_by: String,
    pub created_at: i64,
}

/// An agent identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub id: String,
    pub name: String,
    pub owner_id: String,
    pub owner: String,
    pub purpose: String,
    pub status: AgentStatus,
    pub renew_by: i64,
    pub last_active_at: Option<i64>,
    pub created_by: String,
    pub created_at: i64,
    pub status_changed_at: i64,
}

/// A short-lived access token of an agent (its hash is the key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub agent_id: String,
    /// Tools the token is narrowed to; `None` means every granted tool.
    pub tools: Option<Vec<String>>,
    pub issued_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

/// One published version of a tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolVersionRecord {
    pub tool: String,
    pub version: String,
    pub sha256: String,
    /// The manifest as JSON (the service parses it into its typed form).
    pub manifest: String,
    pub published_by: String,
    pub published_at: i64,
}

/// One deployment (a version made live).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub seq: i64,
    pub tool: String,
    pub version: String,
    /// `deploy` or `rollback`.
    pub kind: String,
    pub deployed_by: String,
    pub deployed_at: i64,
}

/// A stored grant of one agent on one tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRecord {
    pub id: String,
    pub agent_id: String,
    pub agent: String,
    pub tool: String,
    /// The grant as JSON (the service parses and re-validates it on every use).
    pub spec: String,
    pub expires_at: i64,
    pub created_by: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    pub revoked_by: Option<String>,
}

/// One entry of a tenant's governance history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub seq: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub detail: serde_json::Value,
}

/// One stored version of a tenant's policy set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRecord {
    pub version: i64,
    /// The Cedar text as uploaded (empty: no policy layer).
    pub text: String,
    pub sha256: String,
    pub created_by: String,
    pub created_at: i64,
}
