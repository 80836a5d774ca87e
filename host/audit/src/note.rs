//! Checkpoints in the C2SP `tlog-checkpoint` format, signed as C2SP
//! `signed-note`s with Ed25519.
//!
//! A checkpoint body is `<origin>\n<size>\n<base64 root>\n`; the note adds a
//! blank line and one line per signature: `— <name> <base64(key id ‖ sig)>`.
//! The key id is the first four bytes of SHA-256(name ‖ "\n" ‖ 0x01 ‖ public
//! key), and a verifier key is written `<name>+<hex id>+<base64(0x01 ‖ key)>`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::merkle::Hash;

const ALG_ED25519: u8 = 1;

/// The signed-note key id of an Ed25519 key under a name.
pub fn key_id(name: &str, key: &VerifyingKey) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ALG_ED25519]);
    h.update(key.as_bytes());
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// The verifier key text of an Ed25519 key.
pub fn verifier_key(name: &str, key: &VerifyingKey) -> String {
    let mut k = vec![ALG_ED25519];
    k.extend_from_slice(key.as_bytes());
    format!("{name}+{:08x}+{}", key_id(name, key), B64.encode(k))
}

/// A parsed verifier key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    pub name: String,
    pub id: u32,
    pub key: VerifyingKey,
}

impl Verifier {
    pub fn parse(text: &str) -> Result<Verifier, String> {
        let bad = || format!("malformed verifier key `{text}`");
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let id = u32::from_str_radix(id, 16).map_err(|_| bad())?;
        let raw = B64.decode(key).map_err(|_| bad())?;
        let (&alg, key) = raw.split_first().ok_or_else(bad)?;
        if alg != ALG_ED25519 {
            return Err(format!("verifier key `{name}` is not Ed25519"));
        }
        let key: [u8; 32] = key.try_into().map_err(|_| bad())?;
        let key = VerifyingKey::from_bytes(&key).map_err(|_| bad())?;
        if key_id(name, &key) != id {
            return Err(format!("verifier key `{name}` has a wrong key id"));
        }
        Ok(Verifier {
            name: name.to_owned(),
            id,
            key,
        })
    }

    pub fn text(&self) -> String {
        verifier_key(&self.name, &self.key)
    }
}

/// The checkpoint body.
pub fn checkpoint_body(origin: &str, size: u64, root: &Hash) -> String {
    format!("{origin}\n{size}\n{}\n", B64.encode(root))
}

/// Signs a note body (which must end in a newline).
pub fn sign(body: &str, name: &str, key: &SigningKey) -> String {
    let sig = key.sign(body.as_bytes());
    let mut blob = key_id(name, &key.verifying_key()).to_be_bytes().to_vec();
    blob.extend_from_slice(&sig.to_bytes());
    format!("{body}\n\u{2014} {name} {}\n", B64.encode(blob))
}

/// A checkpoint as read from a verified note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// Key id of the signature that verified.
    pub signed_by: u32,
}

/// Verifies a signed checkpoint note against the given verifier keys: at
/// least one signature must be from one of them and valid, and no
/// signature claiming one of them may be invalid.
pub fn verify_checkpoint(note: &str, verifiers: &[Verifier]) -> Result<Checkpoint, String> {
    let (body, sigs) = note
        .split_once("\n\n")
        .ok_or("a signed note needs a blank line before its signatures")?;
    let body = format!("{body}\n");
    let mut signed_by = None;
    for line in sigs.lines() {
        let rest = line
            .strip_prefix("\u{2014} ")
            .ok_or_else(|| format!("malformed signature line `{line}`"))?;
        let (name, blob) = rest
            .split_once(' ')
            .ok_or_else(|| format!("malformed signature line `{line}`"))?;
        let blob = B64
            .decode(blob)
            .map_err(|_| format!("signature of `{name}` is not base64"))?;
        if blob.len() != 4 + 64 {
            return Err(format!("signature of `{name}` has the wrong length"));
        }
        let id = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]);
        let Some(v) = verifiers.iter().find(|v| v.name == name && v.id == id) else {
            continue;
        };
        let sig = ed25519_dalek::Signature::from_slice(&blob[4..])
            .map_err(|_| format!("signature of `{name}` is malformed"))?;
        v.key
            .verify(body.as_bytes(), &sig)
            .map_err(|_| format!("signature of `{name}` ({id:08x}) does not verify"))?;
        signed_by = Some(id);
    }
    let signed_by = signed_by.ok_or("no signature from a trusted key")?;
    let mut lines = body.lines();
    let origin = lines.next().unwrap_or_default().to_owned();
    let size: u64 = lines
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or("checkpoint size is not a number")?;
    let root: Hash = lines
        .next()
        .and_then(|s| B64.decode(s).ok())
        .and_then(|b| b.try_into().ok())
        .ok_or("checkpoint root is not a base64 SHA-256")?;
    if origin.is_empty() {
        return Err("checkpoint has no origin".into());
    }
    Ok(Checkpoint {
        origin,
        size,
        root,
        signed_by,
    })
}
