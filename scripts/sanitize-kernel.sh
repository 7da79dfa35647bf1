#!/usr/bin/env bash
# Runs the interval-energy tests against an AddressSanitizer + UBSan build of the C kernel
# (agent/energy/_kernel.c), then restores the normal build. Run after editing the C code.
set -euo pipefail
cd "$(dirname "$0")/.."
so=$(.venv/bin/python -c "import agent.energy._kernel as k; print(k.__file__)")
backup=$(mktemp)
cp "$so" "$backup"
trap 'cp "$backup" "$so"; rm -f "$backup"' EXIT
include=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['include'])")
gcc -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined \
  -std=c11 -Wall -Wextra -fPIC -shared -I"$include" agent/energy/_kernel.c -o "$so"
LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 \
  .venv/bin/python -m pytest -q -p no:cacheprovider tests/kpi/test_kernel.py \
  tests/kpi/test_energy.py tests/kpi/test_restart.py tests/kpi/test_properties.py "$@"
