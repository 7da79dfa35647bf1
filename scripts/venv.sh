#!/usr/bin/env bash
# Creates .venv and installs pue-agent into it (editable), with the C compiler and Python
# headers its interval-energy kernel (agent/energy/_kernel.c) is built with.
# Usage: bash scripts/venv.sh [pip target, default "."]   Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-.}
PYTHON=${PYTHON:-python3}
# shellcheck source=scripts/apt.sh
source scripts/apt.sh

if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -m venv --help >/dev/null 2>&1 || ! "$PYTHON" -c "import ensurepip" 2>/dev/null; then
    apt_ensure venv python3-venv  # Debian splits venv/ensurepip into python3-venv
  fi
  "$PYTHON" -m venv .venv
fi
headers=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['include'])")
if ! command -v gcc >/dev/null || [ ! -f "$headers/Python.h" ]; then
  apt_ensure venv gcc libc6-dev python3-dev
fi
stamp=.venv/.pue-agent-installed
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$target" ] \
  || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ] \
  || [ agent/energy/_kernel.c -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  # Editable installs build the extension once: the stamp re-runs this when its source changes.
  .venv/bin/pip install -q -e "$target"
  echo "$target" >"$stamp"
fi
