//! Warden's pure policy layer: grants, limits and the decision for every import
//! call.
//!
//! Architecture invariant: this crate does no IO, has no async and knows nothing
//! of wasmtime. It takes typed data in and gives a [`Decision`] out, so every
//! rule can be tested as a table without a guest or a runtime.

#![forbid(unsafe_code)]

pub mod cedar;
mod check;
mod grant;
mod limits;
mod manifest;
mod roles;

pub use check::{Decision, ImportCall, check_import};
pub use grant::{
    Capability, DirGrant, DirMode, FsGrant, Grant, HostRule, HttpGrant, KvGrant, LogGrant,
    MAX_KV_KEY_BYTES, MAX_KV_VALUE_BYTES, MAX_LOG_BYTES, MAX_RESPONSE_BYTES, RateGrant,
    SecretsGrant,
};
pub use limits::{Limits, ceiling};
pub use manifest::{
    Classification, DirRequest, Effect, FsRequest, HttpRequest, KvRequest, LogRequest, Manifest,
    ManifestAction, Requests, SecretsRequest,
};
pub use roles::{Operation, Role, Roles, SeparationRule};

/// Why a grant or a policy input was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("invalid grant: {0}")]
    InvalidGrant(String),
    #[error("unknown capability `{0}` (known: fs, http, kv, secrets, log)")]
    UnknownCapability(String),
    #[error("invalid manifest: {0}")]
    InvalidManifest(String),
    #[error("manifest does not match the component: {0}")]
    ManifestMismatch(String),
    #[error("grant exceeds the tool's manifest: {0}")]
    GrantExceedsManifest(String),
    #[error("{0}")]
    InvalidRole(String),
}

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
