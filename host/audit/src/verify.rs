//! Offline verification of an export bundle: chain links, sequence, HMACs
//! (when the auditor has the keys), key-rotation continuity, and every
//! checkpoint's signature and Merkle root. It reports the first bad entry by
//! position and says what is wrong with it.

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::Verifier as _;
use serde::{Deserialize, Serialize};

use crate::entry::{Entry, decode_head};
use crate::keys::mac_ok;
use crate::merkle::{Frontier, Hash, leaf_hash};
use crate::note::{Verifier, verify_checkpoint};
use crate::{Record, origin};
use sha2::{Digest, Sha256};

/// Everything an auditor needs: entries, checkpoints and public keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bundle {
    pub format: String,
    pub tenant: String,
    pub origin: String,
    /// Verifier keys, the first being the one the log started with.
    pub signers: Vec<String>,
    pub records: Vec<Record>,
    /// Signed checkpoint notes, oldest first.
    pub checkpoints: Vec<String>,
}

impl Bundle {
    pub const FORMAT: &'static str = "warden-audit-bundle/1";
}

/// The first problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// Position of the bad entry in the log (its expected sequence number);
    /// for a checkpoint problem, the first position the checkpoint could not
    /// vouch for.
    pub position: u64,
    pub problem: String,
}

/// What verification established.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub tenant: String,
    pub entries: u64,
    /// Entries whose HMAC was checked (the auditor had their key).
    pub hmac_checked: u64,
    pub checkpoints: u64,
    /// Size of the largest verified checkpoint.
    pub checkpointed: u64,
    pub rotations: u64,
    /// The key the verification trusted first.
    pub trusted: String,
    pub failure: Option<Failure>,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }
}

fn fail(v: &mut Verification, position: u64, problem: impl Into<String>) {
    if v.failure.is_none() {
        v.failure = Some(Failure {
            position,
            problem: problem.into(),
        });
    }
}

/// Verifies a bundle. `hmac_keys` maps key ids to HMAC keys (may be empty:
/// then HMACs are not checked). `trusted` pins the first signing key; without
/// it the bundle's own first key is trusted (say so to the user).
pub fn verify(
    bundle: &Bundle,
    hmac_keys: &HashMap<String, Vec<u8>>,
    trusted: Option<&str>,
) -> Verification {
    let mut v = Verification {
        tenant: bundle.tenant.clone(),
        entries: 0,
        hmac_checked: 0,
        checkpoints: 0,
        checkpointed: 0,
        rotations: 0,
        trusted: String::new(),
        failure: None,
    };
    if bundle.format != Bundle::FORMAT {
        fail(
            &mut v,
            0,
            format!("unknown bundle format `{}`", bundle.format),
        );
        return v;
    }
    let name = origin(&bundle.tenant);
    if bundle.origin != name {
        fail(
            &mut v,
            0,
            format!("bundle origin `{}` is not `{name}`", bundle.origin),
        );
        return v;
    }
    let first = match (trusted, bundle.signers.first()) {
        (Some(t), Some(f)) if t != f => {
            fail(
                &mut v,
                0,
                "the bundle's first signing key is not the trusted key",
            );
            return v;
        }
        (Some(t), _) => t.to_owned(),
        (None, Some(f)) => f.clone(),
        (None, None) => {
            fail(&mut v, 0, "the bundle names no signing key");
            return v;
        }
    };
    let mut signer = match Verifier::parse(&first) {
        Ok(s) => s,
        Err(e) => {
            fail(&mut v, 0, e);
            return v;
        }
    };
    v.trusted = first;

    // Checkpoint sizes first, so the walk can keep the root at each.
    let mut wanted: BTreeMap<u64, Option<Hash>> = BTreeMap::new();
    for note in &bundle.checkpoints {
        if let Some(size) = note.lines().nth(1).and_then(|s| s.parse::<u64>().ok()) {
            wanted.insert(size, None);
        }
    }
    if wanted.contains_key(&0) {
        wanted.insert(0, Some(crate::merkle::empty_root()));
    }
    // The signer current after each rotation: (log size from which it signs).
    let mut signers: Vec<(u64, Verifier)> = vec![(0, signer.clone())];

    let pre = prepare(&bundle.records, &bundle.tenant, hmac_keys);
    let mut head: Hash = [0u8; 32];
    let mut frontier = Frontier::default();
    for (i, (r, p)) in bundle.records.iter().zip(pre).enumerate() {
        let pos = i as u64;
        let e = match p.entry {
            Ok(e) => e,
            Err(problem) => {
                fail(&mut v, pos, format!("entry {pos}: {problem}"));
                break;
            }
        };
        if e.seq != pos {
            let problem = if e.seq > pos {
                format!(
                    "entry {pos} is missing: entry {} is in its place (deleted or reordered)",
                    e.seq
                )
            } else {
                format!(
                    "entry {} appears again at position {pos} (inserted or reordered)",
                    e.seq
                )
            };
            fail(&mut v, pos, problem);
            break;
        }
        if r.seq != e.seq {
            fail(
                &mut v,
                pos,
                format!(
                    "entry {pos}: record says seq {} but the entry says {}",
                    r.seq, e.seq
                ),
            );
            break;
        }
        if let Some(tenant) = &e.other_tenant {
            fail(
                &mut v,
                pos,
                format!("entry {pos} belongs to tenant `{tenant}`"),
            );
            break;
        }
        if !hmac_keys.is_empty() && !hmac_keys.contains_key(&e.key) {
            fail(
                &mut v,
                pos,
                format!(
                    "entry {pos} names HMAC key `{}`, which is not among the given keys",
                    e.key
                ),
            );
            break;
        }
        if let Some(ok) = p.mac_ok {
            if !ok {
                fail(
                    &mut v,
                    pos,
                    format!(
                        "entry {pos}: HMAC ({}) does not match: the entry or its HMAC was modified",
                        e.key
                    ),
                );
                break;
            }
            v.hmac_checked += 1;
        }
        if e.prev != Some(head) {
            fail(
                &mut v,
                pos,
                format!(
                    "entry {pos} does not link to entry {}: its prev hash differs (entry {} was modified, or this one was)",
                    pos.saturating_sub(1),
                    pos.saturating_sub(1)
                ),
            );
            break;
        }
        if let Some(rotation) = &e.rotation {
            match check_rotation(rotation, r, &signer, &name, hmac_keys) {
                Ok(new) => {
                    v.rotations += 1;
                    signers.push((pos + 1, new.clone()));
                    signer = new;
                }
                Err(problem) => {
                    fail(&mut v, pos, format!("entry {pos}: key rotation {problem}"));
                    break;
                }
            }
        } else if r.cosign.is_some() {
            fail(
                &mut v,
                pos,
                format!("entry {pos} carries rotation seals but is not a rotation"),
            );
            break;
        }
        head = p.hash;
        frontier.push(p.leaf);
        v.entries += 1;
        if let Some(slot) = wanted.get_mut(&frontier.size()) {
            *slot = Some(frontier.root());
        }
    }

    // Checkpoints: signed by the key current at their size; their root is the
    // root of that many entries.
    let all: Vec<Verifier> = signers.iter().map(|(_, s)| s.clone()).collect();
    let mut vouched = 0u64;
    for note in &bundle.checkpoints {
        let cp = match verify_checkpoint(note, &all) {
            Ok(cp) => cp,
            Err(e) => {
                fail(&mut v, vouched, format!("checkpoint: {e}"));
                break;
            }
        };
        if cp.origin != name {
            fail(
                &mut v,
                vouched,
                format!("checkpoint origin `{}` is not `{name}`", cp.origin),
            );
            break;
        }
        let expected = signers
            .iter()
            .rev()
            .find(|(from, _)| *from <= cp.size)
            .map(|(_, s)| s.id);
        if expected != Some(cp.signed_by) {
            fail(
                &mut v,
                vouched,
                format!(
                    "checkpoint of size {} is signed by key {:08x}, not by the key current at that size",
                    cp.size, cp.signed_by
                ),
            );
            break;
        }
        if cp.size > bundle.records.len() as u64 {
            fail(
                &mut v,
                bundle.records.len() as u64,
                format!(
                    "truncated: a checkpoint commits to {} entries but the log has {}",
                    cp.size,
                    bundle.records.len()
                ),
            );
            break;
        }
        match wanted.get(&cp.size).copied().flatten() {
            Some(root) if root == cp.root => {}
            Some(_) => {
                fail(
                    &mut v,
                    vouched,
                    format!(
                        "checkpoint of size {}: the entries from position {vouched} on do not hash to its root (changed, inserted or removed entries)",
                        cp.size
                    ),
                );
                break;
            }
            // The walk stopped before this size: the failure is reported.
            None => break,
        }
        v.checkpoints += 1;
        vouched = vouched.max(cp.size);
        v.checkpointed = vouched;
    }
    v
}

/// The per-entry work that does not depend on other entries.
struct Prepared {
    entry: Result<Header, String>,
    hash: Hash,
    leaf: Hash,
    /// `None` when the entry's key was not given.
    mac_ok: Option<bool>,
}

/// What the sequential walk needs of a decoded entry. The full entry is kept
/// only for key rotations; everything else is dropped on the worker thread
/// that decoded it.
struct Header {
    seq: u64,
    key: String,
    /// The previous entry's hash; `None` if it is not 32 bytes of hex.
    prev: Option<Hash>,
    /// The entry's tenant when it is not the bundle's.
    other_tenant: Option<String>,
    rotation: Option<Box<Entry>>,
}

/// Decodes, hashes and checks the HMAC of every record, on all cores.
fn prepare(
    records: &[Record],
    tenant: &str,
    hmac_keys: &HashMap<String, Vec<u8>>,
) -> Vec<Prepared> {
    let one = |r: &Record, buf: &mut Vec<u8>| {
        let body = r.body.as_bytes();
        let entry = decode_head(body, buf).and_then(|h| {
            let mut prev = [0u8; 32];
            let prev = hex::decode_to_slice(h.prev.as_bytes(), &mut prev)
                .ok()
                .map(|()| prev);
            let rotation = if h.kind == "key.rotate" {
                Some(Box::new(Entry::decode(body)?))
            } else {
                None
            };
            Ok(Header {
                seq: h.seq,
                key: h.key.into_owned(),
                prev,
                other_tenant: (h.tenant != tenant).then(|| h.tenant.into_owned()),
                rotation,
            })
        });
        let mac_ok = entry
            .as_ref()
            .ok()
            .and_then(|e| hmac_keys.get(&e.key))
            .map(|k| mac_ok(k, body, &r.mac));
        Prepared {
            entry,
            hash: Sha256::digest(body).into(),
            leaf: leaf_hash(body),
            mac_ok,
        }
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(16);
    let run = |c: &[Record]| {
        let mut buf = Vec::with_capacity(1024);
        c.iter().map(|r| one(r, &mut buf)).collect::<Vec<_>>()
    };
    if threads < 2 || records.len() < 4096 {
        return run(records);
    }
    let chunk = records.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = records
            .chunks(chunk)
            .map(|c| s.spawn(move || run(c)))
            .collect();
        let mut out = Vec::with_capacity(records.len());
        for (h, c) in handles.into_iter().zip(records.chunks(chunk)) {
            // A worker that died is redone here: every record is checked.
            match h.join() {
                Ok(part) if part.len() == c.len() => out.extend(part),
                _ => out.extend(run(c)),
            }
        }
        out
    })
}

fn check_rotation(
    e: &Entry,
    r: &Record,
    current: &Verifier,
    name: &str,
    hmac_keys: &HashMap<String, Vec<u8>>,
) -> Result<Verifier, String> {
    let cosign = r.cosign.as_ref().ok_or("lacks its co-signatures")?;
    let text = |k: &str| {
        e.detail
            .get(k)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    if text("old_signer") != current.text() {
        return Err("names an old signing key that is not the current one".into());
    }
    let new = Verifier::parse(&text("new_signer"))?;
    if new.name != name {
        return Err(format!("introduces a key for `{}`", new.name));
    }
    let sig = |b64: &str| -> Result<ed25519_dalek::Signature, String> {
        let raw = B64
            .decode(b64)
            .map_err(|_| "has a signature that is not base64".to_owned())?;
        ed25519_dalek::Signature::from_slice(&raw)
            .map_err(|_| "has a malformed signature".to_owned())
    };
    current
        .key
        .verify(r.body.as_bytes(), &sig(&cosign.sig_old)?)
        .map_err(|_| "is not signed by the old key".to_owned())?;
    new.key
        .verify(r.body.as_bytes(), &sig(&cosign.sig_new)?)
        .map_err(|_| "is not signed by the new key".to_owned())?;
    if let Some(k) = hmac_keys.get(&text("new_key"))
        && !mac_ok(k, r.body.as_bytes(), &cosign.mac_new)
    {
        return Err("has a new-key HMAC that does not match".into());
    }
    Ok(new)
}
