#!/usr/bin/env bash
# Runs every benchmark under tests/bench/ (each prints its figures against a baseline).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
for bench in tests/bench/bench_*.py; do
  name=$(basename "$bench" .py)
  echo "== $name"
  .venv/bin/python -m "tests.bench.$name"
done
