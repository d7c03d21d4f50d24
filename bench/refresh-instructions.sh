#!/usr/bin/env bash
# Instructions per refresh of the uac filter's registration machine, natively: a due
# record whose kept challenge is answered before the registrar asks, then the registrar's
# 200 (filter/examples/refresh_count.rs), counted by callgrind (bench/instructions.sh).
# The host's side of a refresh (transport, transaction, store) is not in it.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/instructions.sh
cargo build -q --release -p uac-filter --example refresh_count
bin=${CARGO_TARGET_DIR:-target}/release/examples/refresh_count
echo "instructions per refresh (uac filter, native): $(per_run "$bin")"
