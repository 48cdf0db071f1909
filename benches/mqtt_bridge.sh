#!/usr/bin/env bash
# The MQTT bridge benchmark (BENCHMARKS.md, "MQTT bridge"): a real
# mosquitto, the sabai-hub binary (bench build), a rumqttc publisher and
# 1,000 WebSocket subscribers, all on this machine. Waits for a quiet
# machine (load average under 1.5, at most 10 min), then runs the rounds
# and keeps the output in benches/results/DATE-mqtt-bridge.txt.
#
#   benches/mqtt_bridge.sh                      # 1000 subscribers, 250..1500 readings/s, 3 rounds
#   benches/mqtt_bridge.sh --rates 2000,3000 --rounds 1
set -euo pipefail
cd "$(dirname "$0")/.."
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || { echo "needs mosquitto (apt-get install mosquitto)"; exit 1; }
cargo bench -p sabai-hub --bench mqtt --no-run
for _ in $(seq 120); do
  load=$(cut -d' ' -f1 /proc/loadavg)
  awk "BEGIN{exit !($load < 1.5)}" && break
  echo "load average $load: waiting for a quieter machine"; sleep 5
done
out="benches/results/$(date -u +%F)-mqtt-bridge.txt"
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--subscribers 1000 --rates 250,500,1000,1500 --seconds 5 --rounds 3)
{ echo "# $(date -u +%FT%TZ) $(nproc) cores; args: ${args[*]}"; cargo bench -q -p sabai-hub --bench mqtt -- "${args[@]}"; } | tee -a "$out"
