#!/usr/bin/env bash
# Warden's one test command (CI runs exactly this through .ci/run):
# installs what the tests need, then format check, clippy, and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== setup"
# Listing the target in rust-toolchain.toml does not install it; this does (idempotent).
rustup target add wasm32-wasip2
# The official Python MCP client for the MCP tests, in a venv inside the build
# tree (created once; the tests create it themselves when run without this).
if [ ! -x target/py-venv/bin/python ]; then
    rm -rf target/py-venv.setup
    python3 -m venv target/py-venv.setup
    target/py-venv.setup/bin/pip install --quiet --disable-pip-version-check mcp==2.3.0
    mkdir -p target && mv target/py-venv.setup target/py-venv
fi

echo "== format"
cargo fmt --all -- --check
(cd tools && cargo fmt --all -- --check)

echo "== clippy"
cargo clippy --workspace --all-targets -- -D warnings
(cd tools && cargo clippy --release --workspace -- -D warnings)

echo "== doctests"
cargo test --workspace --doc

echo "== tests"
# Guests are built once by tests/build.rs; the compile cache is shared by all
# test processes in target/warden-test-cache. This runs last so its summary
# closes the output.
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
else
    cargo test --workspace --no-fail-fast
fi
