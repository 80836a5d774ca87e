//! Audit keys: per tenant, a sequence of key pairs (an HMAC-SHA256 key and
//! an Ed25519 signing key), the last one current. Key material never enters
//! the audit tables; embedded mode keeps it in a key file (mode 0600).

use ed25519_dalek::SigningKey;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::note::{Verifier, verifier_key};

/// One generation of keys.
#[derive(Clone, Serialize, Deserialize)]
pub struct KeyPair {
    /// Id of the HMAC key, recorded in every entry it authenticates.
    pub hmac_id: String,
    /// The HMAC key, hex.
    pub hmac_key: String,
    /// The Ed25519 signing key seed, hex.
    pub signing_key: String,
    /// When this pair became current (Unix milliseconds).
    pub created_ms: i64,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("hmac_id", &self.hmac_id)
            .field("created_ms", &self.created_ms)
            .finish_non_exhaustive()
    }
}

fn random32() -> Result<[u8; 32], String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| format!("no randomness for a key: {e}"))?;
    Ok(b)
}

impl KeyPair {
    /// A fresh pair.
    pub fn generate(now_ms: i64) -> Result<KeyPair, String> {
        let id = random32()?;
        Ok(KeyPair {
            hmac_id: format!("hk-{}", hex::encode(&id[..6])),
            hmac_key: hex::encode(random32()?),
            signing_key: hex::encode(random32()?),
            created_ms: now_ms,
        })
    }

    fn hmac_bytes(&self) -> Result<Vec<u8>, String> {
        hex::decode(&self.hmac_key).map_err(|_| format!("HMAC key {} is not hex", self.hmac_id))
    }

    /// HMAC-SHA256 of `bytes`, hex.
    pub fn mac(&self, bytes: &[u8]) -> Result<String, String> {
        mac_hex(&self.hmac_bytes()?, bytes)
    }

    pub fn signing(&self) -> Result<SigningKey, String> {
        let seed: [u8; 32] = hex::decode(&self.signing_key)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("audit signing key is not 32 hex bytes")?;
        Ok(SigningKey::from_bytes(&seed))
    }

    /// The public verifier key under the log's name.
    pub fn verifier(&self, name: &str) -> Result<Verifier, String> {
        Verifier::parse(&verifier_key(name, &self.signing()?.verifying_key()))
    }
}

/// HMAC-SHA256 under `key`, hex.
pub fn mac_hex(key: &[u8], bytes: &[u8]) -> Result<String, String> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).map_err(|e| e.to_string())?;
    m.update(bytes);
    Ok(hex::encode(m.finalize().into_bytes()))
}

/// Checks an HMAC in constant time.
pub fn mac_ok(key: &[u8], bytes: &[u8], mac: &str) -> bool {
    let Ok(expected) = hex::decode(mac) else {
        return false;
    };
    let Ok(mut m) = <Hmac<Sha256> as Mac>::new_from_slice(key) else {
        return false;
    };
    m.update(bytes);
    m.verify_slice(&expected).is_ok()
}

/// A tenant's key file: every pair ever used, the last one current.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyFile {
    pub format: String,
    pub pairs: Vec<KeyPair>,
}

impl KeyFile {
    pub const FORMAT: &'static str = "warden-audit-keys/1";

    pub fn new(now_ms: i64) -> Result<KeyFile, String> {
        Ok(KeyFile {
            format: Self::FORMAT.into(),
            pairs: vec![KeyPair::generate(now_ms)?],
        })
    }

    pub fn current(&self) -> Result<&KeyPair, String> {
        self.pairs
            .last()
            .ok_or_else(|| "audit key file has no key".into())
    }

    /// Every HMAC key by id, for verification.
    pub fn hmac_keys(&self) -> std::collections::HashMap<String, Vec<u8>> {
        self.pairs
            .iter()
            .filter_map(|p| Some((p.hmac_id.clone(), hex::decode(&p.hmac_key).ok()?)))
            .collect()
    }

    pub fn by_hmac_id(&self, id: &str) -> Option<&KeyPair> {
        self.pairs.iter().find(|p| p.hmac_id == id)
    }
}
