# Sourced by the *-instructions.sh benches: `per_run BIN ARGS...` prints the instructions
# one run of BIN's loop costs, counted by callgrind as the difference between 1,001 and 1
# runs (BIN's first argument), divided by 1,000. Repeatable on a busy machine, unlike time.
count() {
    local bin=$1 runs=$2
    shift 2
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$runs" "$@" 2>&1 |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
per_run() {
    local bin=$1
    shift
    echo $((($(count "$bin" 1001 "$@") - $(count "$bin" 1 "$@")) / 1000))
}
