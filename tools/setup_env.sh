#!/usr/bin/env bash
# Create (or reuse) ./.venv with the pinned requirements and an editable install.
# Sourced by tools/demo.sh and tools/test.sh; re-installs only when the
# requirements, setup.py or the set of config files change (an editable
# install's mim shim lists the configs).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
PY=${PYTHON:-python3}
stamp=$( (cat "$ROOT"/requirements/*.txt "$ROOT/setup.py"; cd "$ROOT" && find configs -name '*.py' | sort) \
    | sha256sum | cut -c1-16)
if [ "$(cat "$VENV/.stamp" 2>/dev/null)" != "$stamp" ]; then
    echo "== setting up $VENV"
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    # torch first, on its own: a CPU build where the CPU wheel is available
    # locally, so that nothing later pulls a CUDA build.
    "$VENV/bin/python" -m pip install -q "$(grep '^torch==' "$ROOT/requirements/runtime.txt")"
    "$VENV/bin/python" -m pip install -q -r "$ROOT/requirements/tests.txt"
    "$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$ROOT"
    echo "$stamp" > "$VENV/.stamp"
fi
export PATH="$VENV/bin:$PATH"
