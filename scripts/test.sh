#!/usr/bin/env bash
# The README's test command: installs what the tests need, lints, type-checks and runs the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check agent collectors rules tests
.venv/bin/mypy
# Several workers: most tests wait on real servers, not on the CPU. The tests that install the
# .deb on the host take a lock (tests/packaging/conftest.py), so they never overlap.
exec .venv/bin/pytest -n "${PYTEST_WORKERS:-3}" "$@"
