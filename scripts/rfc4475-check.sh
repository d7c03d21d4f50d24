#!/usr/bin/env bash
# Checks host/sip/tests/torture/*.sip byte for byte against the archive in RFC 4475
# Appendix A. Takes the RFC's plain text (rfc4475.txt) as its argument, since this machine
# has no route to the RFC Editor; exits non-zero on any difference.
set -euo pipefail

rfc="${1:?usage: scripts/rfc4475-check.sh path/to/rfc4475.txt}"
root="$(cd "$(dirname "$0")/.." && pwd)"
corpus="$root/host/sip/tests/torture"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The RFC's own rule (its Figure 58): between the markers, keep the lines that are one
# token. Page headers and footers have spaces and form feeds are whitespace, so both drop
# out. Only whole marker lines count: Figure 58 itself quotes the markers inside a regex.
awk '/^ *-- BEGIN MESSAGE ARCHIVE -- *$/ { inside = 1; next }
     /^ *-- END MESSAGE ARCHIVE -- *$/   { inside = 0 }
     inside' "$rfc" |
    grep -E '^[[:space:]]*[^[:space:]]+[[:space:]]*$' | tr -d ' \t' >"$work/archive.b64"
base64 -d "$work/archive.b64" >"$work/torture.tgz"
mkdir "$work/out"
tar xzf "$work/torture.tgz" -C "$work/out"
echo "archive sha256 $(sha256sum <"$work/torture.tgz" | cut -d' ' -f1)"

status=0
for sip in "$corpus"/*.sip; do
    name="$(basename "$sip" .sip)"
    if ! cmp -s "$sip" "$work/out/$name.dat"; then
        echo "differs from the RFC archive: $name" >&2
        status=1
    fi
done
# test.dat is in the archive but no section of the RFC uses it, so the corpus omits it.
for dat in "$work/out"/*.dat; do
    name="$(basename "$dat" .dat)"
    if [[ "$name" != test && ! -e "$corpus/$name.sip" ]]; then
        echo "missing from the corpus: $name" >&2
        status=1
    fi
done
[[ $status == 0 ]] && echo "all $(ls "$corpus"/*.sip | wc -l) messages match RFC 4475"
exit $status
