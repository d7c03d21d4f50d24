#!/usr/bin/env bash
# Codec speed against rsip on the same machine in the same run: runs the criterion codec
# bench ROUNDS times (siphost parse+read, then rsip parse, back to back: A B A B ...) and
# prints each round's medians, then the median ratio and our median parses per second.
# Noisy machines move both numbers together; the ratio is what to compare.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-5}
target=${CARGO_TARGET_DIR:-target}
cargo bench -q -p siphost-sip --bench codec --no-run
median_ns() {
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["median"]["point_estimate"])' \
        "$target/criterion/codec/$1/new/estimates.json"
}
results=()
for round in $(seq "$rounds"); do
    ${PIN:-} cargo bench -q -p siphost-sip --bench codec -- --warm-up-time 1 --measurement-time 2 \
        'parse\+read|rsip parse' >/dev/null 2>&1
    ours=$(median_ns 'parse+read')
    rsip=$(median_ns 'rsip parse')
    results+=("$ours $rsip")
    printf 'round %d: siphost %.0f ns, rsip %.0f ns, ratio %.2f\n' "$round" "$ours" "$rsip" \
        "$(python3 -c "print($rsip / $ours)")"
done
printf '%s\n' "${results[@]}" | python3 -c '
import statistics, sys
rows = [tuple(map(float, line.split())) for line in sys.stdin if line.strip()]
ratio = statistics.median(r / o for o, r in rows)
ours = statistics.median(o for o, _ in rows)
print(f"median: siphost {ours:.0f} ns ({1e9 / ours:,.0f} parses/s), rsip {ratio:.2f}x slower")
'
