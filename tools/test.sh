#!/usr/bin/env bash
# Set up ./.venv if needed, then run the whole test suite (CPU, < 20 minutes).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/tools/setup_env.sh"
cd "$ROOT"
# Threads beyond the cores only slow the many small CPU ops down.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
exec python -m pytest tests "$@"
