#!/usr/bin/env bash
# Everything CI checks, from a clean clone: setup, formatting, clippy with
# warnings as errors (native crates, and the wasm filters for their own
# target), the wasm filters (the uac filter and the test filters the host's
# tests load), the whole workspace's tests (unit, integration, end-to-end
# against SIPp and Kamailio), then a short fuzz smoke run of every fuzz
# target. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

# Every crate that builds to a wasm32-wasip2 component: the uac filter and the
# test filters (fixtures the host's tests load; some use wasm-only intrinsics,
# so they are left out of the native test run).
wasm_packages=(uac-filter)
exclude_args=()
for manifest in tests/filters/*/Cargo.toml; do
    [[ -f $manifest ]] || continue
    name=$(sed -n 's/^name *= *"\([^"]*\)".*/\1/p' "$manifest" | head -n 1)
    if [[ -z $name ]]; then
        echo "test: no package name in $manifest" >&2
        exit 1
    fi
    wasm_packages+=("$name")
    exclude_args+=(--exclude "$name")
done
# The proxy-wasm example and test modules are core modules for wasm32-wasip1 (their
# proxy_* imports do not link natively).
proxy_wasm_packages=(proxy-wasm-filter proxy-wasm-probe)
proxy_wasm_args=()
for package in "${proxy_wasm_packages[@]}"; do
    exclude_args+=(--exclude "$package")
    proxy_wasm_args+=(-p "$package")
done
package_args=()
for package in "${wasm_packages[@]}"; do
    package_args+=(-p "$package")
done

echo "test: cargo fmt --check (workspace and fuzz/)"
cargo fmt --all --check
cargo fmt --all --check --manifest-path fuzz/Cargo.toml

# The test filters are wasm-only, so the native pass leaves them out; the wasm
# pass checks every component (the library of each wasm package) for its own
# target. The uac filter's tests and benches are native and checked natively.
echo "test: cargo clippy --workspace --all-targets ${exclude_args[*]}"
cargo clippy --workspace --all-targets "${exclude_args[@]}" -- -D warnings
echo "test: cargo clippy --target wasm32-wasip2 --lib ${package_args[*]}"
cargo clippy --target wasm32-wasip2 --lib "${package_args[@]}" -- -D warnings
cargo clippy --target wasm32-wasip1 --lib "${proxy_wasm_args[@]}" -- -D warnings

echo "test: building wasm filters: ${wasm_packages[*]}"
cargo build --profile wasm --target wasm32-wasip2 "${package_args[@]}"
cargo build --profile wasm --target wasm32-wasip1 "${proxy_wasm_args[@]}"
# The example once more without WASI: proxy-wasm modules may target either.
cargo build --profile wasm --target wasm32-unknown-unknown -p proxy-wasm-filter

echo "test: cargo test --workspace ${exclude_args[*]}"
cargo test --workspace "${exclude_args[@]}"

# 30 s shared by the fuzz targets, at least 10 s each (scripts/fuzz-smoke.sh).
echo "test: fuzz smoke"
FUZZ_SECONDS="${FUZZ_SECONDS:-30}" bash scripts/fuzz-smoke.sh
echo "test: all passed"
