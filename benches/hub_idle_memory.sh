#!/usr/bin/env bash
# Memory per idle connection of the hub (BENCHMARKS.md, "Many nodes (Redis
# engine)"): N connections opened, each subscribed to ROOMS rooms, then
# idle; server RSS before and after, over N. Four servers side by side:
#   hub-memory     a plain sabai::hub server (hub/benches/cluster.rs,
#                  child-plain-hub): the hub core with the memory engine
#   hub-redis      the same on the Redis engine
#   server-memory  sabai-hub (hyper, the JSON protocol) on the memory engine
#   server-redis   sabai-hub --redis
# and, for reference, the library's own figure (benches/idle_memory.sh:
# the echo server, no hub) when the wsbench load generator is built.
#
#   benches/hub_idle_memory.sh                # 10,000 connections, 0 and 3 rooms, 3 rounds
#   CONNECTIONS=1000 ROUNDS=1 benches/hub_idle_memory.sh
#   DEFLATE=1 SETUPS=server-memory benches/hub_idle_memory.sh   # permessage-deflate agreed,
#                                             # one compressed message each way (server setups only)
#
# Results: $OUT (default target/cluster/<date-time>-memory).
source "$(dirname "$0")/cluster_common.sh"
out="${OUT:-$root/target/cluster/$(date +%Y%m%d-%H%M%S)-memory}"
run_cluster "$out" memory --connections "${CONNECTIONS:-10000}" --rooms "${ROOMS:-0,3}" --rounds "${ROUNDS:-3}" \
    ${SETUPS:+--setups "$SETUPS"} ${DEFLATE:+--deflate}
# The harness's load generator: built in its tree, or into ours (see idle_memory.sh).
for candidate in "${LOADGEN:-}" "$root/../shared/wsbench/target/release/loadgen" "$root/target/wsbench/release/loadgen"; do
    [ -n "$candidate" ] && [ -x "$candidate" ] && { export LOADGEN="$candidate"; break; }
done
if [ -n "${LOADGEN:-}" ]; then
    echo
    echo "the library's figure (benches/idle_memory.sh ${CONNECTIONS:-10000}), ${ROUNDS:-3} runs:"
    for _ in $(seq "${ROUNDS:-3}"); do
        "$root/benches/idle_memory.sh" "${CONNECTIONS:-10000}" | tail -n 1
    done | tee -a "$out/table.md"
else
    echo "(no wsbench load generator: the library's figure was not measured; see benches/idle_memory.sh)"
fi
