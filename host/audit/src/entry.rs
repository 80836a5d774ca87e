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

use std::borrow::Cow;

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
    /// Written with object keys sorted, whatever order the value holds.
    #[serde(serialize_with = "sorted")]
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
        // serde_json writes struct fields in declaration order; `detail` is
        // written through [`Sorted`], so the bytes do not depend on whether
        // some dependency turned on serde_json's `preserve_order`. Neither can
        // fail for this type.
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

/// A JSON value written with every object's keys in sorted order (the
/// canonical form), without copying it.
#[derive(Debug, Clone, Copy)]
pub struct Sorted<'a>(pub &'a serde_json::Value);

impl Serialize for Sorted<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            serde_json::Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let mut map = s.serialize_map(Some(keys.len()))?;
                for k in keys {
                    map.serialize_entry(k, &Sorted(&m[k.as_str()]))?;
                }
                map.end()
            }
            serde_json::Value::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(&Sorted(v))?;
                }
                seq.end()
            }
            other => other.serialize(s),
        }
    }
}

fn sorted<S: serde::Serializer>(v: &serde_json::Value, s: S) -> Result<S::Ok, S::Error> {
    Sorted(v).serialize(s)
}

/// `value` as canonical JSON text: no whitespace, object keys sorted.
pub fn canonical_json(value: &serde_json::Value) -> String {
    serde_json::to_string(&Sorted(value)).unwrap_or_default()
}

/// A borrowed view of an entry that mirrors [`Entry`] field for field, for
/// checking the canonical form without building an `Entry` (the verifier's
/// hot path). `detail` stays raw and is checked on its own.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryRef<'a> {
    v: u32,
    seq: u64,
    time_ms: i64,
    #[serde(borrow)]
    tenant: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    actor: Cow<'a, str>,
    #[serde(borrow)]
    agent: Option<Cow<'a, str>>,
    #[serde(borrow)]
    tool: Option<Cow<'a, str>>,
    #[serde(borrow)]
    component: Option<Cow<'a, str>>,
    #[serde(borrow)]
    action: Option<Cow<'a, str>>,
    #[serde(borrow)]
    args_sha256: Option<Cow<'a, str>>,
    #[serde(borrow)]
    result_sha256: Option<Cow<'a, str>>,
    #[serde(borrow)]
    decision: Option<Cow<'a, str>>,
    #[serde(borrow)]
    rule: Option<Cow<'a, str>>,
    #[serde(borrow)]
    approvals: Vec<Cow<'a, str>>,
    fuel: Option<u64>,
    elapsed_us: Option<u64>,
    #[serde(borrow)]
    correlation: Option<Cow<'a, str>>,
    #[serde(borrow)]
    invocation: Option<Cow<'a, str>>,
    #[serde(borrow)]
    detail: &'a serde_json::value::RawValue,
    #[serde(borrow)]
    prev: Cow<'a, str>,
    #[serde(borrow)]
    key: Cow<'a, str>,
}

/// What the verifier needs of an entry, checked to be in canonical form.
#[derive(Debug)]
pub(crate) struct Head<'a> {
    pub seq: u64,
    pub tenant: Cow<'a, str>,
    pub kind: Cow<'a, str>,
    pub prev: Cow<'a, str>,
    pub key: Cow<'a, str>,
}

/// [`Entry::decode`]'s checks (version, canonical encoding) without building
/// the entry: decode borrowed, re-encode into `buf`, compare; then the same
/// for `detail`. Accepts exactly the bytes `Entry::decode` accepts.
pub(crate) fn decode_head<'a>(bytes: &'a [u8], buf: &mut Vec<u8>) -> Result<Head<'a>, String> {
    let e: EntryRef<'a> =
        serde_json::from_slice(bytes).map_err(|e| format!("not a valid entry: {e}"))?;
    if e.v != VERSION {
        return Err(format!("unknown entry version {}", e.v));
    }
    buf.clear();
    serde_json::to_writer(&mut *buf, &e).map_err(|e| e.to_string())?;
    let raw = e.detail.get();
    let detail: serde_json::Value =
        serde_json::from_str(raw).map_err(|e| format!("not a valid entry: {e}"))?;
    let canonical_detail = serde_json::to_string(&Sorted(&detail)).map_err(|e| e.to_string())?;
    if *buf != bytes || canonical_detail != raw {
        return Err("not in canonical encoding".into());
    }
    Ok(Head {
        seq: e.seq,
        tenant: e.tenant,
        kind: e.kind,
        prev: e.prev,
        key: e.key,
    })
}

/// SHA-256 hex of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The verifier's borrowed decoder accepts exactly what `Entry::decode`
    /// accepts: the canonical bytes, and none of the non-canonical variants.
    #[test]
    fn decode_head_accepts_exactly_what_decode_accepts() {
        let mut e = Entry::new("acme", "invocation.finished", "agent:bot", 1);
        e.tool = Some("t\u{e9}xt \"quoted\"\n".into());
        e.approvals = vec!["a1".into()];
        e.fuel = Some(7);
        e.detail = serde_json::json!({"b": [1, 2.5, {"z": null, "a": "x"}], "a": "\u{1f600}"});
        e.key = "hk-1".into();
        let good = String::from_utf8(e.encode()).expect("utf-8");
        let variants = [
            good.clone(),
            good.replacen(",\"seq\"", ", \"seq\"", 1),
            good.replacen("\"detail\":{", "\"detail\":{ ", 1),
            good.replacen("\"a\":\"x\"", "\"a\":\"\\u0078\"", 1),
            good.replacen("{\"a\":\"x\",\"z\":null}", "{\"z\":null,\"a\":\"x\"}", 1),
            good.replacen("2.5", "2.50", 1),
            good.replacen("\"v\":1", "\"v\":2", 1),
            good.replacen("\"key\":\"hk-1\"", "\"key\":\"hk-1\",\"x\":1", 1),
            good.replacen("\"fuel\":7", "\"fuel\":7.0", 1),
        ];
        let mut buf = Vec::new();
        for (i, v) in variants.iter().enumerate() {
            assert!(i == 0 || *v != good, "variant {i} changes nothing");
            let full = Entry::decode(v.as_bytes()).is_ok();
            let head = decode_head(v.as_bytes(), &mut buf).is_ok();
            assert_eq!(full, head, "variant {i}: {v}");
            assert_eq!(full, i == 0, "variant {i}: {v}");
        }
    }
}
