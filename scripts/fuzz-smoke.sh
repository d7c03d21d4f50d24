#!/usr/bin/env bash
# Runs the `codec` cargo-fuzz target for N seconds (first argument, else $FUZZ_SECONDS,
# else 60), seeded with the RFC 4475 torture corpus and the sample INVITE, then the `restore`
# target (uac filter vsf/vst decoders and in-dialog restore) as long; exits non-zero
# if libFuzzer finds a crash. Needs a nightly toolchain and cargo-fuzz; without them it
# says so and exits 0 (set FUZZ_REQUIRED=1 to make that a failure).
set -euo pipefail

seconds="${1:-${FUZZ_SECONDS:-60}}"
root="$(cd "$(dirname "$0")/.." && pwd)"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: nightly toolchain or cargo-fuzz missing; skipped" >&2
    [[ "${FUZZ_REQUIRED:-0}" == 1 ]] && exit 1
    exit 0
fi

corpus="$(mktemp -d)"
trap 'rm -rf "$corpus"' EXIT
# Seeds go to a scratch corpus so the run never writes into the repository.
cp "$root"/host/sip/tests/torture/*.sip "$root"/host/sip/tests/data/*.sip "$corpus"/

cd "$root/fuzz"
echo "fuzz-smoke: codec for ${seconds}s"
cargo +nightly fuzz run codec "$corpus" -- \
    -max_total_time="$seconds" -max_len=4096 -timeout=10 -print_final_stats=1

restore_corpus="$(mktemp -d)"
trap 'rm -rf "$corpus" "$restore_corpus"' EXIT
echo "fuzz-smoke: restore for ${seconds}s"
cargo +nightly fuzz run restore "$restore_corpus" -- \
    -max_total_time="$seconds" -max_len=1024 -timeout=10 -print_final_stats=1
