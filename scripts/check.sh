#!/usr/bin/env bash
# Lint, type-check and run the test suite (the README's test command runs this after install).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
echo "== ruff"; "$PY" -m ruff check .
echo "== mypy"; "$PY" -m mypy
echo "== pytest"; "$PY" -m pytest -q "$@"
