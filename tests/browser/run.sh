#!/usr/bin/env bash
# Browser tests of the hub server: installs what they need (Debian's
# chromium, playwright-core and typescript from npm), checks the client's
# TypeScript declarations, builds the server, runs the tests.
# Bounded: every test has its own timeouts, and the whole run stops after 10 min.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -x /usr/bin/chromium ]; then
  echo "installing chromium (Debian package)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
# playwright-core drives the system browser; it downloads nothing itself.
npm ci --no-audit --no-fund --loglevel=error
# /client.d.ts against a page's use of the client (typecheck.ts): tsc --noEmit --strict.
timeout 120 npm run --silent typecheck
(cd ../.. && cargo build -p sabai-hub)
timeout 600 npm test
