#!/usr/bin/env bash
# Warden's one test command (CI runs exactly this through .ci/run):
# installs what the tests need, then format check, clippy, and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== setup"
# A one-shot run gains nothing from incremental compilation, and its cache is
# about a third of the build tree (1.7 of 5.3 GB measured on a clean clone);
# the disk this runs on is shared. Set CARGO_INCREMENTAL=1 to keep it.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
free_kb=$(df -Pk . | awk 'NR == 2 { print $4 }')
if [ -n "$free_kb" ] && [ "$free_kb" -lt $((6 * 1024 * 1024)) ]; then
    echo "warning: $((free_kb / 1024)) MB free here; a clean build and test run needs about 4 GB" >&2
fi
# Listing the target in rust-toolchain.toml does not install it; this does (idempotent).
rustup target add wasm32-wasip2
# PostgreSQL 15 server binaries: the storage and several-node tests start a
# throwaway cluster of their own (as the `postgres` user when run as root).
pg_bin="${WARDEN_PG_BIN:-/usr/lib/postgresql/15/bin}"
if [ ! -x "$pg_bin/initdb" ] || [ ! -x "$pg_bin/pg_ctl" ]; then
    echo "PostgreSQL 15 server binaries not found in $pg_bin (install postgresql-15, or set WARDEN_PG_BIN)" >&2
    exit 1
fi
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    echo "running as root: the tests run PostgreSQL as the 'postgres' user, which does not exist" >&2
    exit 1
fi
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
