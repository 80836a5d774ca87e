//! Linking: the one registry of capabilities.
//!
//! [`build`] links the base interfaces every component gets (wasi:io, clocks,
//! random, and wasi:cli with an empty environment and captured stdio) plus
//! exactly the capabilities in the set. An ungranted capability is not linked,
//! so a component importing it cannot instantiate; [`capability_of`] maps an
//! import name to the capability that provides it so that refusal can name the
//! missing grant.

use std::collections::BTreeSet;

use warden_policy::Capability;
use wasmtime::Engine;
use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime_wasi::cli::WasiCliView;
use wasmtime_wasi::clocks::WasiClocksView;
use wasmtime_wasi::filesystem::WasiFilesystemView;
use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, random};

use crate::bindings::warden::tool as wit;
use crate::caps::fs::{FsCap, FsView};
use crate::caps::kv::{KvCap, KvView};
use crate::caps::log::{LogCap, LogView};
use crate::caps::secrets::{SecretsCap, SecretsView};
use crate::state::CallState;
use crate::{Error, Result};

/// Who provides an import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// Linked into every instance.
    Base,
    /// Linked only when the capability is granted.
    Capability(Capability),
    /// Never linked by Warden (e.g. raw sockets).
    Never,
}

/// Maps an import name (`wasi:http/types@0.2.4`) to its provider.
pub fn capability_of(import: &str) -> Provider {
    let iface = import.split('@').next().unwrap_or(import);
    match iface {
        "wasi:io/error" | "wasi:io/poll" | "wasi:io/streams" => Provider::Base,
        "wasi:clocks/wall-clock" | "wasi:clocks/monotonic-clock" => Provider::Base,
        "wasi:random/random" | "wasi:random/insecure" | "wasi:random/insecure-seed" => {
            Provider::Base
        }
        "warden:tool/types" => Provider::Base,
        i if i.starts_with("wasi:cli/") => Provider::Base,
        "wasi:filesystem/types" | "wasi:filesystem/preopens" => {
            Provider::Capability(Capability::Fs)
        }
        "wasi:http/types" | "wasi:http/outgoing-handler" => Provider::Capability(Capability::Http),
        "warden:tool/kv" => Provider::Capability(Capability::Kv),
        "warden:tool/secrets" => Provider::Capability(Capability::Secrets),
        "warden:tool/log" => Provider::Capability(Capability::Log),
        _ => Provider::Never,
    }
}

/// `HasData` for the wasi:io interfaces, whose host traits live on the table.
struct HasIo;

impl HasData for HasIo {
    type Data<'a> = &'a mut ResourceTable;
}

/// Builds a linker with the base interfaces and exactly `caps`.
pub fn build(engine: &Engine, caps: &BTreeSet<Capability>) -> Result<Linker<CallState>> {
    link(engine, caps).map_err(|e| Error::Engine(format!("linking capabilities: {e}")))
}

fn link(engine: &Engine, caps: &BTreeSet<Capability>) -> wasmtime::Result<Linker<CallState>> {
    let mut l: Linker<CallState> = Linker::new(engine);

    use wasmtime_wasi_io::bindings::wasi::io;
    io::error::add_to_linker::<CallState, HasIo>(&mut l, |s| &mut s.wasi.table)?;
    io::poll::add_to_linker::<CallState, HasIo>(&mut l, |s| &mut s.wasi.table)?;
    io::streams::add_to_linker::<CallState, HasIo>(&mut l, |s| &mut s.wasi.table)?;

    use wasmtime_wasi::cli::WasiCli;
    use wasmtime_wasi::clocks::WasiClocks;
    use wasmtime_wasi::random::WasiRandom;
    clocks::wall_clock::add_to_linker::<CallState, WasiClocks>(&mut l, |s| s.wasi.clocks())?;
    clocks::monotonic_clock::add_to_linker::<CallState, WasiClocks>(&mut l, |s| s.wasi.clocks())?;
    random::random::add_to_linker::<CallState, WasiRandom>(&mut l, |s| s.wasi.ctx.random())?;
    random::insecure::add_to_linker::<CallState, WasiRandom>(&mut l, |s| s.wasi.ctx.random())?;
    random::insecure_seed::add_to_linker::<CallState, WasiRandom>(&mut l, |s| s.wasi.ctx.random())?;
    cli::exit::add_to_linker::<CallState, WasiCli>(&mut l, |s| s.wasi.cli())?;
    cli::environment::add_to_linker::<CallState, WasiCli>(&mut l, |s| s.wasi.cli())?;
    cli::stdin::add_to_linker::<CallState, WasiCli>(&mut l, |s| s.wasi.cli())?;
    cli::stdout::add_to_linker::<CallState, WasiCli>(&mut l, |s| s.wasi.cli())?;
    cli::stderr::add_to_linker::<CallState, WasiCli>(&mut l, |s| s.wasi.cli())?;
    cli::terminal_input::add_to_linker::<CallState, WasiCli>(&mut l, |s| s.wasi.cli())?;
    cli::terminal_output::add_to_linker::<CallState, WasiCli>(&mut l, |s| s.wasi.cli())?;
    cli::terminal_stdin::add_to_linker::<CallState, WasiCli>(&mut l, |s| s.wasi.cli())?;
    cli::terminal_stdout::add_to_linker::<CallState, WasiCli>(&mut l, |s| s.wasi.cli())?;
    cli::terminal_stderr::add_to_linker::<CallState, WasiCli>(&mut l, |s| s.wasi.cli())?;

    for cap in caps {
        match cap {
            Capability::Fs => {
                filesystem::preopens::add_to_linker::<CallState, FsCap>(&mut l, fs_view)?;
                filesystem::types::add_to_linker::<CallState, FsCap>(&mut l, fs_view)?;
            }
            Capability::Http => wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut l)?,
            Capability::Kv => wit::kv::add_to_linker::<CallState, KvCap>(&mut l, |s| KvView {
                state: &s.kv,
                guard: &s.guard,
            })?,
            Capability::Secrets => {
                wit::secrets::add_to_linker::<CallState, SecretsCap>(&mut l, |s| SecretsView {
                    state: &s.secrets,
                    guard: &s.guard,
                })?
            }
            Capability::Log => wit::log::add_to_linker::<CallState, LogCap>(&mut l, |s| LogView {
                state: &mut s.log,
                guard: &s.guard,
            })?,
        }
    }
    Ok(l)
}

fn fs_view(s: &mut CallState) -> FsView<'_> {
    FsView {
        inner: s.wasi.filesystem(),
        guard: &s.guard,
        paths: &mut s.fs_paths,
    }
}
