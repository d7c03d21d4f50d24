#!/usr/bin/env bash
# Installs what siphost's build and tests need on a fresh Debian machine, and
# nothing that is already there: SIPp and Kamailio 5.6 (with its SQLite
# modules) from apt, the pinned Rust toolchain with the wasm32-wasip2,
# wasm32-wasip1 and wasm32-unknown-unknown targets, and, for the fuzz/
# project, a nightly toolchain and cargo-fuzz.
# Run as root (or with sudo available). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    else
        sudo "$@"
    fi
}

apt_missing=()
command -v sipp >/dev/null 2>&1 || apt_missing+=(sip-tester)
command -v kamailio >/dev/null 2>&1 || apt_missing+=(kamailio)
dpkg -s kamailio-sqlite-modules >/dev/null 2>&1 || apt_missing+=(kamailio-sqlite-modules)
# The admin status page is tested in a real headless browser.
command -v chromium >/dev/null 2>&1 || apt_missing+=(chromium)
if ((${#apt_missing[@]})); then
    echo "setup: installing ${apt_missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "${apt_missing[@]}"
else
    echo "setup: sipp, kamailio and chromium already installed"
fi

if ! command -v rustup >/dev/null 2>&1; then
    echo "setup: rustup not found; install it from https://rustup.rs first" >&2
    exit 1
fi
# Without arguments rustup installs the toolchain (with its components and
# targets) named in rust-toolchain.toml; both commands are no-ops when done.
rustup toolchain install
rustup target add wasm32-wasip2 wasm32-wasip1 wasm32-unknown-unknown

# The fuzz smoke run (scripts/fuzz-smoke.sh) needs a nightly toolchain and
# cargo-fuzz; it fails without them, so both are installed here.
if [[ -d fuzz ]]; then
    if rustup toolchain list | grep -q '^nightly'; then
        echo "setup: nightly toolchain already installed"
    else
        echo "setup: installing the nightly toolchain (minimal profile)"
        rustup toolchain install nightly --profile minimal
    fi
    if cargo +nightly fuzz --version >/dev/null 2>&1; then
        echo "setup: cargo-fuzz already installed"
    else
        echo "setup: installing cargo-fuzz"
        cargo +nightly install cargo-fuzz --locked
    fi
fi
