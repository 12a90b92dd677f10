#!/usr/bin/env bash
# Set everything up, then lint and run the whole test suite (slow tests included).
# PostgreSQL runs too when DGML_TEST_POSTGRES_URL names a server, e.g.
#   DGML_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
# admesh is the second opinion some geometry tests compare with (Debian package).
if ! command -v admesh >/dev/null; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    { $sudo apt-get install -y -qq admesh || { $sudo apt-get update -qq && $sudo apt-get install -y -qq admesh; }; } >/dev/null 2>&1 \
        || echo "note: admesh could not be installed; the tests comparing with it are skipped" >&2
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest -q "$@"
