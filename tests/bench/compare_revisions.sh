#!/usr/bin/env bash
# Runs one benchmark module on an earlier revision and on the working tree, one after the
# other in this script, so a refactor's cost shows as a ratio on the same machine.
# Usage: bash tests/bench/compare_revisions.sh REV MODULE [ARGS...]
#   e.g. bash tests/bench/compare_revisions.sh 703d82e bench_kpi --pdus 500
# The earlier revision is checked out in a temporary worktree and run with this tree's
# virtual environment and C kernel (the kernel source must be the same in both).
# An argument containing @TREE@ gets "old" or "new" in its place (e.g. separate work dirs,
# so neither run finds the other's caches).
set -euo pipefail
cd "$(dirname "$0")/../.."
rev=$1 module=$2
shift 2
old=$(mktemp -d)
trap 'git worktree remove --force "$old" >/dev/null 2>&1 || rm -rf "$old"' EXIT
git worktree add --detach -q "$old" "$rev"
if ! cmp -s agent/energy/_kernel.c "$old/agent/energy/_kernel.c"; then
  echo "the C kernel differs between $rev and the working tree: compare with a rebuilt venv" >&2
  exit 2
fi
cp agent/energy/_kernel*.so "$old/agent/energy/"
args_for() { local a; for a in "${@:2}"; do printf '%s\0' "${a//@TREE@/$1}"; done; }
mapfile -d '' old_args < <(args_for old "$@")
mapfile -d '' new_args < <(args_for new "$@")
here=$PWD
echo "== $module at $rev"
(cd "$old" && PYTHONPATH="$old" "$here/.venv/bin/python" -m "tests.bench.$module" "${old_args[@]}")
echo "== $module in the working tree ($(git rev-parse --short HEAD)$(git diff --quiet || echo +changes))"
.venv/bin/python -m "tests.bench.$module" "${new_args[@]}"
