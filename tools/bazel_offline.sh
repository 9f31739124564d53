#!/usr/bin/env bash
# bazel <command> with the offline configuration: tools/bazel_offline.sh test //tests:all
# PYTHON (default .venv/bin/python) is the interpreter whose packages
# (tensorflow, keras, ...) the targets import.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PYTHON" ] || { echo "tools/bazel_offline.sh: no interpreter at $PYTHON (set PYTHON)" >&2; exit 2; }
# A wrapper, not the venv's python symlink itself: Bazel resolves the
# symlink, and the resolved interpreter would not find the venv's packages.
WRAPPER="$ROOT/.bazel-python"
printf '#!/bin/sh\nexec "%s" "$@"\n' "$PYTHON" > "$WRAPPER"
chmod +x "$WRAPPER"
command="$1"
shift
cd "$ROOT"
exec bazel "$command" --config=offline \
  --incompatible_use_python_toolchains=false --python_path="$WRAPPER" \
  --override_repository=rules_cc="$ROOT/tools/bazel/rules_cc" \
  --override_repository=remote_coverage_tools="$ROOT/tools/bazel/remote_coverage_tools" \
  --action_env=TF_CPP_MIN_LOG_LEVEL=2 \
  "$@"
