//! The grant check of one import call.
//!
//! The runtime's guard turns every guarded import call into an [`ImportCall`] and
//! asks [`check_import`] for a [`Decision`]. The check is pure: it looks only at
//! the grant and the call. Denials say what was denied and what the grant allows.

use serde::{Deserialize, Serialize};

use crate::grant::{Capability, DirMode, FsGrant, Grant, HttpGrant};
use crate::{MAX_KV_KEY_BYTES, SecretsGrant};

/// One import call as the guard sees it. Paths are full guest paths
/// (`/data/notes/a.txt`), already joined by the runtime from the descriptor's
/// path and the relative path the guest passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ImportCall {
    /// Open a file or directory. `write` covers write access, create and truncate.
    FsOpen {
        path: String,
        write: bool,
    },
    /// Read metadata or a link, or list a directory.
    FsRead {
        path: String,
    },
    /// Create a directory, set times, or link/rename into `path`.
    FsWrite {
        path: String,
    },
    /// Remove a file or directory.
    FsDelete {
        path: String,
    },
    /// An outgoing HTTP request.
    HttpRequest {
        scheme: String,
        host: String,
        port: u16,
        method: String,
        path: String,
    },
    KvGet {
        key: String,
    },
    KvSet {
        key: String,
        len: u64,
    },
    KvDelete {
        key: String,
    },
    KvList {
        prefix: String,
    },
    SecretGet {
        name: String,
    },
    Log {
        len: u64,
    },
}

impl ImportCall {
    /// The capability this call uses.
    pub fn capability(&self) -> Capability {
        match self {
            ImportCall::FsOpen { .. }
            | ImportCall::FsRead { .. }
            | ImportCall::FsWrite { .. }
            | ImportCall::FsDelete { .. } => Capability::Fs,
            ImportCall::HttpRequest { .. } => Capability::Http,
            ImportCall::KvGet { .. }
            | ImportCall::KvSet { .. }
            | ImportCall::KvDelete { .. }
            | ImportCall::KvList { .. } => Capability::Kv,
            ImportCall::SecretGet { .. } => Capability::Secrets,
            ImportCall::Log { .. } => Capability::Log,
        }
    }

    /// A short operation name for events and messages.
    pub fn operation(&self) -> &'static str {
        match self {
            ImportCall::FsOpen { write: false, .. } => "open-read",
            ImportCall::FsOpen { write: true, .. } => "open-write",
            ImportCall::FsRead { .. } => "read",
            ImportCall::FsWrite { .. } => "write",
            ImportCall::FsDelete { .. } => "delete",
            ImportCall::HttpRequest { .. } => "request",
            ImportCall::KvGet { .. } => "get",
            ImportCall::KvSet { .. } => "set",
            ImportCall::KvDelete { .. } => "delete",
            ImportCall::KvList { .. } => "list",
            ImportCall::SecretGet { .. } => "get",
            ImportCall::Log { .. } => "write",
        }
    }

    /// Whether the call acts outside the sandbox (writes data or reaches
    /// another system): such an effect happens only after its decision entry
    /// is durable in the audit trail (write-ahead).
    pub fn leaves_sandbox(&self) -> bool {
        matches!(
            self,
            ImportCall::FsOpen { write: true, .. }
                | ImportCall::FsWrite { .. }
                | ImportCall::FsDelete { .. }
                | ImportCall::HttpRequest { .. }
                | ImportCall::KvSet { .. }
                | ImportCall::KvDelete { .. }
        )
    }

    /// The resource the call touches (path, URL, key, secret name).
    pub fn resource(&self) -> String {
        match self {
            ImportCall::FsOpen { path, .. }
            | ImportCall::FsRead { path }
            | ImportCall::FsWrite { path }
            | ImportCall::FsDelete { path } => path.clone(),
            ImportCall::HttpRequest {
                scheme,
                host,
                port,
                method,
                path,
            } => format!("{method} {scheme}://{host}:{port}{path}"),
            ImportCall::KvGet { key }
            | ImportCall::KvSet { key, .. }
            | ImportCall::KvDelete { key } => key.clone(),
            ImportCall::KvList { prefix } => format!("{prefix}*"),
            ImportCall::SecretGet { name } => name.clone(),
            ImportCall::Log { len } => format!("{len} bytes"),
        }
    }
}

/// The guard's answer for one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "lowercase")]
pub enum Decision {
    Allow,
    /// Refused. `rule` names what decided (`grant.http`, `grant.fs.path`...).
    Deny {
        reason: String,
        rule: String,
    },
}

impl Decision {
    fn deny(rule: &str, reason: String) -> Decision {
        Decision::Deny {
            reason,
            rule: rule.to_owned(),
        }
    }

    /// Whether the call may proceed.
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow)
    }
}

/// Decides one import call against the grant. Fails closed: anything the grant
/// does not clearly allow is denied.
pub fn check_import(grant: &Grant, call: &ImportCall) -> Decision {
    let cap = call.capability();
    let not_granted = || {
        Decision::deny(
            "grant.capabilities",
            format!("{cap}: capability is not granted to this call"),
        )
    };
    match call {
        ImportCall::FsOpen { path, write } => match &grant.fs {
            Some(fs) => check_fs(fs, path, *write),
            None => not_granted(),
        },
        ImportCall::FsRead { path } => match &grant.fs {
            Some(fs) => check_fs(fs, path, false),
            None => not_granted(),
        },
        ImportCall::FsWrite { path } | ImportCall::FsDelete { path } => match &grant.fs {
            Some(fs) => check_fs(fs, path, true),
            None => not_granted(),
        },
        ImportCall::HttpRequest {
            scheme,
            host,
            port,
            method,
            ..
        } => match &grant.http {
            Some(http) => check_http(http, scheme, host, *port, method),
            None => not_granted(),
        },
        ImportCall::KvGet { key } | ImportCall::KvList { prefix: key } => match &grant.kv {
            Some(_) => check_key(key),
            None => not_granted(),
        },
        ImportCall::KvSet { key, len } => match &grant.kv {
            Some(kv) if !kv.write => Decision::deny(
                "grant.kv.write",
                format!(
                    "kv: set `{key}` denied: namespace `{}` is granted read-only",
                    kv.namespace
                ),
            ),
            Some(kv) if *len > kv.max_value_bytes => Decision::deny(
                "grant.kv.max_value_bytes",
                format!(
                    "kv: value of {len} bytes for `{key}` exceeds the granted {} bytes",
                    kv.max_value_bytes
                ),
            ),
            Some(_) => check_key(key),
            None => not_granted(),
        },
        ImportCall::KvDelete { key } => match &grant.kv {
            Some(kv) if !kv.write => Decision::deny(
                "grant.kv.write",
                format!(
                    "kv: delete `{key}` denied: namespace `{}` is granted read-only",
                    kv.namespace
                ),
            ),
            Some(_) => check_key(key),
            None => not_granted(),
        },
        ImportCall::SecretGet { name } => match &grant.secrets {
            Some(s) => check_secret(s, name),
            None => not_granted(),
        },
        ImportCall::Log { .. } => match &grant.log {
            Some(_) => Decision::Allow,
            None => not_granted(),
        },
    }
}

fn check_fs(fs: &FsGrant, path: &str, write: bool) -> Decision {
    if !path.starts_with('/') {
        return Decision::deny(
            "grant.fs.path",
            format!(
                "fs: path `{path}` is not under a granted directory (grant allows: {})",
                fs.describe()
            ),
        );
    }
    if path.split('/').any(|c| c == "..") {
        return Decision::deny(
            "grant.fs.path",
            format!(
                "fs: path `{path}` contains `..` (grant allows: {})",
                fs.describe()
            ),
        );
    }
    // The longest granted directory that contains the path decides the mode.
    let dir = fs
        .dirs
        .iter()
        .filter(|d| {
            let g = d.guest.trim_end_matches('/');
            path == g || path.starts_with(&format!("{g}/")) || g.is_empty()
        })
        .max_by_key(|d| d.guest.len());
    match dir {
        None => Decision::deny(
            "grant.fs.path",
            format!(
                "fs: path `{path}` is not under a granted directory (grant allows: {})",
                fs.describe()
            ),
        ),
        Some(d) if write && d.mode == DirMode::ReadOnly => Decision::deny(
            "grant.fs.mode",
            format!(
                "fs: write to `{path}` denied: `{}` is granted read-only",
                d.guest
            ),
        ),
        Some(_) => Decision::Allow,
    }
}

fn check_http(http: &HttpGrant, scheme: &str, host: &str, port: u16, method: &str) -> Decision {
    let default_port = match scheme {
        "http" => 80,
        "https" => 443,
        _ => {
            return Decision::deny(
                "grant.http.scheme",
                format!(
                    "http: scheme `{scheme}` is not allowed (grant allows: {})",
                    http.describe()
                ),
            );
        }
    };
    let host_rules: Vec<_> = http
        .allow
        .iter()
        .filter(|r| r.host.eq_ignore_ascii_case(host) && r.port.unwrap_or(default_port) == port)
        .collect();
    if host_rules.is_empty() {
        return Decision::deny(
            "grant.http.host",
            format!(
                "http: host `{host}:{port}` is not granted (grant allows: {})",
                http.describe()
            ),
        );
    }
    if !host_rules
        .iter()
        .any(|r| r.schemes.iter().any(|s| s == scheme))
    {
        return Decision::deny(
            "grant.http.scheme",
            format!(
                "http: scheme `{scheme}` to `{host}:{port}` is not granted (grant allows: {})",
                http.describe()
            ),
        );
    }
    if !host_rules
        .iter()
        .any(|r| r.schemes.iter().any(|s| s == scheme) && r.methods.iter().any(|m| m == method))
    {
        return Decision::deny(
            "grant.http.method",
            format!(
                "http: method {method} to `{host}:{port}` is not granted (grant allows: {})",
                http.describe()
            ),
        );
    }
    Decision::Allow
}

fn check_key(key: &str) -> Decision {
    if key.len() > MAX_KV_KEY_BYTES {
        return Decision::deny(
            "grant.kv.key",
            format!(
                "kv: key of {} bytes exceeds {MAX_KV_KEY_BYTES} bytes",
                key.len()
            ),
        );
    }
    Decision::Allow
}

fn check_secret(s: &SecretsGrant, name: &str) -> Decision {
    if s.names.contains(name) {
        return Decision::Allow;
    }
    let allowed: Vec<&str> = s.names.iter().map(String::as_str).collect();
    Decision::deny(
        "grant.secrets.names",
        format!(
            "secrets: `{name}` is not granted (grant allows: {})",
            if allowed.is_empty() {
                "no secrets".to_owned()
            } else {
                allowed.join(", ")
            }
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limits;

    fn grant(toml_text: &str) -> Grant {
        match Grant::from_toml(toml_text) {
            Ok(g) => g,
            Err(e) => panic!("test grant does not parse: {e}"),
        }
    }

    /// Asserts a decision: `None` for allow, `Some(fragment)` for a denial whose
    /// reason contains `fragment`.
    fn check(g: &Grant, call: ImportCall, expected: Option<&str>) {
        let d = check_import(g, &call);
        match (expected, &d) {
            (None, Decision::Allow) => {}
            (Some(frag), Decision::Deny { reason, .. }) if reason.contains(frag) => {}
            _ => panic!("{call:?}: expected {expected:?}, got {d:?}"),
        }
    }

    const G: &str = r#"
        [fs]
        dirs = [
          { host = "/srv/data", guest = "/data", mode = "read-write" },
          { host = "/srv/ref", guest = "/ref", mode = "read-only" },
        ]
        [http]
        allow = [{ host = "api.example.com", methods = ["GET", "POST"] },
                 { host = "127.0.0.1", port = 8080, schemes = ["http"] }]
        [kv]
        namespace = "tickets"
        max_value_bytes = 10
        [secrets]
        names = ["API_TOKEN"]
        [log]
    "#;

    fn fs_open(path: &str, write: bool) -> ImportCall {
        ImportCall::FsOpen {
            path: path.into(),
            write,
        }
    }

    fn http(scheme: &str, host: &str, port: u16, method: &str) -> ImportCall {
        ImportCall::HttpRequest {
            scheme: scheme.into(),
            host: host.into(),
            port,
            method: method.into(),
            path: "/".into(),
        }
    }

    #[test]
    fn fs_rules() {
        let g = grant(G);
        check(&g, fs_open("/data/a.txt", true), None);
        check(&g, fs_open("/ref/a.txt", false), None);
        check(&g, fs_open("/ref/a.txt", true), Some("granted read-only"));
        check(
            &g,
            ImportCall::FsDelete {
                path: "/ref/x".into(),
            },
            Some("read-only"),
        );
        check(
            &g,
            fs_open("/data/../etc/passwd", false),
            Some("contains `..`"),
        );
        check(
            &g,
            fs_open("/etc/passwd", false),
            Some("not under a granted directory"),
        );
        check(
            &g,
            fs_open("relative", false),
            Some("not under a granted directory"),
        );
        check(
            &g,
            fs_open("/database", false),
            Some("not under a granted directory"),
        );
        let none = Grant::empty(Limits::STANDARD);
        check(
            &none,
            fs_open("/data/a.txt", false),
            Some("fs: capability is not granted"),
        );
    }

    #[test]
    fn http_rules() {
        let g = grant(G);
        check(&g, http("https", "api.example.com", 443, "POST"), None);
        check(&g, http("https", "API.EXAMPLE.COM", 443, "GET"), None);
        check(&g, http("http", "127.0.0.1", 8080, "GET"), None);
        check(
            &g,
            http("http", "127.0.0.1", 8080, "POST"),
            Some("method POST"),
        );
        check(
            &g,
            http("http", "api.example.com", 80, "GET"),
            Some("not granted"),
        );
        check(
            &g,
            http("https", "api.example.com", 8443, "GET"),
            Some("`api.example.com:8443` is not granted"),
        );
        check(
            &g,
            http("https", "evil.example", 443, "GET"),
            Some("host `evil.example:443` is not granted"),
        );
        check(
            &g,
            http("ftp", "api.example.com", 21, "GET"),
            Some("scheme `ftp`"),
        );
        check(
            &Grant::empty(Limits::STANDARD),
            http("https", "api.example.com", 443, "GET"),
            Some("http: capability is not granted"),
        );
    }

    #[test]
    fn kv_secrets_log_rules() {
        let g = grant(G);
        check(&g, ImportCall::KvGet { key: "a".into() }, None);
        check(
            &g,
            ImportCall::KvSet {
                key: "a".into(),
                len: 10,
            },
            None,
        );
        check(
            &g,
            ImportCall::KvSet {
                key: "a".into(),
                len: 11,
            },
            Some("exceeds the granted 10 bytes"),
        );
        check(
            &g,
            ImportCall::KvGet {
                key: "k".repeat(513),
            },
            Some("exceeds 512 bytes"),
        );
        let ro = grant("[kv]\nnamespace = \"n\"\nwrite = false");
        check(&ro, ImportCall::KvGet { key: "a".into() }, None);
        check(
            &ro,
            ImportCall::KvDelete { key: "a".into() },
            Some("read-only"),
        );
        check(
            &g,
            ImportCall::SecretGet {
                name: "API_TOKEN".into(),
            },
            None,
        );
        check(
            &g,
            ImportCall::SecretGet {
                name: "DB_PASSWORD".into(),
            },
            Some("grant allows: API_TOKEN"),
        );
        check(&g, ImportCall::Log { len: 3 }, None);
        let none = Grant::empty(Limits::STANDARD);
        check(
            &none,
            ImportCall::KvGet { key: "a".into() },
            Some("kv: capability is not granted"),
        );
        check(
            &none,
            ImportCall::SecretGet { name: "A".into() },
            Some("secrets: capability is not granted"),
        );
        check(
            &none,
            ImportCall::Log { len: 1 },
            Some("log: capability is not granted"),
        );
    }

    #[test]
    fn invalid_grants_are_refused() {
        for (text, frag) in [
            (
                "[fs]\ndirs = [{ host = \"rel\", guest = \"/d\", mode = \"read-only\" }]",
                "absolute",
            ),
            (
                "[fs]\ndirs = [{ host = \"/a\", guest = \"/d/../x\", mode = \"read-only\" }]",
                "no `..`",
            ),
            (
                "[http]\nallow = [{ host = \"*.example.com\" }]",
                "no wildcards",
            ),
            (
                "[http]\nallow = [{ host = \"a\", methods = [\"get\"] }]",
                "method `get`",
            ),
            ("[kv]\nnamespace = \"a/b\"", "namespace"),
            ("[limits]\nfuel = 0", "fuel must be between"),
            ("[limits]\nmemory_bytes = 99999999999", "memory_bytes"),
            ("[sockets]\n", "unknown field"),
            ("[secrets]\nnames = [\"a-b\"]", "secrets: name"),
        ] {
            match Grant::from_toml(text) {
                Err(e) => assert!(e.to_string().contains(frag), "{text}: {e}"),
                Ok(g) => panic!("{text}: accepted {g:?}"),
            }
        }
    }

    #[test]
    fn capabilities_and_actions() {
        let g = grant("actions = [\"read_ticket\"]\n[kv]\nnamespace = \"t\"");
        assert!(g.allows_action("read_ticket"));
        assert!(!g.allows_action("delete_ticket"));
        assert_eq!(
            g.capabilities().into_iter().collect::<Vec<_>>(),
            vec![Capability::Kv]
        );
        assert_eq!(g.limits, Limits::STANDARD);
        assert_eq!(
            Capability::parse("net"),
            Err(crate::Error::UnknownCapability("net".into()))
        );
    }
}
