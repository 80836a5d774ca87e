//! Roles, operations and separation of duties.
//!
//! Four roles that do not imply one another: each operation needs exactly one
//! role, and holding another role (even `deployer`) never stands in for it. The
//! table in [`Operation::required_role`] is the whole authorization model; the
//! service checks it before every operation and a test walks every operation
//! against every role.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A role a principal may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads inventory, grants and the audit trail (auditors hold this).
    Viewer,
    /// Publishes tool versions and drafts agents.
    Builder,
    /// Decides held calls.
    Approver,
    /// Deploys tool versions, grants capabilities, manages agents' lifecycle,
    /// credentials, principals and tenant settings.
    Deployer,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Builder, Role::Approver, Role::Deployer];

    /// The role's name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Builder => "builder",
            Role::Approver => "approver",
            Role::Deployer => "deployer",
        }
    }

    /// Parses a role name.
    pub fn parse(name: &str) -> Result<Role> {
        Role::ALL
            .into_iter()
            .find(|r| r.name() == name)
            .ok_or_else(|| {
                Error::InvalidRole(format!(
                    "unknown role `{name}` (known: viewer, builder, approver, deployer)"
                ))
            })
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The roles one principal holds: never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles(BTreeSet<Role>);

impl Roles {
    /// Parses role names; at least one, no unknown names.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Roles> {
        let roles = names
            .iter()
            .map(|n| Role::parse(n.as_ref().trim()))
            .collect::<Result<BTreeSet<Role>>>()?;
        if roles.is_empty() {
            return Err(Error::InvalidRole(
                "a principal needs at least one role".into(),
            ));
        }
        Ok(Roles(roles))
    }

    /// Whether `role` is held.
    pub fn has(&self, role: Role) -> bool {
        self.0.contains(&role)
    }

    /// The role names, in a stable order.
    pub fn names(&self) -> Vec<String> {
        self.0.iter().map(|r| r.name().to_owned()).collect()
    }

    /// Allows `op` only if its one required role is held.
    pub fn authorize(&self, op: Operation) -> Result<(), String> {
        let need = op.required_role();
        if self.has(need) {
            Ok(())
        } else {
            Err(format!(
                "`{}` needs the {need} role; you hold {}",
                op.name(),
                self.names().join(", ")
            ))
        }
    }
}

/// Everything a principal can ask of the governance layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    /// Read agents, principals, tools, grants, settings and history.
    ReadInventory,
    PublishTool,
    DraftAgent,
    DeployTool,
    RollbackTool,
    AddGrant,
    RevokeGrant,
    ActivateAgent,
    SuspendAgent,
    RenewAgent,
    DecommissionAgent,
    IssueCredential,
    AddPrincipal,
    ChangeSettings,
    DecideApproval,
    /// Read the audit trail: entries, payloads, checkpoints, proofs, export.
    ReadAudit,
    /// Rotate the tenant's audit keys.
    RotateAuditKeys,
    /// Upload a new version of the tenant's Cedar policy set.
    SetPolicy,
}

impl Operation {
    /// Every operation.
    pub const ALL: [Operation; 18] = [
        Operation::ReadInventory,
        Operation::PublishTool,
        Operation::DraftAgent,
        Operation::DeployTool,
        Operation::RollbackTool,
        Operation::AddGrant,
        Operation::RevokeGrant,
        Operation::ActivateAgent,
        Operation::SuspendAgent,
        Operation::RenewAgent,
        Operation::DecommissionAgent,
        Operation::IssueCredential,
        Operation::AddPrincipal,
        Operation::ChangeSettings,
        Operation::DecideApproval,
        Operation::ReadAudit,
        Operation::RotateAuditKeys,
        Operation::SetPolicy,
    ];

    /// The operation as the CLI names it.
    pub fn name(self) -> &'static str {
        match self {
            Operation::ReadInventory => "inventory",
            Operation::PublishTool => "tool publish",
            Operation::DraftAgent => "agent create",
            Operation::DeployTool => "tool deploy",
            Operation::RollbackTool => "tool rollback",
            Operation::AddGrant => "grant add",
            Operation::RevokeGrant => "grant revoke",
            Operation::ActivateAgent => "agent activate",
            Operation::SuspendAgent => "agent suspend",
            Operation::RenewAgent => "agent renew",
            Operation::DecommissionAgent => "agent decommission",
            Operation::IssueCredential => "credential issue",
            Operation::AddPrincipal => "principal add",
            Operation::ChangeSettings => "tenant set",
            Operation::DecideApproval => "approval decide",
            Operation::ReadAudit => "audit export",
            Operation::RotateAuditKeys => "audit rotate-key",
            Operation::SetPolicy => "policy set",
        }
    }

    /// The one role this operation needs.
    pub fn required_role(self) -> Role {
        match self {
            Operation::ReadInventory | Operation::ReadAudit => Role::Viewer,
            Operation::PublishTool | Operation::DraftAgent => Role::Builder,
            Operation::DecideApproval => Role::Approver,
            Operation::DeployTool
            | Operation::RollbackTool
            | Operation::AddGrant
            | Operation::RevokeGrant
            | Operation::ActivateAgent
            | Operation::SuspendAgent
            | Operation::RenewAgent
            | Operation::DecommissionAgent
            | Operation::IssueCredential
            | Operation::AddPrincipal
            | Operation::ChangeSettings
            | Operation::RotateAuditKeys
            | Operation::SetPolicy => Role::Deployer,
        }
    }
}

/// A separation-of-duties rule. Each holds unless the tenant relaxed it with
/// an explicit, recorded setting named [`SeparationRule::setting`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeparationRule {
    /// The deployer of a tool version is not the builder who published it.
    DeployOwnVersion,
    /// No one approves a call of an agent they own.
    ApproveOwnAgent,
}

impl SeparationRule {
    /// Every rule.
    pub const ALL: [SeparationRule; 2] = [
        SeparationRule::DeployOwnVersion,
        SeparationRule::ApproveOwnAgent,
    ];

    /// The tenant setting that relaxes this rule when set to `true`.
    pub fn setting(self) -> &'static str {
        match self {
            SeparationRule::DeployOwnVersion => "allow_self_deploy",
            SeparationRule::ApproveOwnAgent => "allow_owner_approval",
        }
    }

    /// Checks the rule: `actor` must differ from `other` (the publisher, or the
    /// agent's owner) unless the rule is `relaxed`.
    pub fn check(self, actor: &str, other: &str, relaxed: bool) -> Result<(), String> {
        if actor != other || relaxed {
            return Ok(());
        }
        Err(match self {
            SeparationRule::DeployOwnVersion => format!(
                "separation of duties: you published this version, so another deployer must deploy it (tenant setting `{}` is off)",
                self.setting()
            ),
            SeparationRule::ApproveOwnAgent => format!(
                "separation of duties: you own this agent, so another approver must decide its calls (tenant setting `{}` is off)",
                self.setting()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_needs_exactly_its_role() {
        for op in Operation::ALL {
            for role in Role::ALL {
                let roles = Roles::parse(&[role.name()]).expect("role");
                assert_eq!(
                    roles.authorize(op).is_ok(),
                    role == op.required_role(),
                    "{} as {role}",
                    op.name()
                );
            }
        }
    }

    #[test]
    fn roles_parse_and_refuse() {
        assert!(Roles::parse(&["builder", "deployer"]).is_ok());
        let empty: [&str; 0] = [];
        assert!(Roles::parse(&empty).is_err());
        let e = Roles::parse(&["admin"]).expect_err("unknown role");
        assert!(e.to_string().contains("unknown role `admin`"), "{e}");
    }

    #[test]
    fn separation_rules_hold_unless_relaxed() {
        for rule in SeparationRule::ALL {
            assert!(rule.check("p_1", "p_2", false).is_ok());
            assert!(rule.check("p_1", "p_1", false).is_err());
            assert!(rule.check("p_1", "p_1", true).is_ok());
        }
    }
}
