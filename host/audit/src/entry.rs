//! One audit entry and its canonical encoding (version 1).
//!
//! The canonical bytes of an entry are UTF-8 JSON: one object, no
//! whitespace, the fields in exactly the order of [`Entry`] (`v` first),
//! integers only, strings escaped as `serde_json` escapes them, absent values
//! as `null`, and `detail` with its object keys sorted. Re-encoding a parsed
//! entry gives the same bytes; the verifier checks that, so two encodings of
//! one entry cannot both verify.
//!
//! The entry hash is SHA-256 of these bytes; `prev` is the previous entry's
//! hash (64 zeros for the first); the Merkle leaf is SHA-256(0x00 ‖ bytes).
//! The HMAC-SHA256 under the key named by `key` is kept beside the bytes (it
//! cannot be inside what it authenticates).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The encoding version this code writes.
pub const VERSION: u32 = 1;

/// The `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened, as recorded. Field order is the canonical order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Encoding version.
    pub v: u32,
    /// Position in the tenant's chain, from 0.
    pub seq: u64,
    /// Unix milliseconds.
    pub time_ms: i64,
    pub tenant: String,
    /// `invocation.decided`, `invocation.finished`, `import`, `governance`,
    /// `key.rotate`, ...
    pub kind: String,
    /// Who acted: a principal, `agent:<name>`, `system`.
    pub actor: String,
    pub agent: Option<String>,
    pub tool: Option<String>,
    /// SHA-256 of the component that ran.
    pub component: Option<String>,
    pub action: Option<String>,
    /// SHA-256 of the call's input bytes.
    pub args_sha256: Option<String>,
    /// SHA-256 of the call's output JSON bytes.
    pub result_sha256: Option<String>,
    /// `allow`, `deny`, `hold`, or an outcome (`ok`, `out_of_fuel`, ...).
    pub decision: Option<String>,
    /// The rule or policy that decided.
    pub rule: Option<String>,
    /// Approval references (ids), when approvals decide a held call.
    pub approvals: Vec<String>,
    pub fuel: Option<u64>,
    pub elapsed_us: Option<u64>,
    /// Correlation id of the request.
    pub correlation: Option<String>,
    /// Invocation id the entry belongs to.
    pub invocation: Option<String>,
    /// Kind-specific detail (import call, governance event, rotation).
    pub detail: serde_json::Value,
    /// Hash of the previous entry (hex).
    pub prev: String,
    /// Id of the HMAC key.
    pub key: String,
}

impl Entry {
    /// A blank entry of this kind; the log fills `seq`, `prev` and `key`.
    pub fn new(tenant: &str, kind: &str, actor: &str, time_ms: i64) -> Entry {
        Entry {
            v: VERSION,
            seq: 0,
            time_ms,
            tenant: tenant.to_owned(),
            kind: kind.to_owned(),
            actor: actor.to_owned(),
            agent: None,
            tool: None,
            component: None,
            action: None,
            args_sha256: None,
            result_sha256: None,
            decision: None,
            rule: None,
            approvals: Vec::new(),
            fuel: None,
            elapsed_us: None,
            correlation: None,
            invocation: None,
            detail: serde_json::Value::Null,
            prev: GENESIS.to_owned(),
            key: String::new(),
        }
    }

    /// The canonical bytes.
    pub fn encode(&self) -> Vec<u8> {
        // serde_json writes struct fields in declaration order and (without
        // `preserve_order`) map keys sorted; neither can fail for this type.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses canonical bytes, refusing anything that is not exactly the
    /// canonical encoding of what it parses to.
    pub fn decode(bytes: &[u8]) -> Result<Entry, String> {
        let e: Entry =
            serde_json::from_slice(bytes).map_err(|e| format!("not a valid entry: {e}"))?;
        if e.v != VERSION {
            return Err(format!("unknown entry version {}", e.v));
        }
        if e.encode() != bytes {
            return Err("not in canonical encoding".into());
        }
        Ok(e)
    }
}

/// SHA-256 hex of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
