#!/usr/bin/env bash
# Sets up a virtual environment with llmtune and its test tools, then runs the whole test suite:
# lint, format check and pytest (which includes the real-host tests). Used by README and CI.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# A plain (non-editable) install: the suite tests what `pip install .` ships.
.venv/bin/python -m pip install --quiet '.[test]'
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Run from the tests folder's view of the installed package, not the source tree.
.venv/bin/python -m pytest -p no:cacheprovider "$@"
