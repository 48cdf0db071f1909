#!/usr/bin/env bash
# permessage-deflate compression beside Node's ws (BENCHMARKS.md, "Beside
# Node's ws"): the sender's compression path of each, in-process, no
# sockets, on the same JSON telemetry (benches/deflate_vs_node.rs writes
# the workload, both sides read it), with and without context takeover.
# Installs ws (the exact version in benches/deflate_node/package-lock.json,
# from the npm registry), builds sabai's side, then runs ROUNDS rounds,
# sabai's process and Node's in turn (the order alternating), and prints
# one markdown table. Each round takes about 15 s (MS per cell and
# implementation, 12 cells); 5 rounds, about 1.5 minutes.
#
#   benches/deflate_vs_node.sh                  # 5 rounds, level 6 (both sides' default)
#   ROUNDS=7 MS=2000 benches/deflate_vs_node.sh
#   LEVEL=1 benches/deflate_vs_node.sh          # both sides at level 1
#
# Results in target/deflate_vs_node/DATE-TIME/ (CARGO_TARGET_DIR honoured):
# results.jsonl (one line per cell per round), meta.txt, table.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
MS=${MS:-1000}
LEVEL=${LEVEL:-6}
command -v node >/dev/null || { echo "needs node and npm"; exit 1; }

(cd benches/deflate_node && npm ci --no-audit --no-fund --loglevel=error)

exe=$(cargo bench --bench deflate_vs_node --no-run --message-format=json-render-diagnostics |
  node -e '
    let last = "";
    require("readline").createInterface({ input: process.stdin }).on("line", (l) => {
      const m = JSON.parse(l);
      if (m.reason === "compiler-artifact" && m.target.name === "deflate_vs_node" && m.executable) last = m.executable;
    }).on("close", () => { if (!last) process.exit(1); console.log(last); });')

target=$(realpath -m "${CARGO_TARGET_DIR:-target}")
out=$target/deflate_vs_node/$(date -u +%Y-%m-%d-%H%M%S)
mkdir -p "$out"
"$exe" write "$out/workload"
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . || echo ' (with local changes)')"
  echo "rounds: $ROUNDS, $MS ms per cell, level $LEVEL"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
  echo "rustc: $(rustc --version)"
  echo "node: $(node --version), zlib $(node -p process.versions.zlib), ws $(node -p "require('./benches/deflate_node/node_modules/ws/package.json').version")"
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$out/meta.txt"

# Each process is bounded: a round that hangs ends the run.
node_round() { (cd benches/deflate_node && timeout 300 node bench.js round "$out/workload" "$LEVEL" "$MS"); }
sabai_round() { timeout 300 "$exe" round "$out/workload" "$LEVEL" "$MS"; }

for r in $(seq "$ROUNDS"); do
  echo "round $r of $ROUNDS (load average $(cut -d' ' -f1 /proc/loadavg))" >&2
  if [ $((r % 2)) = 1 ]; then
    sabai_round >> "$out/results.jsonl"
    node_round >> "$out/results.jsonl"
  else
    node_round >> "$out/results.jsonl"
    sabai_round >> "$out/results.jsonl"
  fi
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/meta.txt"

(cd benches/deflate_node && node bench.js table "$out/results.jsonl") > "$out/table.md"
cat "$out/meta.txt"
echo
cat "$out/table.md"
echo
echo "results in $out"
