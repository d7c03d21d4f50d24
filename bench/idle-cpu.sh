#!/usr/bin/env bash
# Idle cost: siphost with TENANTS tenants loaded (each with the uac filter and the
# no-op filter, on its own UDP socket) and no traffic at all; prints the CPU ticks
# (utime + stime, /proc/<pid>/stat) it used over SECONDS_IDLE seconds once start-up
# (compiling and instantiating the filters) is over, and that as a share of one core.
# Target (issue 14): <= 0.1% of a core over 60 s.
#   TENANTS=20 SECONDS_IDLE=60 bench/idle-cpu.sh
# SIPHOST_BIN picks a prebuilt binary; else a release build is made.
set -euo pipefail
cd "$(dirname "$0")/.."
tenants=${TENANTS:-20}
idle=${SECONDS_IDLE:-60}
target=${CARGO_TARGET_DIR:-target}
if [[ -z "${SIPHOST_BIN:-}" ]]; then
    cargo build -q --release -p siphost --bin siphost
    SIPHOST_BIN=$target/release/siphost
fi
wasm=$target/wasm32-wasip2/wasm
if [[ ! -f $wasm/uac_filter.wasm || ! -f $wasm/filter_noop.wasm ]]; then
    cargo build -q --profile wasm --target wasm32-wasip2 -p uac-filter -p filter-noop
fi
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
config=$work/idle.toml
base=${PORT_BASE:-27100}
{
    printf '[log]\nlevel = "warn"\n\n[proxy]\ndefault_route = "sip:127.0.0.1:%d"\n\n' $((base - 1))
    for ((i = 0; i < tenants; i++)); do
        printf '[[listen]]\ntransport = "udp"\naddress = "127.0.0.1:%d"\n\n' $((base + i))
    done
    for ((i = 0; i < tenants; i++)); do
        printf '[[tenant]]\nname = "t%d"\nlisten = ["udp:127.0.0.1:%d"]\n' "$i" $((base + i))
        printf '[[tenant.filter]]\npath = "%s"\n' "$(realpath "$wasm/uac_filter.wasm")"
        printf '[[tenant.filter]]\npath = "%s"\n\n' "$(realpath "$wasm/filter_noop.wasm")"
    done
} >"$config"
SIPHOST_CACHE_DIR=$work/cache "$SIPHOST_BIN" run --config "$config" >"$work/log" 2>&1 &
pid=$!
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
# Start-up is over when two seconds in a row cost no CPU (at most 300 s).
last=-1
for ((waited = 0; waited < 300; waited += 2)); do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "siphost did not start:" >&2
        cat "$work/log" >&2
        exit 1
    fi
    now=$(ticks)
    [[ $now == "$last" ]] && break
    last=$now
    sleep 2
done
hz=$(getconf CLK_TCK)
before=$(ticks)
sleep "$idle"
after=$(ticks)
used=$((after - before))
share=$(awk -v t="$used" -v hz="$hz" -v s="$idle" 'BEGIN { printf "%.3f", 100 * t / hz / s }')
threads=$(ls "/proc/$pid/task" | wc -l)
echo "siphost idle, $tenants tenants x 2 filters, $threads threads: $used ticks in ${idle} s (${hz} Hz) = ${share}% of a core"
