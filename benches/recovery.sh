#!/usr/bin/env bash
# Recovery (BENCHMARKS.md, "Many nodes (Redis engine)"): on one sabai-hub
# node on Redis (and, for reference, one on the memory engine), CLIENTS
# clients subscribe to a room with history, disconnect, MISSED
# publications are made, then all of them reconnect at once with `since`;
# the time until every client has every missed publication, and the Redis
# commands it took (INFO commandstats after minus before).
#
#   benches/recovery.sh                       # 1, 10, 100, 1000 clients; 5 rounds
#   CLIENTS=1000 ROUNDS=1 benches/recovery.sh
#
# Results: $OUT (default target/cluster/<date-time>-recovery).
source "$(dirname "$0")/cluster_common.sh"
out="${OUT:-$root/target/cluster/$(date +%Y%m%d-%H%M%S)-recovery}"
run_cluster "$out" recovery --clients "${CLIENTS:-1,10,100,1000}" --missed "${MISSED:-100}" \
    --rounds "${ROUNDS:-5}" ${SETUPS:+--setups "$SETUPS"}
