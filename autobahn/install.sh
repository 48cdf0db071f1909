#!/usr/bin/env bash
# Installs the Autobahn|Testsuite (wstest, Python 2.7 only) into a virtualenv
# cached outside the repository. Idempotent: a second run only checks the
# stamp file and that `wstest --help` works.
#
# Environment:
#   SABAI_AUTOBAHN_VENV  where the virtualenv lives
#                        (default: $HOME/.cache/sabai/autobahn-venv)
#   SABAI_PYTHON27       a Python 2.7 interpreter to use (optional)
#   SABAI_AUTOBAHN_FORCE=1  rebuild the virtualenv even if it looks fine
#
# Prints nothing on stdout but the venv path on the last line, so callers may do
#   venv=$(autobahn/install.sh | tail -n1)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
venv=${SABAI_AUTOBAHN_VENV:-$HOME/.cache/sabai/autobahn-venv}
bootstrap="${venv%/}-bootstrap"   # holds virtualenv 16.7.12 itself
reqs="$here/requirements-py27.txt"
stamp="$venv/.sabai-autobahn-stamp"

log() { printf 'autobahn/install.sh: %s\n' "$*" >&2; }

# --- find a working CPython 2.7 ----------------------------------------------
is_py27() {
    # A pyenv shim named python2.7 exists even when it cannot run, so run it.
    "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (2, 7) else 1)' \
        >/dev/null 2>&1
}

py27=""
for cand in "${SABAI_PYTHON27:-}" \
            "$HOME/.pyenv/versions/2.7.18/bin/python" \
            "$(command -v python2.7 2>/dev/null || true)" \
            "$(command -v python2 2>/dev/null || true)"; do
    if [ -n "$cand" ] && is_py27 "$cand"; then
        py27=$cand
        break
    fi
done

if [ -z "$py27" ]; then
    cat >&2 <<'EOF'

###########################################################################
##  autobahn/install.sh: NO PYTHON 2.7 FOUND                             ##
##                                                                       ##
##  The Autobahn|Testsuite (wstest 0.8.2) runs only on CPython 2.7.      ##
##  Looked for: $SABAI_PYTHON27, ~/.pyenv/versions/2.7.18/bin/python,    ##
##  and a working python2.7 / python2 on PATH.                           ##
##                                                                       ##
##  Either install it (e.g. `pyenv install 2.7.18`), or run the suite    ##
##  in Docker instead: see "Running in Docker" in autobahn/README.md.    ##
###########################################################################

EOF
    exit 2
fi

# The stamp records everything that defines the install: interpreter + pins.
want_stamp() {
    printf 'python: %s\n' "$("$py27" -c 'import sys; print(sys.version.split()[0])')"
    printf 'virtualenv: 16.7.12\n'
    grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$reqs"
}

wstest_ok() {
    "$venv/bin/wstest" --help >/dev/null 2>&1
}

if [ "${SABAI_AUTOBAHN_FORCE:-0}" != 1 ] && [ -f "$stamp" ] \
   && [ "$(cat "$stamp")" = "$(want_stamp)" ] && wstest_ok; then
    log "cached install OK at $venv"
    echo "$venv"
    exit 0
fi

# Only ever delete a directory that is ours (stamp) or a virtualenv.
if [ -e "$venv" ] && [ ! -f "$stamp" ] && [ ! -f "$venv/bin/activate" ] \
   && [ -n "$(ls -A "$venv" 2>/dev/null)" ]; then
    log "ERROR: $venv exists and is not a virtualenv; refusing to replace it"
    exit 1
fi

log "installing autobahntestsuite into $venv (python: $py27)"
start=$(date +%s)

# --- virtualenv 16.7.12 in a private bootstrap dir (no user-site changes) ----
if ! PYTHONPATH="$bootstrap" "$py27" -c 'import virtualenv, sys; sys.exit(0 if virtualenv.__version__ == "16.7.12" else 1)' >/dev/null 2>&1; then
    if ! "$py27" -m pip --version >/dev/null 2>&1; then
        log "pip missing in $py27; bootstrapping it with ensurepip --user"
        "$py27" -m ensurepip --user >&2
    fi
    rm -rf "$bootstrap"
    mkdir -p "$bootstrap"
    "$py27" -m pip install --disable-pip-version-check --no-warn-script-location \
        --target "$bootstrap" virtualenv==16.7.12 >&2
fi

# --- the virtualenv itself ------------------------------------------------------
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
PYTHONPATH="$bootstrap" "$py27" -m virtualenv --no-download -p "$py27" "$venv" >&2

vpip() { "$venv/bin/python" -m pip --disable-pip-version-check "$@"; }

# pip 20.3.4 is the last pip for Python 2.7 and honours Requires-Python.
# Build tools first (exact versions taken from the requirements file), so the
# one sdist that has C code (wsaccel) is built with a Cython 3.0.x, the last
# series that still supports Python 2.7.
pin() { grep -i -E "^$1==" "$reqs"; }
vpip install "pip==20.3.4" "$(pin setuptools)" "$(pin wheel)" "$(pin Cython)" >&2
vpip install --no-build-isolation -r "$reqs" >&2

if ! wstest_ok; then
    log "ERROR: wstest --help does not work in $venv"
    "$venv/bin/wstest" --help >&2 || true
    exit 1
fi

want_stamp >"$stamp"
log "installed in $(( $(date +%s) - start ))s: $venv"
echo "$venv"
