#!/usr/bin/env bash
# Codec time against rsip on the same machine: batches of ours and rsip's parse of the
# typical INVITE alternate (A B B A ...), pinned to one core when taskset exists; prints a
# markdown table with the median batch of each first (the headline figure), the fastest
# batch second, and their ratios. ROUNDS sets the batch pairs.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release -p siphost-sip --example codec_count
bin=${CARGO_TARGET_DIR:-target}/release/examples/codec_count
pin=()
command -v taskset >/dev/null && pin=(taskset -c 1)
"${pin[@]}" "$bin" ab "${ROUNDS:-300}"
