#!/usr/bin/env bash
# End-to-end latency from `mosquitto_pub` to a page in headless Chromium
# (BENCHMARKS.md, "MQTT bridge"): starts a real mosquitto and the hub
# server (release build, --no-simulator --mqtt) on free 127.0.0.1 ports,
# then benches/mqtt_browser.mjs publishes N readings at fixed rates with
# one `mosquitto_pub -l` per step and reports p50/p99/max and readings
# received against sent. Waits for a quiet machine (load average under
# 1.5, at most 10 min); keeps the output in
# benches/results/DATE-mqtt-browser.txt. Everything it started is ended by
# its PID when it exits.
#
#   benches/mqtt_browser.sh                                  # 2000 readings at 200/s and 1000/s, 3 rounds
#   benches/mqtt_browser.sh --readings 500 --rates 100 --rounds 1
set -euo pipefail
cd "$(dirname "$0")/.."
mosquitto=/usr/sbin/mosquitto
[ -x $mosquitto ] || mosquitto=$(command -v mosquitto) || { echo "needs mosquitto (apt-get install mosquitto)"; exit 1; }
command -v mosquitto_pub >/dev/null || { echo "needs mosquitto_pub (apt-get install mosquitto-clients)"; exit 1; }
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || { echo "needs chromium (apt-get install chromium)"; exit 1; }
command -v node >/dev/null || { echo "needs node and npm"; exit 1; }

cargo build --release -p sabai-hub
# playwright-core (the browser tests' pinned version) drives the system's
# Chromium; it downloads no browser.
[ -d tests/browser/node_modules/playwright-core ] ||
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)

for _ in $(seq 120); do
  load=$(cut -d' ' -f1 /proc/loadavg)
  awk "BEGIN{exit !($load < 1.5)}" && break
  echo "load average $load: waiting for a quieter machine"; sleep 5
done

dir=$(mktemp -d)
chmod 755 "$dir" # mosquitto started as root reads its config as user mosquitto
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

port=$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })')
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$port" >"$dir/mosquitto.conf"
$mosquitto -c "$dir/mosquitto.conf" 2>"$dir/mosquitto.log" &
pids+=($!)
for i in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break
  [ "$i" -lt 100 ] || { echo "mosquitto did not listen on $port within 10 s"; cat "$dir/mosquitto.log"; exit 1; }
  sleep 0.1
done

target/release/sabai-hub --addr 127.0.0.1:0 --no-simulator --mqtt "mqtt://127.0.0.1:$port" \
  >"$dir/hub.out" 2>"$dir/hub.log" &
pids+=($!)
hub=""
for _ in $(seq 100); do
  hub=$(grep -o 'listening on http://127\.0\.0\.1:[0-9]*' "$dir/hub.out" | head -1 | sed 's/listening on //') || true
  [ -n "$hub" ] && break
  sleep 0.1
done
[ -n "$hub" ] || { echo "the hub server did not start within 10 s"; cat "$dir/hub.log"; exit 1; }

out="benches/results/$(date -u +%F)-mqtt-browser.txt"
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--readings 2000 --rates 200,1000 --rounds 3)
{
  echo "# $(date -u +%FT%TZ) $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); $("$mosquitto" -h | head -1); $(/usr/bin/chromium --version 2>/dev/null || true); args: ${args[*]}"
  timeout 900 node benches/mqtt_browser.mjs --hub "$hub" --mqtt-port "$port" "${args[@]}"
  echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee -a "$out"
