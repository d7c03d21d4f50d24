#!/usr/bin/env bash
# Instructions per parse+read of the typical INVITE, counted by callgrind for siphost-sip
# and for rsip (bench/instructions.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/instructions.sh
cargo build -q --release -p siphost-sip --example codec_count
bin=${CARGO_TARGET_DIR:-target}/release/examples/codec_count
ours=$(per_run "$bin" ours)
rsip=$(per_run "$bin" rsip)
echo "instructions per parse+read: siphost-sip $ours, rsip $rsip" \
    "($(python3 -c "print(f'{$rsip / $ours:.2f}')")x)"
