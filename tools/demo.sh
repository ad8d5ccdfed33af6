#!/usr/bin/env bash
# The main job on the embedded digits (CPU): set up ./.venv, train the
# v-prediction teacher, sample a grid, and evaluate it at 1000/250/50/10 steps.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/tools/setup_env.sh"
cd "$ROOT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
TEACHER=work_dirs/ddpm_v_digits

echo "== 1/3 train the teacher (about 8-10 minutes on 2 cores)"
mim train diffengine_distill configs/teachers/ddpm_v_digits.py --work-dir "$TEACHER"

echo "== 2/3 sample a grid from the export"
python tools/sample.py "$TEACHER" --steps 50 --seeds 0-63 --out "$TEACHER/grid_50steps"

echo "== 3/3 evaluate the teacher at 1000 / 250 / 50 / 10 steps"
python tools/evaluate.py "teacher=$TEACHER" --steps 1000 250 50 10 --seeds 0-255 \
    --out "$TEACHER/evaluation"
echo "Results: $TEACHER/evaluation.md, grid: $TEACHER/grid_50steps/grid.png"
