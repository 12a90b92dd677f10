#!/usr/bin/env bash
# Set everything up, then lint and run the whole test suite (slow tests included).
# PostgreSQL runs too when DGML_TEST_POSTGRES_URL names a server, e.g.
#   DGML_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest -q "$@"
