#!/usr/bin/env bash
# Instructions per parse+read of the typical INVITE, counted by callgrind: the difference
# between 1,001 and 1 parses, divided by 1,000. Repeatable on a busy machine, unlike time.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release -p siphost-sip --example codec_count
bin=${CARGO_TARGET_DIR:-target}/release/examples/codec_count
count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" 2>&1 |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
one=$(count 1)
many=$(count 1001)
echo "instructions per parse+read: $(((many - one) / 1000))"
