#!/usr/bin/env bash
# Runs the neutral harness in ../shared/wsbench (or $WSBENCH) with sabai's
# echo server beside the peer libraries' anchors, through a servers file of
# our own: the harness itself is not edited.
#
#   benches/wsbench.sh                 # full matrix, 3 rounds (about 28 min)
#   ROUNDS=1 PAYLOADS=20 benches/wsbench.sh   # any of compare.sh's knobs
#
# The summary lands in $OUT (default target/wsbench/<date-time>/summary.md).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
wsbench="${WSBENCH:-$root/../shared/wsbench}"
[ -x "$wsbench/compare.sh" ] || { echo "wsbench.sh: no harness at $wsbench (set WSBENCH)" >&2; exit 1; }

cargo build --release --example echo_server --manifest-path "$root/Cargo.toml"
export OUT="${OUT:-$root/target/wsbench/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
servers="$OUT/servers.txt"
cat >"$servers" <<SERVERS
sabai               $root/target/release/examples/echo_server
tokio-tungstenite   target/release/echo-tungstenite
fastwebsockets      target/release/echo-fastwebsockets
tokio-websockets    target/release/echo-tokio-websockets
SERVERS
"$wsbench/compare.sh" "$servers"
echo "summary: $OUT/summary.md"
