#!/usr/bin/env bash
# The main job on the embedded digits (CPU, 7.5 minutes measured on 2 cores after
# the set-up): set up ./.venv, train the v-prediction teacher on a shortened
# schedule, distil it 32 -> 4 steps by progressive distillation, sample and
# evaluate. The full-length runs are the benchmarks (docs/benchmarks.md).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/tools/setup_env.sh"
cd "$ROOT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
TEACHER=work_dirs/ddpm_v_digits
PD=work_dirs/pd_digits
BATCH=${BATCH:-32}                     # per iteration, teacher and PD (the configs' 64)
TEACHER_ITERS=${TEACHER_ITERS:-1000}   # the config's 2,500 iterations take 9-19 min
# (the EMA's horizon scales with the schedule: momentum 2.5 / iterations)
PD_FROM=${PD_FROM:-32}                 # teacher steps of the first stage (the config's 64)
PD_ITERS=${PD_ITERS:-100}              # per stage (the config's 300)
PD_STAGES=$(python -c "import math, sys; s = math.log2($PD_FROM / 4)
sys.exit('PD_FROM must be 4 times a power of two') if s != int(s) or s < 1 else print(int(s))")
REFERENCE_STEPS=${REFERENCE_STEPS:-64} # the converged ODE: at 64 steps 49 dB from 1024
start=$SECONDS

echo "== 1/5 train the teacher ($TEACHER_ITERS iterations)"
mim train diffengine_distill configs/teachers/ddpm_v_digits.py --work-dir "$TEACHER" \
    --cfg-options "train_dataloader.batch_size=$BATCH" \
    "train_cfg.max_iters=$TEACHER_ITERS" "param_scheduler.1.end=$TEACHER_ITERS" \
    "custom_hooks.0.momentum=$(python -c "print(2.5 / $TEACHER_ITERS)")" \
    "custom_hooks.1.interval=$TEACHER_ITERS" "custom_hooks.2.interval=$TEACHER_ITERS"
TEACHER_EXPORT="$TEACHER/step$TEACHER_ITERS"

echo "== 2/5 sample a grid from the teacher's export (50 steps)"
python tools/sample.py "$TEACHER_EXPORT" --steps 50 --seeds 0-63 --out "$TEACHER/grid_50steps"

echo "== 3/5 progressive distillation $PD_FROM -> ... -> 4 steps ($PD_STAGES stages, $PD_ITERS iterations each)"
mim train diffengine_distill configs/progressive_distillation/pd_digits.py --work-dir "$PD" \
    --cfg-options "train_dataloader.batch_size=$BATCH" \
    "model.unet.path=$TEACHER_EXPORT" "model.scheduler.path=$TEACHER_EXPORT" \
    "model.teacher_steps=$PD_FROM" "custom_hooks.0.iters_per_stage=$PD_ITERS" "custom_hooks.1.interval=$PD_ITERS" \
    "default_hooks.checkpoint.interval=$PD_ITERS" "train_cfg.max_iters=$((PD_STAGES * PD_ITERS))"

echo "== 4/5 strip: teacher $REFERENCE_STEPS steps | teacher 4 steps | student 4 steps (same seeds)"
python tools/strip.py "teacher-$REFERENCE_STEPS=$TEACHER_EXPORT@$REFERENCE_STEPS" \
    "teacher-4=$TEACHER_EXPORT@4" "pd-student-4=$PD/stage_${PD_STAGES}_4steps@4" --seeds 0-15 \
    --out "$PD/strip.png"

echo "== 5/5 evaluate (reference for paired PSNR: the teacher at $REFERENCE_STEPS steps)"
python tools/evaluate.py "teacher=$TEACHER_EXPORT@$REFERENCE_STEPS,16,4" \
    "pd-student=$PD/stage_${PD_STAGES}_4steps@4" --seeds 0-255 --out work_dirs/evaluation
echo "Done in $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s."
echo "Results: work_dirs/evaluation.md; grid: $TEACHER/grid_50steps/grid.png; strip: $PD/strip.png"
