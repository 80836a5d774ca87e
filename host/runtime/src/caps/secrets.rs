//! The `secrets` capability: `warden:tool/secrets`, named secrets from the
//! grant.
//!
//! Values come from a [`SecretSource`] chosen by the host (the environment for
//! `warden run`). Only names the grant lists are ever looked up.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use warden_policy::{Decision, ImportCall};
use wasmtime::component::HasData;

use crate::bindings::warden::tool::secrets::{self as wit, Error};
use crate::guard::Guard;

/// Where secret values come from.
pub trait SecretSource: Send + Sync + Debug {
    /// The value of `name`, if this host has one.
    fn get(&self, name: &str) -> Option<String>;
}

/// Secrets held in memory, for tests and embedding.
#[derive(Debug, Default, Clone)]
pub struct StaticSecrets(pub BTreeMap<String, String>);

impl SecretSource for StaticSecrets {
    fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

/// Per-call secrets state.
#[derive(Debug)]
pub struct SecretsState {
    pub source: Arc<dyn SecretSource>,
}

/// `HasData` marker for secrets.
#[derive(Debug)]
pub struct SecretsCap;

impl HasData for SecretsCap {
    type Data<'a> = SecretsView<'a>;
}

/// What the secrets host function can reach.
#[derive(Debug)]
pub struct SecretsView<'a> {
    pub state: &'a SecretsState,
    pub guard: &'a Guard,
}

impl wit::Host for SecretsView<'_> {
    fn get(&mut self, name: String) -> Result<String, Error> {
        match self
            .guard
            .check(ImportCall::SecretGet { name: name.clone() })
        {
            (_, Decision::Deny { reason, .. }) => Err(Error::Denied(reason)),
            (seq, Decision::Allow) => {
                // The value is never journaled: the journal keeps whether the
                // secret was there, and a replay reads it from the source
                // again.
                let missing = || {
                    Error::Missing(format!(
                        "secret `{name}` is granted but has no value on this host"
                    ))
                };
                if self.guard.replaying() {
                    let journaled = self
                        .guard
                        .replayed(seq, &serde_json::Value::Null)
                        .map_err(Error::Denied)?;
                    if journaled.get("err").is_some() {
                        self.guard.record_error(seq, "missing".to_owned());
                        return Err(missing());
                    }
                }
                match self.state.source.get(&name) {
                    Some(v) => {
                        self.guard.secret_read(&name, &v);
                        self.guard.journal(
                            seq,
                            serde_json::Value::Null,
                            serde_json::json!({ "ok": "(withheld)" }),
                        );
                        Ok(v)
                    }
                    None => {
                        self.guard.record_error(seq, "missing".to_owned());
                        self.guard.journal(
                            seq,
                            serde_json::Value::Null,
                            serde_json::json!({ "err": "missing" }),
                        );
                        Err(missing())
                    }
                }
            }
        }
    }
}
