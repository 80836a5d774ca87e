//! Loaded tools: compiled (or cache-loaded) components with their checked
//! self-description.
//!
//! Loading a component compiles it once (or loads the precompiled `.cwasm`
//! from the disk cache, keyed by the component's SHA-256 and the engine's
//! fingerprint), maps its imports to capabilities, runs its `describe` export
//! in a sandbox with no capabilities, and refuses a tool whose description is
//! not usable: no actions, duplicate names, or schemas that are not valid
//! JSON Schema.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;
use sha2::{Digest, Sha256};
use warden_policy::{Capability, Effect};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::bindings::ToolPre;
use crate::linker::{Provider, capability_of};
use crate::state::CallState;
use crate::{Error, Result};

/// One action as the tool describes it, with parsed schemas.
#[derive(Debug, Clone, Serialize)]
pub struct ActionInfo {
    pub name: String,
    pub description: String,
    pub effect: Effect,
    pub input_schema: serde_json::Value,
    pub output_schema: serde_json::Value,
}

/// A tool's checked description of itself.
#[derive(Debug, Clone, Serialize)]
pub struct ToolInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    pub actions: Vec<ActionInfo>,
}

impl ToolInfo {
    /// The action named `name`.
    pub fn action(&self, name: &str) -> Option<&ActionInfo> {
        self.actions.iter().find(|a| a.name == name)
    }

    /// Action name → effect class, for checking a manifest.
    pub fn effects(&self) -> std::collections::BTreeMap<String, Effect> {
        self.actions
            .iter()
            .map(|a| (a.name.clone(), a.effect))
            .collect()
    }

    /// Converts the raw WIT description, refusing what the host cannot use.
    pub(crate) fn from_wit(
        raw: crate::bindings::warden::tool::types::ToolInfo,
    ) -> Result<ToolInfo> {
        use crate::bindings::warden::tool::types::Effect as W;
        let bad = |m: String| Error::InvalidDescription(m);
        if raw.name.trim().is_empty() {
            return Err(bad("tool name is empty".into()));
        }
        if raw.actions.is_empty() {
            return Err(bad(format!("tool `{}` describes no actions", raw.name)));
        }
        let mut seen = BTreeSet::new();
        let mut actions = Vec::with_capacity(raw.actions.len());
        for a in raw.actions {
            if a.name.is_empty() || !seen.insert(a.name.clone()) {
                return Err(bad(format!(
                    "action name `{}` is empty or repeated",
                    a.name
                )));
            }
            let input_schema = parse_schema(&a.name, "input", &a.input_schema)?;
            let output_schema = parse_schema(&a.name, "output", &a.output_schema)?;
            actions.push(ActionInfo {
                name: a.name,
                description: a.description,
                effect: match a.effect {
                    W::Read => Effect::Read,
                    W::Write => Effect::Write,
                    W::Destructive => Effect::Destructive,
                    W::External => Effect::External,
                },
                input_schema,
                output_schema,
            });
        }
        Ok(ToolInfo {
            name: raw.name,
            version: raw.version,
            description: raw.description,
            actions,
        })
    }
}

impl ToolInfo {
    /// Compiles every action's schemas once, at load.
    pub(crate) fn validators(
        &self,
    ) -> Result<HashMap<String, (jsonschema::Validator, jsonschema::Validator)>> {
        let compile = |a: &ActionInfo, which: &str, v: &serde_json::Value| {
            jsonschema::validator_for(v).map_err(|e| {
                Error::InvalidDescription(format!(
                    "action `{}`: {which} schema cannot be compiled: {e}",
                    a.name
                ))
            })
        };
        self.actions
            .iter()
            .map(|a| {
                Ok((
                    a.name.clone(),
                    (
                        compile(a, "input", &a.input_schema)?,
                        compile(a, "output", &a.output_schema)?,
                    ),
                ))
            })
            .collect()
    }
}

/// The first way `value` breaks `schema`, as (field, message). The field is
/// named like the guest SDK names it: a top-level field by its name, a
/// nested one as a JSON pointer (`/ticket/id`), the whole input as `$`. A
/// missing or unexpected property is the field itself.
pub(crate) fn schema_error(
    validator: &jsonschema::Validator,
    value: &serde_json::Value,
) -> Option<(String, String)> {
    use jsonschema::error::ValidationErrorKind as K;
    validator.iter_errors(value).next().map(|e| {
        let mut path = e.instance_path.to_string();
        let property = match &e.kind {
            K::Required { property } => property.as_str().map(str::to_owned),
            K::AdditionalProperties { unexpected } => unexpected.first().cloned(),
            _ => None,
        };
        if let Some(p) = property {
            path = format!("{path}/{p}");
        }
        let field = match path.strip_prefix('/') {
            None => "$".to_owned(),
            Some(top) if !top.contains('/') => top.to_owned(),
            Some(_) => path.clone(),
        };
        (field, e.to_string())
    })
}

/// Parses a schema and checks it is a valid JSON Schema.
fn parse_schema(action: &str, which: &str, text: &str) -> Result<serde_json::Value> {
    let bad =
        |m: String| Error::InvalidDescription(format!("action `{action}`: {which} schema {m}"));
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| bad(format!("is not JSON: {e}")))?;
    jsonschema::meta::validate(&value)
        .map_err(|e| bad(format!("is not a valid JSON Schema: {e}")))?;
    jsonschema::validator_for(&value).map_err(|e| bad(format!("cannot be compiled: {e}")))?;
    Ok(value)
}

/// A loaded, described component, ready to instantiate.
pub struct Tool {
    pub(crate) hash: [u8; 32],
    pub(crate) component: Component,
    pub(crate) info: ToolInfo,
    pub(crate) imports: Vec<String>,
    pub(crate) required: BTreeSet<Capability>,
    pub(crate) from_cache: bool,
    pub(crate) pres: Mutex<HashMap<BTreeSet<Capability>, ToolPre<CallState>>>,
    /// Compiled (input, output) schema validators per action.
    pub(crate) validators: HashMap<String, (jsonschema::Validator, jsonschema::Validator)>,
}

impl std::fmt::Debug for Tool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tool")
            .field("hash", &self.hash_hex())
            .field("name", &self.info.name)
            .field("required", &self.required)
            .finish_non_exhaustive()
    }
}

impl Tool {
    /// SHA-256 of the component bytes.
    pub fn hash(&self) -> [u8; 32] {
        self.hash
    }

    /// SHA-256 of the component bytes, hex.
    pub fn hash_hex(&self) -> String {
        hex::encode(self.hash)
    }

    /// The tool's checked description.
    pub fn info(&self) -> &ToolInfo {
        &self.info
    }

    /// Capabilities the component imports (it instantiates only with all of them).
    pub fn required_capabilities(&self) -> &BTreeSet<Capability> {
        &self.required
    }

    /// Whether the compiled code came from the disk cache.
    pub fn loaded_from_cache(&self) -> bool {
        self.from_cache
    }

    /// The component's import names.
    pub fn imports(&self) -> &[String] {
        &self.imports
    }
}

/// Maps the component's imports to capabilities; refuses imports Warden never
/// provides.
pub(crate) fn classify_imports(
    engine: &Engine,
    component: &Component,
) -> Result<(Vec<String>, BTreeSet<Capability>)> {
    let mut names = Vec::new();
    let mut required = BTreeSet::new();
    for (name, _) in component.component_type().imports(engine) {
        match capability_of(name) {
            Provider::Base => {}
            Provider::Capability(c) => {
                required.insert(c);
            }
            Provider::Never => {
                return Err(Error::UnsupportedImport(name.to_owned()));
            }
        }
        names.push(name.to_owned());
    }
    Ok((names, required))
}

/// The on-disk cache of precompiled components.
#[derive(Debug, Clone)]
pub(crate) struct DiskCache {
    pub dir: PathBuf,
    pub fingerprint: String,
}

impl DiskCache {
    fn path(&self, hash: &[u8; 32]) -> PathBuf {
        self.dir
            .join(format!("{}-{}.cwasm", hex::encode(hash), self.fingerprint))
    }

    /// Loads a cached compilation, if present and intact.
    pub fn load(&self, engine: &Engine, hash: &[u8; 32]) -> Option<Component> {
        let path = self.path(hash);
        let bytes = std::fs::read(&path).ok()?;
        let (body, tag) = bytes.split_at_checked(bytes.len().checked_sub(32)?)?;
        if Sha256::digest(body).as_slice() != tag {
            tracing::warn!(path = %path.display(), "cached component is corrupt; recompiling");
            let _ = std::fs::remove_file(&path);
            return None;
        }
        deserialize(engine, body)
            .inspect_err(
                |e| tracing::warn!(path = %path.display(), "cached component unusable: {e}"),
            )
            .ok()
    }

    /// Stores a compilation atomically (write to a temporary file, then rename).
    pub fn store(&self, hash: &[u8; 32], component: &Component) {
        let result = (|| -> std::io::Result<()> {
            let mut bytes = component
                .serialize()
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let tag = Sha256::digest(&bytes);
            bytes.extend_from_slice(&tag);
            std::fs::create_dir_all(&self.dir)?;
            let path = self.path(hash);
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, &bytes)?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = result {
            tracing::warn!(dir = %self.dir.display(), "cannot cache compiled component: {e}");
        }
    }
}

/// Deserializes a precompiled component.
///
/// Reasoned `unsafe` exception: wasmtime marks deserialization unsafe because
/// the bytes are executable code and must come from wasmtime itself. Here they
/// do: the only writer of the cache directory is [`DiskCache::store`], files
/// are written atomically and carry a SHA-256 tag checked above, and the
/// engine fingerprint in the file name guarantees a matching engine. Someone
/// able to write the host's cache directory can already replace the host
/// binary; the cache directory must be owned by the host user (documented).
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: see the function documentation.
    unsafe { Component::deserialize(engine, bytes) }
}

/// Compiles a component, using the disk cache when configured.
pub(crate) fn compile(
    engine: &Engine,
    cache: Option<&DiskCache>,
    bytes: &[u8],
) -> Result<([u8; 32], Component, bool)> {
    let hash: [u8; 32] = Sha256::digest(bytes).into();
    if let Some(c) = cache
        && let Some(component) = c.load(engine, &hash)
    {
        return Ok((hash, component, true));
    }
    let component =
        Component::new(engine, bytes).map_err(|e| Error::InvalidComponent(format!("{e:#}")))?;
    if let Some(c) = cache {
        c.store(&hash, &component);
    }
    Ok((hash, component, false))
}

/// Reads a component file.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Io(format!("reading `{}`: {e}", path.display())))
}
