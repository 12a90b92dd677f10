#!/usr/bin/env bash
# Install everything dgml needs on a Debian machine, idempotently: the Debian packages that are
# missing, a virtual environment in .venv, and dgml itself (editable, with the dev tools).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v python3 >/dev/null || missing+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
command -v git >/dev/null || missing+=(git)
command -v pgrep >/dev/null || missing+=(procps)
# The job agent slices FDM jobs with PrusaSlicer's command line.
command -v prusa-slicer >/dev/null || missing+=(prusa-slicer)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi

python3 - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"dgml needs Python 3.11 or newer; python3 is {sys.version.split()[0]}")
PY

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 \
    | grep -v -e "^WARNING: Location" -e "^$" || true
.venv/bin/python -c 'import dgml, registry' 
