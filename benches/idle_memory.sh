#!/usr/bin/env bash
# Server memory against connection count: for each N, a fresh sabai echo
# server (pinned to CPU 0), N idle connections from the harness's load
# generator, RSS before / with N idle / after one echo on each.
#
#   benches/idle_memory.sh [N...]      (default: 10 100 1000 10000)
#
# LOADGEN: the harness's load generator, if not built in its own tree
# (for example: CARGO_TARGET_DIR=target/wsbench cargo build --release
# --manifest-path ../shared/wsbench/Cargo.toml -p loadgen, then
# LOADGEN=target/wsbench/release/loadgen).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
wsbench="${WSBENCH:-$root/../shared/wsbench}"
loadgen="${LOADGEN:-$wsbench/target/release/loadgen}"
[ -x "$loadgen" ] || { echo "idle_memory.sh: build the harness first (cd $wsbench && cargo build --release)" >&2; exit 1; }
cargo build --release --example echo_server --manifest-path "$root/Cargo.toml" 2>/dev/null
ulimit -n "$(ulimit -Hn)"
port="${PORT:-9331}"
printf '| connections | RSS before, KiB | RSS idle, KiB | bytes/conn idle | bytes/conn after one echo |\n|---:|---:|---:|---:|---:|\n'
for n in "${@:-10 100 1000 10000}"; do
    for count in $n; do
        taskset -c 0 "${CARGO_TARGET_DIR:-$root/target}/release/examples/echo_server" "$port" >/dev/null 2>&1 &
        pid=$!
        for _ in $(seq 50); do ss -Hltn "sport = :$port" | grep -q . && break; sleep 0.1; done
        line=$(taskset -c 1 "$loadgen" --port "$port" --idle "$count" --hold 2 --server-pid "$pid")
        kill "$pid"; wait "$pid" 2>/dev/null || true
        python3 -c '
import json, sys
d = json.loads(sys.argv[1])
print("| %d | %d | %d | %d | %d |" % (d["conns"], d["rss_base_kib"], d["rss_idle_kib"], d["idle_bytes_per_conn"], d["used_bytes_per_conn"]))
' "$line"
    done
done
