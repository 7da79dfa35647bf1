#!/usr/bin/env bash
# The README's test command: installs what the tests need, lints, type-checks and runs the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check agent collectors rules tests
.venv/bin/mypy
exec .venv/bin/pytest "$@"
