#!/usr/bin/env bash
# System calls per echoed message for one server, one load case at a time:
# the server pinned to CPU 0, the harness's load generator to CPU 1, and
# `perf stat` counting the server's reads, writes and epoll waits.
#
#   benches/syscalls.sh SERVER_BINARY PORT "PAYLOAD CONNS INFLIGHT"...
#   benches/syscalls.sh target/release/examples/echo_server 9423 "262144 16 1" "1024 16 16"
#
# Needs perf (Debian: linux-perf) with syscall tracepoints, and the harness's
# load generator built: $LOADGEN, else $WSBENCH/target/release/loadgen
# (WSBENCH defaults to ../shared/wsbench).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
loadgen="${LOADGEN:-${WSBENCH:-$root/../shared/wsbench}/target/release/loadgen}"
[ -x "$loadgen" ] || { echo "syscalls.sh: no load generator at $loadgen (set LOADGEN)" >&2; exit 1; }
bin=$1 port=$2
shift 2
taskset -c 0 "$bin" "$port" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
sleep 0.5
events=syscalls:sys_enter_recvfrom,syscalls:sys_enter_read,syscalls:sys_enter_writev,syscalls:sys_enter_sendto,syscalls:sys_enter_epoll_wait,page-faults
stats=$(mktemp)
for case in "$@"; do
    read -r payload conns inflight <<<"$case"
    perf stat -x, -o "$stats" -e "$events" -p "$server" -- sleep 3.5 &
    perf_pid=$!
    line=$(taskset -c 1 "$loadgen" --port "$port" --payload "$payload" --conns "$conns" \
        --inflight "$inflight" --secs 3 --warmup 0 --binary --server-pid "$server")
    wait "$perf_pid"
    python3 - "$case" "$line" "$stats" <<'PY'
import json, sys
case, line, stats = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
msgs = line["msgs"]
counts = {}
for row in open(stats):
    f = row.strip().split(",")
    if len(f) > 2 and f[0].isdigit():
        counts[f[2].replace("syscalls:sys_enter_", "")] = int(f[0])
per = "  ".join(f"{k} {v / msgs:.3f}" for k, v in counts.items())
print(f"{case}: {line['msgs_per_sec']} msgs/s; per message: {per}")
PY
done
rm -f "$stats"
