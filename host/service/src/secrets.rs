//! The secret source of one tenant: files in `<data_dir>/secrets/<tenant>/`,
//! one file per secret named after it, written by the host operator.
//!
//! Per-tenant directories keep one tenant's grant from naming another
//! tenant's secret: the lookup cannot leave the tenant's directory, because
//! secret names are validated (`[A-Za-z0-9_]+`) before they reach here.

use std::path::PathBuf;

use warden_runtime::SecretSource;

/// Secrets of one tenant, read from its directory on each use.
#[derive(Debug)]
pub(crate) struct TenantSecrets {
    pub(crate) dir: PathBuf,
}

impl SecretSource for TenantSecrets {
    fn get(&self, name: &str) -> Option<String> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return None;
        }
        let text = std::fs::read_to_string(self.dir.join(name)).ok()?;
        Some(text.trim_end_matches(['\n', '\r']).to_owned())
    }
}
