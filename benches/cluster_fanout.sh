#!/usr/bin/env bash
# Cross-node fan-out (BENCHMARKS.md, "Many nodes (Redis engine)"): one
# publisher (POST /publish on node A), SUBSCRIBERS WebSocket subscribers of
# one room, against three setups side by side, interleaved over ROUNDS:
#   memory-1  one sabai-hub node on the memory engine
#   redis-1   one node on the Redis engine
#   redis-2   two nodes on one redis-server, subscribers split between them
# Server CPU per delivery (utime+stime of the nodes and redis-server from
# /proc) and delivery latency (send time carried in each message): first
# IDLE seconds with nothing published (the servers' background cost), then
# PACED publications at RATE per second, then BURSTS bursts of 100 from
# one publisher and from 10 (PUBLISHERS).
#
#   benches/cluster_fanout.sh                                # about 25 minutes
#   SUBSCRIBERS=1000 ROUNDS=1 PACED=50 benches/cluster_fanout.sh   # quick
#
# Results: $OUT (default target/cluster/<date-time>-fanout): table.md,
# fanout.jsonl (one line per setup, phase and round), env.txt, log.txt.
source "$(dirname "$0")/cluster_common.sh"
out="${OUT:-$root/target/cluster/$(date +%Y%m%d-%H%M%S)-fanout}"
run_cluster "$out" fanout --subscribers "${SUBSCRIBERS:-10000}" --rate "${RATE:-1}" --paced "${PACED:-100}" \
    --warmup "${WARMUP:-10}" --idle "${IDLE:-20}" \
    --bursts "${BURSTS:-3}" --burst-publishers "${PUBLISHERS:-1,10}" --rounds "${ROUNDS:-3}" \
    ${SETUPS:+--setups "$SETUPS"} ${SERVER_FLAGS:+--server-flags "$SERVER_FLAGS"}
