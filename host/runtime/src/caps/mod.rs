//! Capability modules. One per capability, each with a per-call state built
//! only from its grant and a borrowed view implementing the generated `Host`
//! trait, which can reach only its own state and the guard.

pub mod fs;
pub mod http;
pub mod kv;
pub mod log;
pub mod secrets;
