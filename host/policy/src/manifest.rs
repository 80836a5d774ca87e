//! Tool manifests: what a tool says it does and what it requests.
//!
//! A `tool.toml` names the tool, its actions (each with an effect class and a
//! data classification) and the capabilities it requests, with scopes. Two
//! checks keep manifests honest: [`Manifest::check_component`] (the manifest
//! agrees with the component's own description and imports) and
//! [`Manifest::check_grant`] (a grant is never wider than the request).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::grant::{Capability, DirMode, Grant};
use crate::{Error, Result};

/// What an action does to the world outside the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Read,
    Write,
    Destructive,
    External,
}

/// Sensitivity of the data an action handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Classification {
    Public,
    Internal,
    Confidential,
    Restricted,
}

impl Effect {
    /// The effect's name, as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Read => "read",
            Effect::Write => "write",
            Effect::Destructive => "destructive",
            Effect::External => "external",
        }
    }
}

impl Classification {
    /// The tier's name, as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Classification::Public => "public",
            Classification::Internal => "internal",
            Classification::Confidential => "confidential",
            Classification::Restricted => "restricted",
        }
    }
}

/// One action as the manifest declares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestAction {
    pub name: String,
    pub effect: Effect,
    /// The tier of the data the action returns.
    pub classification: Classification,
    /// The tier of the destination the action sends data to (an external
    /// mail is `public`, an internal wiki `internal`); absent when it sends
    /// nothing out. A session that has read data above this tier may not
    /// call it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sends_to: Option<Classification>,
}

/// A directory the tool expects, by guest path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirRequest {
    pub guest: String,
    pub mode: DirMode,
}

/// The `fs` request: guest paths and the most access each may get.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsRequest {
    pub dirs: Vec<DirRequest>,
}

/// The `http` request: hosts (`"*"` for any host the operator names) and methods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRequest {
    pub hosts: BTreeSet<String>,
    pub methods: BTreeSet<String>,
}

/// The `kv` request: whether the tool writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvRequest {
    pub write: bool,
}

/// The `secrets` request: the names the tool reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsRequest {
    pub names: BTreeSet<String>,
}

/// The `log` request (no scope).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogRequest {}

/// Capabilities a tool requests. Absent means not requested.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requests {
    pub fs: Option<FsRequest>,
    pub http: Option<HttpRequest>,
    pub kv: Option<KvRequest>,
    pub secrets: Option<SecretsRequest>,
    pub log: Option<LogRequest>,
}

impl Requests {
    /// The requested capabilities.
    pub fn capabilities(&self) -> BTreeSet<Capability> {
        crate::grant::present([
            (Capability::Fs, self.fs.is_some()),
            (Capability::Http, self.http.is_some()),
            (Capability::Kv, self.kv.is_some()),
            (Capability::Secrets, self.secrets.is_some()),
            (Capability::Log, self.log.is_some()),
        ])
    }
}

/// A parsed and validated `tool.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub description: String,
    pub actions: Vec<ManifestAction>,
    #[serde(default)]
    pub capabilities: Requests,
}

/// Longest tool or action name accepted.
const MAX_NAME: usize = 64;

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= MAX_NAME
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && n.starts_with(|c: char| c.is_ascii_alphabetic())
}

impl Manifest {
    /// Parses and validates a manifest.
    pub fn from_toml(text: &str) -> Result<Manifest> {
        let m: Manifest =
            toml::from_str(text).map_err(|e| Error::InvalidManifest(e.to_string()))?;
        m.validate()?;
        Ok(m)
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidManifest(m));
        if !valid_name(&self.name) {
            return bad(format!(
                "tool name `{}` must start with a letter and use ASCII letters, digits, `-` or `_` (at most {MAX_NAME})",
                self.name
            ));
        }
        if !is_semver(&self.version) {
            return bad(format!(
                "version `{}` is not MAJOR.MINOR.PATCH",
                self.version
            ));
        }
        if self.actions.is_empty() {
            return bad("no actions".into());
        }
        let mut seen = BTreeSet::new();
        for a in &self.actions {
            if !valid_name(&a.name) {
                return bad(format!("action name `{}` is not valid", a.name));
            }
            if !seen.insert(a.name.as_str()) {
                return bad(format!("action `{}` is declared twice", a.name));
            }
        }
        if let Some(fs) = &self.capabilities.fs {
            for d in &fs.dirs {
                if !d.guest.starts_with('/') || d.guest.split('/').any(|c| c == "..") {
                    return bad(format!(
                        "fs: guest path `{}` must be absolute without `..`",
                        d.guest
                    ));
                }
            }
        }
        if let Some(http) = &self.capabilities.http {
            if http.hosts.is_empty() {
                return bad("http: no hosts requested".into());
            }
            for m in &http.methods {
                if !matches!(
                    m.as_str(),
                    "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS"
                ) {
                    return bad(format!(
                        "http: method `{m}` is not a known upper-case HTTP method"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks that the component's own description (action name → effect) and
    /// its imported capabilities agree with this manifest.
    pub fn check_component(
        &self,
        described: &BTreeMap<String, Effect>,
        imported: &BTreeSet<Capability>,
    ) -> Result<()> {
        let declared: BTreeMap<&str, Effect> = self
            .actions
            .iter()
            .map(|a| (a.name.as_str(), a.effect))
            .collect();
        for (name, effect) in described {
            match declared.get(name.as_str()) {
                None => {
                    return Err(Error::ManifestMismatch(format!(
                        "the component describes action `{name}`, which the manifest does not declare"
                    )));
                }
                Some(d) if d != effect => {
                    return Err(Error::ManifestMismatch(format!(
                        "action `{name}`: the manifest says effect `{}`, the component says `{}`",
                        effect_name(*d),
                        effect_name(*effect)
                    )));
                }
                Some(_) => {}
            }
        }
        if let Some(missing) = declared.keys().find(|n| !described.contains_key(**n)) {
            return Err(Error::ManifestMismatch(format!(
                "the manifest declares action `{missing}`, which the component does not describe"
            )));
        }
        let requested = self.capabilities.capabilities();
        if let Some(c) = imported.iter().find(|c| !requested.contains(c)) {
            return Err(Error::ManifestMismatch(format!(
                "the component imports capability `{c}`, which the manifest does not request"
            )));
        }
        Ok(())
    }

    /// Refuses a grant wider than this manifest's request, naming the excess.
    pub fn check_grant(&self, grant: &Grant) -> Result<()> {
        let excess = |m: String| Err(Error::GrantExceedsManifest(m));
        let req = &self.capabilities;
        if let Some(actions) = &grant.actions
            && let Some(a) = actions
                .iter()
                .find(|a| !self.actions.iter().any(|m| &m.name == *a))
        {
            return excess(format!(
                "action `{a}` is not an action of tool `{}`",
                self.name
            ));
        }
        let requested = req.capabilities();
        if let Some(c) = grant.capabilities().iter().find(|c| !requested.contains(c)) {
            return excess(format!(
                "capability `{c}` is not requested by tool `{}`",
                self.name
            ));
        }
        if let (Some(g), Some(r)) = (&grant.fs, &req.fs) {
            for d in &g.dirs {
                match r.dirs.iter().find(|x| x.guest == d.guest) {
                    None => {
                        return excess(format!("fs: guest path `{}` is not requested", d.guest));
                    }
                    Some(x) if x.mode == DirMode::ReadOnly && d.mode == DirMode::ReadWrite => {
                        return excess(format!(
                            "fs: `{}` is requested read-only, granted read-write",
                            d.guest
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        if let (Some(g), Some(r)) = (&grant.http, &req.http) {
            let any = r.hosts.contains("*");
            for rule in &g.allow {
                if !any && !r.hosts.iter().any(|h| h.eq_ignore_ascii_case(&rule.host)) {
                    return excess(format!("http: host `{}` is not requested", rule.host));
                }
                if let Some(m) = rule.methods.iter().find(|m| !r.methods.contains(*m)) {
                    return excess(format!(
                        "http: method {m} for `{}` is not requested",
                        rule.host
                    ));
                }
            }
        }
        if let (Some(g), Some(r)) = (&grant.kv, &req.kv)
            && g.write
            && !r.write
        {
            return excess("kv: write is granted but the tool requests read-only access".into());
        }
        if let (Some(g), Some(r)) = (&grant.secrets, &req.secrets)
            && let Some(n) = g.names.iter().find(|n| !r.names.contains(*n))
        {
            return excess(format!("secrets: `{n}` is not requested"));
        }
        Ok(())
    }
}

fn effect_name(e: Effect) -> &'static str {
    match e {
        Effect::Read => "read",
        Effect::Write => "write",
        Effect::Destructive => "destructive",
        Effect::External => "external",
    }
}

fn is_semver(v: &str) -> bool {
    let core = v.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILES: &str = r#"
        name = "files"
        version = "0.1.0"
        description = "files"
        [[actions]]
        name = "read"
        effect = "read"
        classification = "internal"
        [[actions]]
        name = "delete"
        effect = "destructive"
        classification = "internal"
        [capabilities.fs]
        dirs = [{ guest = "/workspace", mode = "read-write" }, { guest = "/ref", mode = "read-only" }]
        [capabilities.http]
        hosts = ["api.example.com"]
        methods = ["GET"]
        [capabilities.kv]
        write = false
        [capabilities.secrets]
        names = ["API_TOKEN"]
    "#;

    fn manifest() -> Manifest {
        match Manifest::from_toml(FILES) {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        }
    }

    /// `None`: the grant fits the manifest; `Some(fragment)`: refused naming it.
    fn check_grant(grant_toml: &str, expected: Option<&str>) {
        let g = match Grant::from_toml(grant_toml) {
            Ok(g) => g,
            Err(e) => panic!("{e}"),
        };
        match (manifest().check_grant(&g), expected) {
            (Ok(()), None) => {}
            (Err(e), Some(frag)) if e.to_string().contains(frag) => {}
            (r, e) => panic!("{grant_toml}: expected {e:?}, got {r:?}"),
        }
    }

    #[test]
    fn grants_never_exceed_the_manifest() {
        check_grant("", None);
        check_grant("actions = [\"read\"]", None);
        check_grant(
            "actions = [\"format_disk\"]",
            Some("action `format_disk` is not an action of tool `files`"),
        );
        check_grant(
            "[fs]\ndirs = [{ host = \"/a\", guest = \"/workspace\", mode = \"read-write\" }]",
            None,
        );
        check_grant(
            "[fs]\ndirs = [{ host = \"/a\", guest = \"/ref\", mode = \"read-only\" }]",
            None,
        );
        check_grant(
            "[fs]\ndirs = [{ host = \"/a\", guest = \"/ref\", mode = \"read-write\" }]",
            Some("fs: `/ref` is requested read-only, granted read-write"),
        );
        check_grant(
            "[fs]\ndirs = [{ host = \"/a\", guest = \"/etc\", mode = \"read-only\" }]",
            Some("guest path `/etc` is not requested"),
        );
        check_grant("[http]\nallow = [{ host = \"api.example.com\" }]", None);
        check_grant(
            "[http]\nallow = [{ host = \"evil.example\" }]",
            Some("http: host `evil.example` is not requested"),
        );
        check_grant(
            "[http]\nallow = [{ host = \"api.example.com\", methods = [\"POST\"] }]",
            Some("method POST"),
        );
        check_grant("[kv]\nnamespace = \"n\"\nwrite = false", None);
        check_grant("[kv]\nnamespace = \"n\"", Some("kv: write is granted"));
        check_grant("[secrets]\nnames = [\"API_TOKEN\"]", None);
        check_grant(
            "[secrets]\nnames = [\"DB_PASSWORD\"]",
            Some("secrets: `DB_PASSWORD` is not requested"),
        );
        check_grant("[log]", Some("capability `log` is not requested"));
    }

    #[test]
    fn wildcard_request_still_needs_named_hosts_in_grants() {
        let mut m = manifest();
        m.capabilities.http = Some(HttpRequest {
            hosts: ["*".to_owned()].into(),
            methods: ["GET".to_owned()].into(),
        });
        let g = Grant::from_toml("[http]\nallow = [{ host = \"anything.example\" }]")
            .map_err(|e| e.to_string());
        assert_eq!(g.map(|g| m.check_grant(&g).is_ok()), Ok(true));
        // Grants themselves refuse wildcards.
        assert!(Grant::from_toml("[http]\nallow = [{ host = \"*\" }]").is_err());
    }

    #[test]
    fn component_must_agree_with_manifest() {
        let m = manifest();
        let caps: BTreeSet<Capability> = [Capability::Fs].into();
        let described = |pairs: &[(&str, Effect)]| -> BTreeMap<String, Effect> {
            pairs.iter().map(|(n, e)| ((*n).to_owned(), *e)).collect()
        };
        assert_eq!(
            m.check_component(
                &described(&[("read", Effect::Read), ("delete", Effect::Destructive)]),
                &caps
            ),
            Ok(())
        );
        for (d, c, frag) in [
            (
                described(&[("read", Effect::Read)]),
                caps.clone(),
                "declares action `delete`, which the component does not describe",
            ),
            (
                described(&[
                    ("read", Effect::Read),
                    ("delete", Effect::Destructive),
                    ("extra", Effect::Read),
                ]),
                caps.clone(),
                "describes action `extra`",
            ),
            (
                described(&[("read", Effect::Read), ("delete", Effect::Write)]),
                caps.clone(),
                "the manifest says effect `destructive`, the component says `write`",
            ),
            (
                described(&[("read", Effect::Read), ("delete", Effect::Destructive)]),
                [Capability::Log].into(),
                "imports capability `log`, which the manifest does not request",
            ),
        ] {
            match m.check_component(&d, &c) {
                Err(e) => assert!(e.to_string().contains(frag), "{e}"),
                Ok(()) => panic!("accepted: {frag}"),
            }
        }
    }

    #[test]
    fn malformed_manifests_are_refused() {
        for (text, frag) in [
            ("name = \"x\"", "missing field"),
            (
                "name = \"9x\"\nversion = \"1.0.0\"\ndescription = \"\"\nactions = [{ name = \"a\", effect = \"read\", classification = \"public\" }]",
                "tool name `9x`",
            ),
            (
                "name = \"x\"\nversion = \"1.0\"\ndescription = \"\"\nactions = [{ name = \"a\", effect = \"read\", classification = \"public\" }]",
                "not MAJOR.MINOR.PATCH",
            ),
            (
                "name = \"x\"\nversion = \"1.0.0\"\ndescription = \"\"\nactions = []",
                "no actions",
            ),
            (
                "name = \"x\"\nversion = \"1.0.0\"\ndescription = \"\"\nactions = [{ name = \"a\", effect = \"delete\", classification = \"public\" }]",
                "unknown variant `delete`",
            ),
            (
                "name = \"x\"\nversion = \"1.0.0\"\ndescription = \"\"\nactions = [{ name = \"a\", effect = \"read\", classification = \"public\" }, { name = \"a\", effect = \"read\", classification = \"public\" }]",
                "declared twice",
            ),
            (
                "name = \"x\"\nversion = \"1.0.0\"\ndescription = \"\"\nactions = [{ name = \"a\", effect = \"read\", classification = \"public\" }]\n[capabilities.net]\n",
                "unknown field `net`",
            ),
        ] {
            match Manifest::from_toml(text) {
                Err(e) => assert!(e.to_string().contains(frag), "{text}: {e}"),
                Ok(m) => panic!("accepted {m:?}"),
            }
        }
    }
}
