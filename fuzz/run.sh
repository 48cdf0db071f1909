#!/usr/bin/env bash
# Replays the committed corpus of every fuzz target, then fuzzes each one for
# SECONDS (default 30), one target at a time, single process.
#
#   fuzz/run.sh [SECONDS]
#
# Runs from anywhere (it moves to the repository root). Installs cargo-fuzz if
# it is missing. cargo-fuzz needs nightly-only rustc flags (-Zsanitizer=address);
# RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
#
# The committed seeds in fuzz/corpus/<target> are only read; new inputs go
# to fuzz/target/corpus/<target> (ignored by git). Crashes are written to
# fuzz/artifacts/<target>/ and make the script exit non-zero, after all
# targets have run.
set -uo pipefail

secs="${1:-30}"
if ! [[ "$secs" =~ ^[0-9]+$ ]]; then
    echo "usage: $0 [SECONDS]" >&2
    exit 2
fi

cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1

CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" || exit 1
fi

# target and -max_len for it
targets=(
    "connection 65536"
    "handshake_server 20000"
    "handshake_client 20000"
    "utf8 4096"
    "frame_header 64"
    "roundtrip 4096"
    "extension_header 4096"
    "inflate 65536"
    "stateful 4096"
)

common=(-rss_limit_mb=2048 -timeout=20 -print_final_stats=1)

echo "== building fuzz targets"
cargo fuzz build || exit 1

failed=()
start=$(date +%s)
for entry in "${targets[@]}"; do
    read -r target max_len <<<"$entry"
    seeds="fuzz/corpus/$target"
    work="fuzz/target/corpus/$target"
    mkdir -p "$seeds" "$work"

    echo "== $target: replaying $seeds"
    if ! cargo fuzz run "$target" "$seeds" -- -runs=0 "${common[@]}"; then
        failed+=("$target (corpus replay)")
        continue
    fi

    if [ "$secs" -gt 0 ]; then
        echo "== $target: fuzzing for ${secs}s"
        if ! cargo fuzz run "$target" "$work" "$seeds" -- \
            -max_total_time="$secs" -max_len="$max_len" "${common[@]}"; then
            failed+=("$target (fuzzing)")
        fi
    fi
done

echo "== done in $(($(date +%s) - start))s"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "FAILED: ${failed[*]} (reproducers in fuzz/artifacts/)" >&2
    exit 1
fi
echo "all fuzz targets passed"
