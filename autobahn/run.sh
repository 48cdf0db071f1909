#!/usr/bin/env bash
# Runs the Autobahn|Testsuite (wstest 0.8.2) against sabai's examples and checks
# the reports strictly (autobahn/check.py).
#
#   autobahn/run.sh [server|client|all]     (default: all)
#
#   server: wstest -m fuzzingclient  drives target/release/examples/autobahn_server 9002
#   client: wstest -m fuzzingserver  on 127.0.0.1:9001 is driven by
#           target/release/examples/autobahn_client ws://127.0.0.1:9001 sabai
#
# Environment (all optional):
#   SABAI_AUTOBAHN_VENV      virtualenv location (see install.sh)
#   SABAI_AUTOBAHN_NO_BUILD=1   skip `cargo build` (binaries must exist)
#   SABAI_AUTOBAHN_SERVER_BIN / SABAI_AUTOBAHN_CLIENT_BIN   programs to drive
#                            instead of the examples (same command lines)
#   SABAI_AUTOBAHN_CASES     comma-separated case patterns for a trial run,
#                            e.g. '1.*,2.*'; the checker then expects exactly the
#                            number of cases the suite selects for them
#   SABAI_AUTOBAHN_TIMEOUT   bound in seconds for one role's test run (default 1800)
#
# Exit status: 0 only if every requested role ran and its report passed.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

agent=sabai
server_port=9002        # must match autobahn/fuzzingclient.json
fuzz_port=9001          # must match autobahn/fuzzingserver.json
run_timeout=${SABAI_AUTOBAHN_TIMEOUT:-1800}
mode=all

for arg in "$@"; do
    case "$arg" in
        server|client|all) mode=$arg ;;
        -h|--help) sed -n '2,22p' "$root/autobahn/run.sh" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "autobahn/run.sh: unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

say() { printf '\n=== autobahn/run.sh: %s\n' "$*"; }
die() { printf 'autobahn/run.sh: ERROR: %s\n' "$*" >&2; exit 1; }

# --- process bookkeeping: only ever signal the PIDs started here --------------
pids=()

stop_pid() {  # stop_pid PID: TERM, wait up to 10 s, then KILL
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "autobahn/run.sh: PID $pid ignored SIGTERM; sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local pid
    for pid in "${pids[@]+"${pids[@]}"}"; do
        stop_pid "$pid"
    done
    pids=()
    rm -rf "${tmpdir:-}"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

forget_pid() {
    local keep=() p
    for p in "${pids[@]+"${pids[@]}"}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    pids=("${keep[@]+"${keep[@]}"}")
}

port_open() {  # port_open PORT: does 127.0.0.1:PORT accept a TCP connection?
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_port() {  # wait_port PORT PID WHAT: bounded wait until PORT accepts
    local port=$1 pid=$2 what=$3 i
    for i in $(seq 1 300); do  # 30 s
        if ! kill -0 "$pid" 2>/dev/null; then
            die "$what (PID $pid) exited before listening on 127.0.0.1:$port"
        fi
        port_open "$port" && return 0
        sleep 0.1
    done
    die "$what (PID $pid) did not listen on 127.0.0.1:$port within 30 s"
}

require_free_port() {
    if port_open "$1"; then
        die "127.0.0.1:$1 is already in use; stop whatever listens there first"
    fi
}

# --- setup ----------------------------------------------------------------------
# The specs must agree with the ports and agent used here.
python3 - "$agent" "$server_port" "$fuzz_port" <<'EOF' || die "autobahn/*.json disagree with run.sh (agent/ports)"
import json, sys
agent, sport, fport = sys.argv[1], sys.argv[2], sys.argv[3]
fc = json.load(open("autobahn/fuzzingclient.json"))
fs = json.load(open("autobahn/fuzzingserver.json"))
srv = fc["servers"]
assert len(srv) == 1 and srv[0]["agent"] == agent, srv
assert srv[0]["url"] == "ws://127.0.0.1:%s" % sport, srv[0]["url"]
assert fs["url"] == "ws://127.0.0.1:%s" % fport, fs["url"]
EOF
command -v python3 >/dev/null || die "python3 is needed for autobahn/check.py"
command -v timeout >/dev/null || die "timeout(1) (coreutils) is needed"

say "installing/checking the Autobahn|Testsuite"
venv=$(autobahn/install.sh | tail -n1)
vpy="$venv/bin/python"
[ -x "$vpy" ] || die "install.sh did not produce $vpy"
wstest=("$vpy" -W ignore "$root/autobahn/wstest_loopback.py")

target_dir=${CARGO_TARGET_DIR:-$root/target}
server_bin=${SABAI_AUTOBAHN_SERVER_BIN:-$target_dir/release/examples/autobahn_server}
client_bin=${SABAI_AUTOBAHN_CLIENT_BIN:-$target_dir/release/examples/autobahn_client}

if [ "${SABAI_AUTOBAHN_NO_BUILD:-0}" != 1 ]; then
    say "building the examples (release)"
    cargo build --release --example autobahn_server --example autobahn_client
fi

tmpdir=$(mktemp -d "${TMPDIR:-/tmp}/sabai-autobahn.XXXXXX")
mkdir -p autobahn/reports

# spec_for ROLE_SPEC: sets spec_path to the spec file to hand to wstest,
# restricted to $SABAI_AUTOBAHN_CASES if set, and expect_args for the checker
# accordingly (empty: the checker expects the whole suite).
spec_path=
expect_args=()
spec_for() {
    local spec=$1
    spec_path=$spec
    expect_args=()
    [ -n "${SABAI_AUTOBAHN_CASES:-}" ] || return 0
    local out="$tmpdir/$(basename "$spec")"
    "$vpy" -W ignore - "$spec" "$out" "$SABAI_AUTOBAHN_CASES" >"$tmpdir/count" <<'EOF'
import json, sys
from autobahntestsuite.case import Cases, CaseCategories, CaseSubCategories, CaseBasename, CaseSetname
from autobahntestsuite.caseset import CaseSet
src, dst, pats = sys.argv[1], sys.argv[2], sys.argv[3]
spec = json.load(open(src))
spec["cases"] = [p.strip() for p in pats.split(",") if p.strip()]
json.dump(spec, open(dst, "w"), indent=2)
cs = CaseSet(CaseSetname, CaseBasename, Cases, CaseCategories, CaseSubCategories)
print(len(cs.parseSpecCases(spec)))
EOF
    expect_args=(--expect-cases "$(cat "$tmpdir/count")")
    spec_path=$out
    echo "trial run: cases $SABAI_AUTOBAHN_CASES ($(cat "$tmpdir/count") cases)"
}

show_report() {
    if [ -f "$1/index.html" ]; then
        echo "HTML report: $root/$1/index.html"
    else
        echo "autobahn/run.sh: no report was written to $1" >&2
    fi
}

# --- roles ------------------------------------------------------------------------
run_server_role() {
    local outdir=autobahn/reports/server
    local spec srv_log=autobahn/reports/server-role.sabai.log wst_log=autobahn/reports/server-role.wstest.log
    local srv_pid rc=0
    say "server role: wstest -m fuzzingclient -> $server_bin $server_port"
    [ -x "$server_bin" ] || die "$server_bin not found (build: cargo build --release --example autobahn_server)"
    require_free_port "$server_port"
    spec_for autobahn/fuzzingclient.json
    spec=$spec_path
    local expect=("${expect_args[@]+"${expect_args[@]}"}")
    rm -rf "$outdir"

    "$server_bin" "$server_port" >"$srv_log" 2>&1 &
    srv_pid=$!
    pids+=("$srv_pid")
    wait_port "$server_port" "$srv_pid" "autobahn_server"

    echo "running wstest (log: $wst_log, bound: ${run_timeout}s) ..."
    # wstest exits 0 even when it could not connect at all; the checker's case
    # count is what catches empty or truncated runs.
    timeout --foreground --kill-after=10 "$run_timeout" \
        "${wstest[@]}" -m fuzzingclient -s "$spec" >"$wst_log" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "autobahn/run.sh: wstest fuzzingclient exited $rc$([ "$rc" -eq 124 ] && echo ' (timed out)')" >&2
        tail -n 20 "$wst_log" >&2
    fi
    if ! kill -0 "$srv_pid" 2>/dev/null; then
        echo "autobahn/run.sh: autobahn_server died during the run (log: $srv_log)" >&2
        tail -n 20 "$srv_log" >&2
        rc=1
    fi
    stop_pid "$srv_pid"
    forget_pid "$srv_pid"

    show_report "$outdir"
    python3 autobahn/check.py "$outdir" --agent "$agent" \
        "${expect[@]+"${expect[@]}"}" || rc=1
    return "$rc"
}

run_client_role() {
    local outdir=autobahn/reports/client
    local spec cli_log=autobahn/reports/client-role.sabai.log wst_log=autobahn/reports/client-role.wstest.log
    local wst_pid rc=0
    say "client role: $client_bin -> wstest -m fuzzingserver on 127.0.0.1:$fuzz_port"
    [ -x "$client_bin" ] || die "$client_bin not found (build: cargo build --release --example autobahn_client)"
    require_free_port "$fuzz_port"
    spec_for autobahn/fuzzingserver.json
    spec=$spec_path
    local expect=("${expect_args[@]+"${expect_args[@]}"}")
    rm -rf "$outdir"

    # -u 0: no web UI listener (it would take port 8080).
    "${wstest[@]}" -m fuzzingserver -s "$spec" -u 0 >"$wst_log" 2>&1 &
    wst_pid=$!
    pids+=("$wst_pid")
    wait_port "$fuzz_port" "$wst_pid" "wstest fuzzingserver"

    echo "running autobahn_client (log: $cli_log, bound: ${run_timeout}s) ..."
    timeout --foreground --kill-after=10 "$run_timeout" \
        "$client_bin" "ws://127.0.0.1:$fuzz_port" "$agent" >"$cli_log" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "autobahn/run.sh: autobahn_client exited $rc$([ "$rc" -eq 124 ] && echo ' (timed out)')" >&2
        tail -n 20 "$cli_log" >&2
    fi
    stop_pid "$wst_pid"
    forget_pid "$wst_pid"

    show_report "$outdir"
    python3 autobahn/check.py "$outdir" --agent "$agent" \
        "${expect[@]+"${expect[@]}"}" || rc=1
    return "$rc"
}

status=0
server_status=skipped
client_status=skipped
if [ "$mode" = server ] || [ "$mode" = all ]; then
    if run_server_role; then server_status=PASS; else server_status=FAIL; status=1; fi
fi
if [ "$mode" = client ] || [ "$mode" = all ]; then
    if run_client_role; then client_status=PASS; else client_status=FAIL; status=1; fi
fi

say "summary: server role: $server_status, client role: $client_status"
for role in server client; do
    f="autobahn/reports/$role/index.html"
    st=${role}_status
    if [ "${!st}" != skipped ] && [ -f "$f" ]; then echo "  $role report: $root/$f"; fi
done
exit "$status"
