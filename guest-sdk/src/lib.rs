//! `warden-guest`: write a Warden tool in plain Rust.
//!
//! A tool is a set of actions. Each action is a plain function from a
//! deserializable input to a serializable output; the input and output JSON
//! Schemas are derived from the types with [`schemars`], and [`export_tool!`]
//! turns the tool into a WebAssembly component exporting the `warden:tool/tool`
//! world. Build it with `cargo build --release --target wasm32-wasip2`.
//!
//! ```no_run
//! use warden_guest::prelude::*;
//!
//! #[derive(Deserialize, JsonSchema)]
//! struct Greet {
//!     /// Who to greet.
//!     name: String,
//! }
//!
//! #[derive(Serialize, JsonSchema)]
//! struct Greeting {
//!     message: String,
//! }
//!
//! fn greet(input: Greet) -> Result<Greeting, ToolError> {
//!     if input.name.is_empty() {
//!         return Err(ToolError::invalid_input("name", "must not be empty"));
//!     }
//!     Ok(Greeting { message: format!("hello, {}", input.name) })
//! }
//!
//! struct Hello;
//!
//! impl Tool for Hello {
//!     const NAME: &'static str = "hello";
//!     const VERSION: &'static str = "0.1.0";
//!     const DESCRIPTION: &'static str = "Greets people.";
//!
//!     fn actions() -> Vec<Action> {
//!         vec![Action::new("greet", "Greet someone by name.", Effect::Read, greet)]
//!     }
//! }
//!
//! warden_guest::export_tool!(Hello);
//! ```
//!
//! Capabilities are reached through [`kv`], [`secrets`], [`log`] and [`http`]
//! (and `std::fs` for granted directories). Each works only if the host's grant
//! for the calling agent includes it; otherwise the call returns a denial, or the
//! component does not instantiate at all when the capability is not linked.

use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub mod http;

/// Generated bindings of the `warden:tool/tool` world. Tool authors normally do
/// not need them; they are public so that [`export_tool!`] can reach them.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "tool",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_tool_world",
        default_bindings_module: "warden_guest::bindings",
    });
}

use bindings::warden::tool::types as wit;

/// Everything a tool author usually needs.
pub mod prelude {
    pub use crate::{Action, Effect, Tool, ToolError};
    pub use schemars::JsonSchema;
    pub use serde::{Deserialize, Serialize};
}

/// What an action does to the world outside the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Reads only.
    Read,
    /// Creates or changes data.
    Write,
    /// Deletes or irreversibly changes data.
    Destructive,
    /// Acts on a system outside the host.
    External,
}

/// A typed failure of an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolError {
    /// The input is invalid; `field` names the offending field.
    InvalidInput { field: String, message: String },
    /// The action ran and failed.
    Failed(String),
    /// The action was refused.
    Denied(String),
}

impl ToolError {
    /// An invalid-input error naming `field`.
    pub fn invalid_input(field: impl Into<String>, message: impl Into<String>) -> ToolError {
        ToolError::InvalidInput {
            field: field.into(),
            message: message.into(),
        }
    }

    /// A failure with a message.
    pub fn failed(message: impl std::fmt::Display) -> ToolError {
        ToolError::Failed(message.to_string())
    }

    /// A denial with a message.
    pub fn denied(message: impl std::fmt::Display) -> ToolError {
        ToolError::Denied(message.to_string())
    }
}

impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ToolError::InvalidInput { field, message } => {
                write!(f, "invalid input: field `{field}`: {message}")
            }
            ToolError::Failed(m) => write!(f, "failed: {m}"),
            ToolError::Denied(m) => write!(f, "denied: {m}"),
        }
    }
}

impl From<kv::Error> for ToolError {
    fn from(e: kv::Error) -> ToolError {
        match e {
            kv::Error::Denied(m) => ToolError::Denied(m),
            kv::Error::TooLarge(m) => ToolError::Failed(format!("kv: {m}")),
            kv::Error::Backend(m) => ToolError::Failed(format!("kv: {m}")),
        }
    }
}

impl From<secrets::Error> for ToolError {
    fn from(e: secrets::Error) -> ToolError {
        match e {
            secrets::Error::Denied(m) => ToolError::Denied(m),
            secrets::Error::Missing(m) => ToolError::Failed(format!("secrets: {m}")),
        }
    }
}

type Handler = Box<dyn Fn(&str) -> Result<String, ToolError>>;

/// A schema, generated only when `describe` asks for it: `invoke` must not pay
/// for schema generation on every call.
enum Schema {
    Derived(fn() -> String),
    Given(String),
}

impl Schema {
    fn render(self) -> String {
        match self {
            Schema::Derived(f) => f(),
            Schema::Given(s) => s,
        }
    }
}

/// One action: a name, a description, an effect class and a handler whose input
/// and output schemas are derived from its types.
pub struct Action {
    name: &'static str,
    description: &'static str,
    effect: Effect,
    input_schema: Schema,
    output_schema: Schema,
    handler: Handler,
}

impl std::fmt::Debug for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Action")
            .field("name", &self.name)
            .field("effect", &self.effect)
            .finish_non_exhaustive()
    }
}

impl Action {
    /// Declares an action backed by a plain function.
    pub fn new<I, O>(
        name: &'static str,
        description: &'static str,
        effect: Effect,
        handler: fn(I) -> Result<O, ToolError>,
    ) -> Action
    where
        I: DeserializeOwned + JsonSchema + 'static,
        O: Serialize + JsonSchema + 'static,
    {
        Action {
            name,
            description,
            effect,
            input_schema: Schema::Derived(schema_json::<I>),
            output_schema: Schema::Derived(schema_json::<O>),
            handler: Box::new(move |input: &str| {
                let parsed: I = parse_input(input)?;
                let out = handler(parsed)?;
                serde_json::to_string(&out)
                    .map_err(|e| ToolError::failed(format!("output does not serialize: {e}")))
            }),
        }
    }

    /// Overrides the derived input schema with a hand-written one (JSON text).
    /// The host checks that it is a valid JSON Schema when it loads the tool.
    pub fn with_input_schema(mut self, schema: &str) -> Action {
        self.input_schema = Schema::Given(schema.to_owned());
        self
    }

    /// Overrides the derived output schema with a hand-written one (JSON
    /// text). The host validates every output against it.
    pub fn with_output_schema(mut self, schema: &str) -> Action {
        self.output_schema = Schema::Given(schema.to_owned());
        self
    }
}

fn schema_json<T: JsonSchema>() -> String {
    let schema = schemars::schema_for!(T);
    serde_json::to_string(&schema).unwrap_or_else(|_| "{}".to_owned())
}

/// Parses the JSON input, turning serde's error into an invalid-input error that
/// names the field.
fn parse_input<I: DeserializeOwned>(input: &str) -> Result<I, ToolError> {
    let de = &mut serde_json::Deserializer::from_str(input);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        // A missing or unknown field is reported by serde at the parent path; the
        // field's own name is between backticks in the message.
        let named = message.split('`').nth(1).filter(|_| {
            message.starts_with("missing field") || message.starts_with("unknown field")
        });
        let field = match (path.as_str(), named) {
            (".", Some(n)) => n.to_owned(),
            (".", None) => "$".to_owned(),
            // serde_path_to_error already ends the path with an unknown field.
            (p, Some(n)) if p.rsplit('.').next() == Some(n) => p.to_owned(),
            (p, Some(n)) => format!("{p}.{n}"),
            (p, None) => p.to_owned(),
        };
        ToolError::InvalidInput { field, message }
    })
}

/// A Warden tool: a name, a version, a description and its actions.
pub trait Tool {
    const NAME: &'static str;
    const VERSION: &'static str;
    const DESCRIPTION: &'static str;

    /// The tool's actions. Called for `describe` and for each `invoke`.
    fn actions() -> Vec<Action>;
}

#[doc(hidden)]
pub fn __describe<T: Tool>() -> wit::ToolInfo {
    wit::ToolInfo {
        name: T::NAME.to_owned(),
        version: T::VERSION.to_owned(),
        description: T::DESCRIPTION.to_owned(),
        actions: T::actions()
            .into_iter()
            .map(|a| wit::ActionInfo {
                name: a.name.to_owned(),
                description: a.description.to_owned(),
                input_schema: a.input_schema.render(),
                output_schema: a.output_schema.render(),
                effect: match a.effect {
                    Effect::Read => wit::Effect::Read,
                    Effect::Write => wit::Effect::Write,
                    Effect::Destructive => wit::Effect::Destructive,
                    Effect::External => wit::Effect::External,
                },
            })
            .collect(),
    }
}

#[doc(hidden)]
pub fn __invoke<T: Tool>(action: &str, input: &str) -> Result<String, wit::ToolError> {
    let Some(a) = T::actions().into_iter().find(|a| a.name == action) else {
        return Err(wit::ToolError::UnknownAction(action.to_owned()));
    };
    (a.handler)(input).map_err(|e| match e {
        ToolError::InvalidInput { field, message } => {
            wit::ToolError::InvalidInput(wit::FieldError { field, message })
        }
        ToolError::Failed(m) => wit::ToolError::Failed(m),
        ToolError::Denied(m) => wit::ToolError::Denied(m),
    })
}

/// Exports a [`Tool`] as the component's `warden:tool/tool` world.
///
/// Use it once per crate, at the top level: `warden_guest::export_tool!(MyTool);`.
#[macro_export]
macro_rules! export_tool {
    ($tool:ty) => {
        #[doc(hidden)]
        pub struct __WardenToolExport;

        impl $crate::bindings::Guest for __WardenToolExport {
            fn describe() -> $crate::bindings::warden::tool::types::ToolInfo {
                $crate::__describe::<$tool>()
            }

            fn invoke(
                action: ::std::string::String,
                input: ::std::string::String,
            ) -> ::std::result::Result<
                ::std::string::String,
                $crate::bindings::warden::tool::types::ToolError,
            > {
                $crate::__invoke::<$tool>(&action, &input)
            }
        }

        $crate::bindings::__export_tool_world!(__WardenToolExport with_types_in $crate::bindings);
    };
}

/// Key-value storage in the namespace the grant names.
pub mod kv {
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use crate::bindings::warden::tool::kv as raw;
    pub use crate::bindings::warden::tool::kv::Error;

    /// The value stored under `key`, if any.
    pub fn get(key: &str) -> Result<Option<Vec<u8>>, Error> {
        raw::get(key)
    }

    /// Stores `value` under `key`.
    pub fn set(key: &str, value: &[u8]) -> Result<(), Error> {
        raw::set(key, value)
    }

    /// Deletes `key`; returns whether it existed.
    pub fn delete(key: &str) -> Result<bool, Error> {
        raw::delete(key)
    }

    /// Keys that start with `prefix`, sorted.
    pub fn list(prefix: &str) -> Result<Vec<String>, Error> {
        raw::list_keys(prefix)
    }

    /// Reads and deserializes a JSON value.
    pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, Error> {
        match raw::get(key)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::Backend(format!("value of `{key}` is not the expected JSON: {e}"))
            }),
        }
    }

    /// Serializes and stores a JSON value.
    pub fn set_json<T: Serialize>(key: &str, value: &T) -> Result<(), Error> {
        let bytes = serde_json::to_vec(value).map_err(|e| Error::Backend(e.to_string()))?;
        raw::set(key, &bytes)
    }
}

/// Secrets granted to the tool, by name.
pub mod secrets {
    use crate::bindings::warden::tool::secrets as raw;
    pub use crate::bindings::warden::tool::secrets::Error;

    /// The value of the secret `name`.
    pub fn get(name: &str) -> Result<String, Error> {
        raw::get(name)
    }
}

/// Log lines captured by the host (bounded by the grant).
pub mod log {
    use crate::bindings::warden::tool::log::{self as raw, Level};

    pub fn debug(message: &str) {
        raw::log(Level::Debug, message);
    }
    pub fn info(message: &str) {
        raw::log(Level::Info, message);
    }
    pub fn warn(message: &str) {
        raw::log(Level::Warn, message);
    }
    pub fn error(message: &str) {
        raw::log(Level::Error, message);
    }
}
