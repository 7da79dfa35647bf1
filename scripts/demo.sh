#!/usr/bin/env bash
# The README's main command: installs the agent into .venv (first run only) and runs it on its
# embedded default, a simulated site, with a live terminal view. Extra arguments go to `demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/pue-agent ]; then
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c "import ensurepip" 2>/dev/null; then
    # Debian splits venv/ensurepip into python3-venv.
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
  fi
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e .
fi
exec .venv/bin/pue-agent demo "$@"
