#!/usr/bin/env bash
# The main job on the embedded digits (CPU, about 25 minutes on 2 cores):
# set up ./.venv, train the v-prediction teacher (~10 min), distil it to 4
# steps by progressive distillation (~7 min), then sample and evaluate.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/tools/setup_env.sh"
cd "$ROOT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
TEACHER=work_dirs/ddpm_v_digits
PD=work_dirs/pd_digits

echo "== 1/5 train the teacher"
mim train diffengine_distill configs/teachers/ddpm_v_digits.py --work-dir "$TEACHER"

echo "== 2/5 sample a grid from the teacher's export (50 steps)"
python tools/sample.py "$TEACHER" --steps 50 --seeds 0-63 --out "$TEACHER/grid_50steps"

echo "== 3/5 progressive distillation 64 -> 32 -> 16 -> 8 -> 4 steps"
mim train diffengine_distill configs/progressive_distillation/pd_digits.py --work-dir "$PD"

echo "== 4/5 strip: teacher 1000 steps | teacher 4 steps | student 4 steps (same seeds)"
python tools/strip.py "teacher-1000=$TEACHER@1000" "teacher-4=$TEACHER@4" \
    "pd-student-4=$PD/stage_4_4steps@4" --seeds 0-15 --out "$PD/strip.png"

echo "== 5/5 evaluate (reference for paired PSNR: the teacher at 1000 steps)"
python tools/evaluate.py "teacher=$TEACHER@1000,250,50,10,4" "pd-student=$PD/stage_4_4steps@4" \
    --seeds 0-255 --out work_dirs/evaluation
echo "Results: work_dirs/evaluation.md; grid: $TEACHER/grid_50steps/grid.png; strip: $PD/strip.png"
