//! Warden's audit trail, without storage: the canonical entry, the HMAC hash
//! chain, the RFC 6962 Merkle tree, Ed25519-signed C2SP checkpoints, key
//! rotation, export bundles and their offline verification.
//!
//! The host appends through [`Chain`], which seals each entry (sequence
//! number, previous hash, HMAC) and keeps the Merkle frontier; storage and
//! group commit live in `warden-store` and `warden-service`. Everything an
//! auditor needs to check a tenant's record is in a [`Bundle`], and
//! [`verify::verify`] checks one without trusting the host.

#![forbid(unsafe_code)]

pub mod entry;
pub mod keys;
pub mod merkle;
pub mod note;
pub mod verify;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::Signer as _;
use serde::{Deserialize, Serialize};

pub use entry::{Entry, GENESIS, Sorted, canonical_json, sha256_hex};
pub use keys::{KeyFile, KeyPair};
pub use merkle::{Frontier, Hash};
pub use verify::{Bundle, Failure, Verification, verify};

/// One sealed entry as stored and exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    /// The canonical entry bytes (UTF-8 JSON).
    pub body: String,
    /// HMAC-SHA256 of `body` under the key the entry names, hex.
    pub mac: String,
    /// Only on key rotations: the new key's HMAC and both Ed25519 signatures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cosign: Option<Cosign>,
}

/// The extra seals of a key rotation entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cosign {
    /// HMAC of the body under the new HMAC key.
    pub mac_new: String,
    /// Ed25519 signature of the body by the old signing key (base64).
    pub sig_old: String,
    /// Ed25519 signature of the body by the new signing key (base64).
    pub sig_new: String,
}

/// The name under which a tenant's checkpoints are signed (also the
/// checkpoint origin).
pub fn origin(tenant: &str) -> String {
    format!("warden/{tenant}")
}

/// The append side of one tenant's chain: next sequence number, head hash and
/// Merkle frontier. Rebuilt from the stored records on start.
#[derive(Debug, Clone)]
pub struct Chain {
    pub tenant: String,
    next_seq: u64,
    head: String,
    frontier: Frontier,
    /// Entries since the last key rotation.
    since_rotation: u64,
}

impl Chain {
    pub fn new(tenant: &str) -> Chain {
        Chain {
            tenant: tenant.to_owned(),
            next_seq: 0,
            head: GENESIS.to_owned(),
            frontier: Frontier::default(),
            since_rotation: 0,
        }
    }

    /// Replays stored records (in order) into the chain state, checking the
    /// links as it goes.
    pub fn resume<'a>(
        tenant: &str,
        records: impl IntoIterator<Item = &'a Record>,
    ) -> Result<Chain, String> {
        let mut c = Chain::new(tenant);
        c.extend(records)?;
        Ok(c)
    }

    /// Replays further stored records (in order, continuing this chain:
    /// entries another writer appended), checking the links as it goes. On
    /// error the chain may have advanced part way; resume it from scratch.
    pub fn extend<'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a Record>,
    ) -> Result<(), String> {
        for r in records {
            let e = Entry::decode(r.body.as_bytes())
                .map_err(|e| format!("stored audit entry {}: {e}", r.seq))?;
            if e.seq != self.next_seq || e.prev != self.head {
                return Err(format!(
                    "stored audit entry {} does not continue the chain; run `warden audit verify`",
                    r.seq
                ));
            }
            self.advance(r.body.as_bytes());
            if e.kind == "key.rotate" {
                self.since_rotation = 0;
            }
        }
        Ok(())
    }

    fn advance(&mut self, body: &[u8]) {
        self.head = sha256_hex(body);
        self.frontier.push(merkle::leaf_hash(body));
        self.next_seq += 1;
        self.since_rotation += 1;
    }

    /// Entries sealed since the last key rotation.
    pub fn since_rotation(&self) -> u64 {
        self.since_rotation
    }

    pub fn size(&self) -> u64 {
        self.next_seq
    }

    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    /// Seals an entry as the next one of the chain under `key`.
    pub fn seal(&mut self, mut entry: Entry, key: &KeyPair) -> Result<Record, String> {
        entry.seq = self.next_seq;
        entry.prev = self.head.clone();
        entry.key = key.hmac_id.clone();
        entry.tenant = self.tenant.clone();
        let body = entry.encode();
        let mac = key.mac(&body)?;
        self.advance(&body);
        Ok(Record {
            seq: entry.seq,
            body: String::from_utf8(body).map_err(|e| e.to_string())?,
            mac,
            cosign: None,
        })
    }

    /// Seals a key rotation from `old` to `new`: authenticated by the old
    /// HMAC key, and co-sealed by the new HMAC key and both signing keys.
    pub fn seal_rotation(
        &mut self,
        old: &KeyPair,
        new: &KeyPair,
        actor: &str,
        reason: &str,
        time_ms: i64,
    ) -> Result<Record, String> {
        let name = origin(&self.tenant);
        let mut e = Entry::new(&self.tenant, "key.rotate", actor, time_ms);
        e.detail = serde_json::json!({
            "reason": reason,
            "old_key": old.hmac_id,
            "new_key": new.hmac_id,
            "old_signer": old.verifier(&name)?.text(),
            "new_signer": new.verifier(&name)?.text(),
        });
        let mut record = self.seal(e, old)?;
        self.since_rotation = 0;
        let body = record.body.as_bytes();
        record.cosign = Some(Cosign {
            mac_new: new.mac(body)?,
            sig_old: B64.encode(old.signing()?.sign(body).to_bytes()),
            sig_new: B64.encode(new.signing()?.sign(body).to_bytes()),
        });
        Ok(record)
    }

    /// A signed checkpoint of the chain as it stands.
    pub fn checkpoint(&self, key: &KeyPair) -> Result<String, String> {
        let name = origin(&self.tenant);
        let body = note::checkpoint_body(&name, self.size(), &self.root());
        Ok(note::sign(&body, &name, &key.signing()?))
    }
}
