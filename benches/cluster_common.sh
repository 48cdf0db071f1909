# Shared by cluster_fanout.sh, recovery.sh and hub_idle_memory.sh: builds
# the hub server and the `cluster` bench (hub/benches/cluster.rs) in the
# bench profile (release, LTO), writes the machine's state beside the
# results, and runs the bench pinned to CPU 1 (it pins the servers and
# redis-server to CPU 0 itself).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
for tool in redis-server taskset; do
    command -v "$tool" >/dev/null || { echo "$0: $tool is needed (Debian: redis-server, util-linux)" >&2; exit 1; }
done
[ "$(nproc)" -ge 2 ] || { echo "$0: needs 2 CPUs (servers on CPU 0, clients on CPU 1)" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)"
if ! build=$(cargo bench -q -p sabai-hub --bench cluster --no-run --manifest-path "$root/Cargo.toml" 2>&1); then
    echo "$build" >&2
    exit 1
fi

# env_file FILE: the machine and its load, before the run.
env_file() {
    local file="$1"; shift
    {
        echo "date: $(date -u +%FT%TZ)"
        echo "host: $(uname -srm), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
        echo "commit: $(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet || echo ' (with uncommitted changes)')"
        echo "rustc: $(rustc -V)"
        echo "redis: $(redis-server --version)"
        echo "loadavg before: $(cat /proc/loadavg)"
        echo "/proc/stat before (user nice system idle iowait irq softirq steal, in ticks): $(grep -E '^cpu ' /proc/stat)"
        echo "command: cluster $*"
    } >"$file"
}

# run_cluster OUT_DIR MODE ARGS...: the bench, its table on stdout and in OUT_DIR/table.md.
run_cluster() {
    local out="$1"; shift
    mkdir -p "$out"
    env_file "$out/env.txt" "$@"
    taskset -c 1 cargo bench -q -p sabai-hub --bench cluster --manifest-path "$root/Cargo.toml" -- "$@" --out "$out" \
        2>"$out/log.txt" | tee "$out/table.md"
    {
        echo "loadavg after: $(cat /proc/loadavg)"
        echo "/proc/stat after: $(grep -E '^cpu ' /proc/stat)"
    } >>"$out/env.txt"
    echo "raw results: $out"
}
