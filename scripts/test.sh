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
# The real-host tests (tests/hosts) debootstrap and boot Debian containers with systemd-nspawn
# and reach them with ssh: install those tools where missing (CI starts from a fresh machine).
if [ "$(id -u)" -eq 0 ] && ! { command -v debootstrap && command -v systemd-nspawn \
        && command -v ssh; } >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq debootstrap systemd-container openssh-client
fi
# Everything, the container tests included (they need root: CI runs as root).
.venv/bin/python -m pytest -p no:cacheprovider "$@"
