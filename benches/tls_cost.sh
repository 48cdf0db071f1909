#!/usr/bin/env bash
# What TLS costs (BENCHMARKS.md, "TLS"): server CPU per echoed message and
# memory per idle connection, over ws and over wss, for sabai and for
# tokio-tungstenite as the reference; the same rustls (ring provider) and
# the same certificate for both. The server runs on core 0, the load
# generator on core 1; on 2 cores the generator's own TLS work caps the
# rate, so compare CPU per message, not messages per second.
#
#   benches/tls_cost.sh                 # 3 interleaved rounds
#   ROUNDS=1 SECS=3 IDLE=1000 benches/tls_cost.sh
#
# Knobs: ROUNDS (3), SECS (5), SIZE (1024), CELLS ("16x1 256x16": conns x
# in flight), IDLE (5000 connections). Results: $OUT (default
# target/tls-cost/<date-time>/results.jsonl and table.md).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
rounds="${ROUNDS:-3}" secs="${SECS:-5}" size="${SIZE:-1024}" cells="${CELLS:-16x1 256x16}" idle="${IDLE:-5000}"
out="${OUT:-$root/target/tls-cost/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out"
(cd "$root/benches/tls" && cargo build --release --quiet)
bin="$root/benches/tls/target/release"
certs="$out/certs"
mkdir -p "$certs"
"$bin/tls-load" certs "$certs" >/dev/null
if [ "$(ulimit -n)" -lt $((idle + 100)) ]; then
    ulimit -n $((idle + 100)) || { echo "tls_cost.sh: ulimit -n too low for $idle idle connections" >&2; exit 1; }
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
server_pid=""
stop_server() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    server_pid=""
}
trap stop_server EXIT
start_server() { # library transport
    port=$(free_port)
    local tls=()
    [ "$2" = wss ] && tls=(--tls "$certs")
    taskset -c 0 "$bin/tls-echo" "$1" "${tls[@]}" "$port" 2>>"$out/server.log" &
    server_pid=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "tls_cost.sh: $1 $2 did not start" >&2
    exit 1
}
record() { # library transport json
    echo "{\"library\":\"$1\",\"transport\":\"$2\",\"round\":$round,${3#\{}" | tee -a "$out/results.jsonl"
}

for round in $(seq "$rounds"); do
    for library in sabai tungstenite; do
        for transport in ws wss; do
            tls=()
            [ "$transport" = wss ] && tls=(--tls "$certs")
            start_server "$library" "$transport"
            for cell in $cells; do
                line=$(taskset -c 1 "$bin/tls-load" load "$port" "$server_pid" "${tls[@]}" \
                    --conns "${cell%x*}" --inflight "${cell#*x}" --size "$size" --secs "$secs")
                record "$library" "$transport" "$line"
            done
            stop_server
            # Memory on a fresh process: after the handshake, then after one
            # message each way.
            for echo in "" --echo; do
                start_server "$library" "$transport"
                line=$(taskset -c 1 "$bin/tls-load" idle "$port" "$server_pid" "${tls[@]}" --conns "$idle" --size "$size" $echo)
                record "$library" "$transport" "$line"
                stop_server
            done
        done
    done
done

python3 - "$out/results.jsonl" > "$out/table.md" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def med(xs): return statistics.median(xs) if xs else float("nan")
def pick(lib, tr, **kw):
    return [r for r in rows if r["library"] == lib and r["transport"] == tr and all(r.get(k) == v for k, v in kw.items())]
libs = ["sabai", "tungstenite"]
cells = sorted({(r["conns"], r["inflight"]) for r in rows if r["mode"] == "load"})
print("Server CPU per echoed message (µs, median of %d rounds; min-max), and wss over ws:\n" % max(r["round"] for r in rows))
print("| server | cell | ws | wss | wss / ws | msgs/s ws | msgs/s wss |")
print("|---|---|---|---|---|---|---|")
for lib in libs:
    for c, k in cells:
        cost = {}
        rate = {}
        for tr in ("ws", "wss"):
            rs = pick(lib, tr, mode="load", conns=c, inflight=k)
            xs = [r["server_us_per_msg"] for r in rs]
            cost[tr] = (med(xs), min(xs), max(xs))
            rate[tr] = med([r["msgs_per_sec"] for r in rs])
        print("| %s | %d conns x %d | %.2f (%.2f-%.2f) | %.2f (%.2f-%.2f) | %.2f | %.0f | %.0f |" % (
            lib, c, k, *cost["ws"], *cost["wss"], cost["wss"][0] / cost["ws"][0], rate["ws"], rate["wss"]))
print("\nServer memory per idle connection (bytes, median; after the handshake / after one message each way):\n")
print("| server | ws | wss | ws, after a message | wss, after a message |")
print("|---|---|---|---|---|")
for lib in libs:
    v = [med([r["bytes_per_conn"] for r in pick(lib, tr, mode="idle", echo=e)]) for e in (False, True) for tr in ("ws", "wss")]
    print("| %s | %.0f | %.0f | %.0f | %.0f |" % (lib, v[0], v[1], v[2], v[3]))
PY
cat "$out/table.md"
echo "results: $out"
