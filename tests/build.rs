//! Builds the guest tools and fixtures once per build of the test helpers, not
//! once per test: `cargo build --release` of the `tools/` workspace for
//! `wasm32-wasip2` into `target/guests`. Tests find them through
//! `WARDEN_GUESTS_DIR`.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf();
    let tools = root.join("tools");
    for watched in ["tools", "guest-sdk", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&tools)
        .args(["build", "--release", "--quiet"]);
    // The outer build's settings (target dir, rustflags, wrappers, profile
    // overrides) must not leak into the guest build.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if (k.starts_with("CARGO_") && k != "CARGO_HOME")
            || k.starts_with("RUSTC")
            || k == "RUSTFLAGS"
            || k == "RUSTDOCFLAGS"
        {
            cmd.env_remove(&k);
        }
    }
    let out = cmd
        .output()
        .expect("cannot run cargo to build the guest tools");
    if !out.status.success() {
        panic!(
            "building the guest tools failed (run `cargo build --release` in tools/ to see why):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let guests = root.join("target/guests/wasm32-wasip2/release");
    println!("cargo:rustc-env=WARDEN_GUESTS_DIR={}", guests.display());
    println!("cargo:rustc-env=WARDEN_ROOT={}", root.display());
}
