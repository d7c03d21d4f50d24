#!/usr/bin/env bash
# The main job: build the uac filter and the host, then run the host with the
# filter (examples/uac.toml unless a config is given). Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
# The toolchain comes from rust-toolchain.toml; the filter needs its wasm target.
rustup target add wasm32-wasip2 >/dev/null
cargo build --profile wasm --target wasm32-wasip2 -p uac-filter
cargo build --release -p siphost
exec target/release/siphost run -c "${1:-examples/uac.toml}"
