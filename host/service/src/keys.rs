//! Secrets Warden hands out: the admin key, principal API keys, agent
//! credentials and access tokens.
//!
//! Each is `wdn_<kind>_[<tenant>_]<64 hex>`: 256 random bits from the OS, with
//! the tenant in clear so the host knows which tenant's database to look in.
//! The tenant part is routing, not authority: the secret's hash exists only in
//! that tenant's database, so rewriting the tenant finds nothing. Because the
//! secrets are uniformly random and long, a single SHA-256 is the right stored
//! form (a slow password hash protects guessable secrets; these are not).

use crate::{Error, Result};

/// The kinds of secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// The bootstrap admin key (no tenant).
    Admin,
    /// A principal's API key.
    ApiKey,
    /// An agent's long-lived credential.
    Credential,
    /// An agent's short-lived access token.
    AccessToken,
}

impl KeyKind {
    fn prefix(self) -> &'static str {
        match self {
            KeyKind::Admin => "wdn_admin_",
            KeyKind::ApiKey => "wdn_key_",
            KeyKind::Credential => "wdn_cred_",
            KeyKind::AccessToken => "wdn_tok_",
        }
    }
}

/// Bytes of randomness in every secret.
const SECRET_BYTES: usize = 32;

/// A fresh secret of `kind` for `tenant`.
pub(crate) fn generate(kind: KeyKind, tenant: Option<&str>) -> Result<String> {
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::Internal(format!("the OS gave no randomness: {e}")))?;
    let secret = hex::encode(bytes);
    Ok(match tenant {
        Some(t) => format!("{}{t}_{secret}", kind.prefix()),
        None => format!("{}{secret}", kind.prefix()),
    })
}

/// The kind and tenant of a well-formed secret; `None` if malformed.
pub fn parse(key: &str) -> Option<(KeyKind, Option<&str>)> {
    let key = key.trim();
    for kind in [
        KeyKind::Admin,
        KeyKind::ApiKey,
        KeyKind::Credential,
        KeyKind::AccessToken,
    ] {
        let Some(rest) = key.strip_prefix(kind.prefix()) else {
            continue;
        };
        let (tenant, secret) = match kind {
            KeyKind::Admin => (None, rest),
            _ => {
                let (t, s) = rest.rsplit_once('_')?;
                if !warden_store::valid_tenant_name(t) {
                    return None;
                }
                (Some(t), s)
            }
        };
        let well_formed = secret.len() == 2 * SECRET_BYTES
            && secret
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
        return well_formed.then_some((kind, tenant));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_back() {
        for kind in [KeyKind::ApiKey, KeyKind::Credential, KeyKind::AccessToken] {
            let k = generate(kind, Some("acme-1")).expect("key");
            assert_eq!(parse(&k), Some((kind, Some("acme-1"))));
        }
        let admin = generate(KeyKind::Admin, None).expect("key");
        assert_eq!(parse(&admin), Some((KeyKind::Admin, None)));
    }

    #[test]
    fn malformed_keys_do_not_parse() {
        for bad in [
            "",
            "wdn_key_",
            "wdn_key_acme_abc",
            "wdn_key_../x_0000000000000000000000000000000000000000000000000000000000000000",
            "wdn_tok_Acme_0000000000000000000000000000000000000000000000000000000000000000",
            "bearer xyz",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
