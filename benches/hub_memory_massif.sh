#!/usr/bin/env bash
# Where a hub connection's memory goes: heap by allocation site, per idle
# connection, from valgrind's massif (BENCHMARKS.md, "Many nodes (Redis
# engine)"). For each server of benches/hub_idle_memory.sh, built with
# debug info: a heap snapshot before and after N connections subscribed
# to ROOMS rooms, subtracted site by site (benches/massif_sites.py).
#
#   benches/hub_memory_massif.sh [N] [ROOMS] [SETUPS]   # default: 2000 3 "hub-memory hub-redis server-memory server-redis"
#   DEFLATE=1 benches/hub_memory_massif.sh 2000 3 server-memory   # deflate agreed, one compressed message each way
#
# Slow (the servers run under valgrind): a few minutes. Snapshots and
# summaries go to $OUT (default target/cluster/<date-time>-massif).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
n="${1:-2000}"
rooms="${2:-3}"
setups="${3:-hub-memory hub-redis server-memory server-redis}"
out="${OUT:-$root/target/cluster/$(date +%Y%m%d-%H%M%S)-massif}"
mkdir -p "$out"
for tool in valgrind vgdb redis-server taskset python3; do
    command -v "$tool" >/dev/null || { echo "$0: $tool is needed" >&2; exit 1; }
done
ulimit -n "$(ulimit -Hn)"

# The bench and the hub server with debug info, in a target dir of their own.
target="$root/target/massif"
CARGO_PROFILE_RELEASE_DEBUG=true CARGO_PROFILE_BENCH_DEBUG=true CARGO_TARGET_DIR="$target" \
    cargo bench -q -p sabai-hub --bench cluster --no-run --manifest-path "$root/Cargo.toml" 2>/dev/null
bench=$(ls -t "$target"/release/deps/cluster-* | grep -v '\.d$' | head -n 1)
hub="$target/release/sabai-hub"

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_for FILE PATTERN SECONDS
wait_for() {
    for _ in $(seq "$(($3 * 10))"); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    echo "$0: no '$2' in $1 within $3 s" >&2; cat "$1" >&2; exit 1
}

for setup in $setups; do
    log="$out/$setup"
    redis_url=
    if [[ $setup == *redis ]]; then
        port=$(free_port)
        taskset -c 0 redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no --daemonize no \
            --dir "$out" --logfile "$log.redis.log" &
        redis_pid=$!; pids+=("$redis_pid")
        for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
        redis_url="redis://127.0.0.1:$port/"
    fi
    if [[ $setup == server* ]]; then
        server=(--addr 127.0.0.1:0 --no-simulator --node-id a --max-connections "$((n + 100))")
        [ -n "$redis_url" ] && server+=(--redis "$redis_url")
        taskset -c 0 valgrind --tool=massif --depth=40 --threshold=0.01 --massif-out-file="$log.massif.out" \
            "$hub" "${server[@]}" >"$log.server.txt" 2>"$log.valgrind.txt" &
        url_of() { sed -n 's|.*listening on http://\([^/]*\)/.*|ws://\1/ws|p' "$log.server.txt"; }
        protocol=server
    else
        taskset -c 0 valgrind --tool=massif --depth=40 --threshold=0.01 --massif-out-file="$log.massif.out" \
            "$bench" child-plain-hub "$((n + 100))" $redis_url >"$log.server.txt" 2>"$log.valgrind.txt" &
        url_of() { sed -n 's|^listening on \(.*\)$|ws://\1/|p' "$log.server.txt"; }
        protocol=plain
    fi
    server_pid=$!; pids+=("$server_pid")
    wait_for "$log.server.txt" "listening on" 60
    sleep 2
    vgdb --pid="$server_pid" detailed_snapshot "$log.before.txt" >/dev/null
    taskset -c 1 "$bench" hold "$(url_of)" "$n" "$rooms" "$protocol" 600 ${DEFLATE:+deflate} >"$log.hold.txt" 2>&1 &
    hold_pid=$!; pids+=("$hold_pid")
    wait_for "$log.hold.txt" READY 300
    sleep 3
    vgdb --pid="$server_pid" detailed_snapshot "$log.after.txt" >/dev/null
    kill "$hold_pid" "$server_pid"; wait "$hold_pid" "$server_pid" 2>/dev/null || true
    if [ -n "$redis_url" ]; then kill "$redis_pid"; wait "$redis_pid" 2>/dev/null || true; fi
    echo "## $setup: $n connections, $rooms rooms each"
    python3 "$root/benches/massif_sites.py" "$log.after.txt" "$n" "$log.before.txt" | tee "$log.sites.txt"
    echo
done
echo "snapshots and summaries: $out"
