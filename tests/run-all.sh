#!/usr/bin/env bash
# Every test of every crate and feature, in one command (the README's):
# the library with every feature, with its defaults and as the pure core;
# the hub server (sabai-hub) and its Redis engine (sabai-redis), whose
# tests start their own redis-server (and, for the MQTT bridge, mosquitto)
# processes on free 127.0.0.1 ports;
# and the browser tests in headless Chromium. What is missing is installed
# (Debian packages; root or sudo); a test never skips for want of a service.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== tests/run-all.sh: %s\n' "$*"; }

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null || missing+=(mosquitto)
command -v mosquitto_pub >/dev/null || missing+=(mosquitto-clients)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  step "installing ${missing[*]} (Debian packages)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

step "every crate, every feature (library, hub server, Redis engine; real redis-server and mosquitto)"
cargo test --workspace --all-features

step "the library as a user gets it: default features, then the pure core's own tests"
# Built beside hub/, the library gets the features hub/ asks for; -p sabai
# builds it alone.
cargo test -p sabai
cargo test -p sabai --no-default-features --lib

step "browser tests: the hub's pages in headless Chromium"
tests/browser/run.sh

step "every test passed"
