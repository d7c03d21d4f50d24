#!/usr/bin/env bash
# Runs every cargo-fuzz target that `cargo +nightly fuzz list` reports, sharing N seconds
# between them (first argument, else $FUZZ_SECONDS, else 60; at least 10 s per target).
# Target `codec` is seeded with the RFC 4475 torture corpus and the sample messages; any
# other target with fuzz/seeds/<target>/. Exits non-zero if a tool is missing (run
# scripts/setup.sh), if there is no target, or if libFuzzer finds a crash in any target.
set -euo pipefail

seconds="${1:-${FUZZ_SECONDS:-60}}"
min_per_target=10
root="$(cd "$(dirname "$0")/.." && pwd)"

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz-smoke: no nightly toolchain (scripts/setup.sh installs it)" >&2
    exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: cargo-fuzz missing (scripts/setup.sh installs it)" >&2
    exit 1
fi

cd "$root/fuzz"
mapfile -t targets < <(cargo +nightly fuzz list)
if ((${#targets[@]} == 0)); then
    echo "fuzz-smoke: cargo fuzz list reports no target" >&2
    exit 1
fi
per_target=$((seconds / ${#targets[@]}))
((per_target < min_per_target)) && per_target=$min_per_target

# One build for all targets, so the clock of each run is spent fuzzing.
echo "fuzz-smoke: building ${targets[*]}"
cargo +nightly fuzz build

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=()
for target in "${targets[@]}"; do
    # Seeds go to a scratch corpus so the run never writes into the repository.
    corpus="$scratch/$target"
    mkdir "$corpus"
    if [[ $target == codec ]]; then
        cp "$root"/host/sip/tests/torture/*.sip "$root"/host/sip/tests/data/*.sip "$corpus"/
    elif [[ -d $root/fuzz/seeds/$target ]]; then
        cp -r "$root/fuzz/seeds/$target"/. "$corpus"/
    fi
    echo "fuzz-smoke: $target for ${per_target}s ($(find "$corpus" -type f | wc -l) seeds)"
    if ! cargo +nightly fuzz run "$target" "$corpus" -- \
        -max_total_time="$per_target" -max_len=4096 -timeout=10 -print_final_stats=1; then
        failed+=("$target")
    fi
done

if ((${#failed[@]})); then
    echo "fuzz-smoke: failed: ${failed[*]} (crash inputs under fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz-smoke: ${#targets[@]} target(s) ran ${per_target}s each without a finding"
