#!/usr/bin/env bash
# Instructions per parse+read of the typical INVITE, counted by callgrind for siphost-sip
# and for rsip: the difference between 1,001 and 1 parses, divided by 1,000. Repeatable on
# a busy machine, unlike time.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release -p siphost-sip --example codec_count
bin=${CARGO_TARGET_DIR:-target}/release/examples/codec_count
count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$@" 2>&1 |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
per_parse() {
    echo $((($(count 1001 "$@") - $(count 1 "$@")) / 1000))
}
ours=$(per_parse ours)
rsip=$(per_parse rsip)
echo "instructions per parse+read: siphost-sip $ours, rsip $rsip" \
    "($(python3 -c "print(f'{$rsip / $ours:.2f}')")x)"
