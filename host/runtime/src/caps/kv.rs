//! The `kv` capability: `warden:tool/kv`, one namespace per grant.
//!
//! The namespace comes from the grant, never from the guest: the guest names
//! keys only, so it cannot reach another tool's keys. Storage sits behind the
//! [`KvBackend`] trait; [`MemoryKv`] is the embedded backend.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use warden_policy::{Decision, ImportCall, KvGrant};
use wasmtime::component::HasData;

use crate::bindings::warden::tool::kv::{self as wit, Error};
use crate::guard::Guard;
use crate::journal::B64;

/// Storage behind the kv capability. Errors are messages for the guest.
pub trait KvBackend: Send + Sync + Debug {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, String>;
    fn set(&self, namespace: &str, key: &str, value: Vec<u8>) -> Result<(), String>;
    fn delete(&self, namespace: &str, key: &str) -> Result<bool, String>;
    fn list(&self, namespace: &str, prefix: &str) -> Result<Vec<String>, String>;
}

/// An in-memory kv store shared by the calls that hold it.
#[derive(Debug, Default)]
pub struct MemoryKv {
    map: Mutex<BTreeMap<(String, String), Vec<u8>>>,
}

impl MemoryKv {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Vec<u8>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every entry, for persisting the store (`warden run --kv-file`).
    pub fn entries(&self) -> Vec<(String, String, Vec<u8>)> {
        self.lock()
            .iter()
            .map(|((n, k), v)| (n.clone(), k.clone(), v.clone()))
            .collect()
    }

    /// Inserts entries, for loading a persisted store.
    pub fn insert_all(&self, entries: impl IntoIterator<Item = (String, String, Vec<u8>)>) {
        let mut map = self.lock();
        for (n, k, v) in entries {
            map.insert((n, k), v);
        }
    }
}

impl KvBackend for MemoryKv {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(self
            .lock()
            .get(&(namespace.to_owned(), key.to_owned()))
            .cloned())
    }

    fn set(&self, namespace: &str, key: &str, value: Vec<u8>) -> Result<(), String> {
        self.lock()
            .insert((namespace.to_owned(), key.to_owned()), value);
        Ok(())
    }

    fn delete(&self, namespace: &str, key: &str) -> Result<bool, String> {
        Ok(self
            .lock()
            .remove(&(namespace.to_owned(), key.to_owned()))
            .is_some())
    }

    fn list(&self, namespace: &str, prefix: &str) -> Result<Vec<String>, String> {
        Ok(self
            .lock()
            .range((namespace.to_owned(), prefix.to_owned())..)
            .take_while(|((n, k), _)| n == namespace && k.starts_with(prefix))
            .map(|((_, k), _)| k.clone())
            .collect())
    }
}

/// Per-call kv state, built from the grant.
#[derive(Debug)]
pub struct KvState {
    pub grant: Option<KvGrant>,
    pub backend: Arc<dyn KvBackend>,
}

/// `HasData` marker for kv.
#[derive(Debug)]
pub struct KvCap;

impl HasData for KvCap {
    type Data<'a> = KvView<'a>;
}

/// What the kv host functions can reach: their own state and the guard.
#[derive(Debug)]
pub struct KvView<'a> {
    pub state: &'a KvState,
    pub guard: &'a Guard,
}

impl KvView<'_> {
    /// A read: [`KvView::act`] without a write-ahead record.
    fn run_now<T: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        call: ImportCall,
        request: serde_json::Value,
        op: impl FnOnce(&dyn KvBackend, &str) -> Result<T, String>,
    ) -> Result<T, Error> {
        let seq = self.decide(call)?;
        self.act(seq, request, op)
    }

    /// Asks the guard; a denial is the error the guest sees.
    fn decide(&self, call: ImportCall) -> Result<u32, Error> {
        match self.guard.check(call) {
            (seq, Decision::Allow) => Ok(seq),
            (_, Decision::Deny { reason, .. }) => Err(Error::Denied(reason)),
        }
    }

    /// A write: guards `call`, makes its decision durable (write-ahead),
    /// then acts.
    async fn run<T: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        call: ImportCall,
        request: serde_json::Value,
        op: impl FnOnce(&dyn KvBackend, &str) -> Result<T, String>,
    ) -> Result<T, Error> {
        let seq = self.decide(call)?;
        self.guard.before_effect(seq).await.map_err(Error::Denied)?;
        self.act(seq, request, op)
    }

    /// Runs `op` on the grant's namespace through the guard's journal (a
    /// replay returns the journaled result instead).
    fn act<T: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        seq: u32,
        request: serde_json::Value,
        op: impl FnOnce(&dyn KvBackend, &str) -> Result<T, String>,
    ) -> Result<T, Error> {
        let namespace = match &self.state.grant {
            Some(g) => Some(g.namespace.as_str()),
            // Allowed without a grant cannot happen when recording: the guard
            // checks the same grant. Deny anyway rather than trust that. A
            // replay has no grant and touches no backend.
            None if !self.guard.replaying() => {
                return Err(Error::Denied(
                    "kv: capability is not granted to this call".into(),
                ));
            }
            None => None,
        };
        self.guard
            .effect(seq, request, || {
                op(&*self.state.backend, namespace.unwrap_or_default())
            })
            .map_err(Error::Backend)
    }
}

impl wit::Host for KvView<'_> {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, Error> {
        let call = ImportCall::KvGet { key: key.clone() };
        self.run_now(call, serde_json::Value::Null, |b, ns| {
            b.get(ns, &key).map(|v| v.map(B64))
        })
        .map(|v| v.map(|b| b.0))
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), Error> {
        let len = value.len() as u64;
        let call = ImportCall::KvSet {
            key: key.clone(),
            len,
        };
        let request = serde_json::json!({ "value": B64(value.clone()) });
        self.run(call, request, |b, ns| b.set(ns, &key, value))
            .await
    }

    async fn delete(&mut self, key: String) -> Result<bool, Error> {
        let call = ImportCall::KvDelete { key: key.clone() };
        self.run(call, serde_json::Value::Null, |b, ns| b.delete(ns, &key))
            .await
    }

    fn list_keys(&mut self, prefix: String) -> Result<Vec<String>, Error> {
        let call = ImportCall::KvList {
            prefix: prefix.clone(),
        };
        self.run_now(call, serde_json::Value::Null, |b, ns| b.list(ns, &prefix))
    }
}
