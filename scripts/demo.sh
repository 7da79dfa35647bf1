#!/usr/bin/env bash
# The README's main command: installs what the demo needs (the Debian packages of the PDF
# report, then the agent into .venv), first run only, and runs it on its embedded default, a
# simulated site, with a live terminal view. Extra arguments go to `demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/apt.sh
apt_ensure demo "${REPORT_PACKAGES[@]}"
# Keeps what an earlier install chose (scripts/test.sh installs the dev extras too).
bash scripts/venv.sh "$(cat .venv/.pue-agent-installed 2>/dev/null || echo .)"
exec .venv/bin/pue-agent demo "$@"
