#!/usr/bin/env bash
# The benchmarks that need a GPU, in one prepared run (a borrowed GPU's time is
# short): each step is time-boxed and writes its result files as soon as it
# ends, so a run stopped early keeps what finished.
#
#   bash tools/benchmark/gpu_suite.sh [STEP ...]   (default: every step, in this order)
#
# Steps:
#   dmd_eps     the class-conditional eps digits teacher, then the DMD benchmark on it
#               (tools/benchmark/dmd_quality.py: DMD, DMD2, DMD2 4-step, v generators;
#               ~6 min on an H200)
#   dmd2_long   DMD2 (one step) on the v digits teacher for 6,000 iterations instead of
#               3,000 (~6 min alone), with the teacher's FD spread over 4 seed sets:
#               does it pass the teacher's 64-step FD, as the paper's generator does?
#   throughput  tools/benchmark/throughput.py on the CIFAR-shaped UNet: iteration vs
#               sum of parts, eager bf16 and bf16 + torch.compile, sampling vs NFE x forward
#   vs_reference  tools/benchmark/vs_reference.py with REFS=<dir holding diff-sampler/
#               and DMD2/ checkouts> (skipped without REFS)
# Environment: OUT (copies of the result files go there too), STEP_TIMEOUT (s, default 420).
set -uo pipefail
cd "$(dirname "$0")/../.."
RESULTS=tools/benchmark/results
OUT=${OUT:-}
STEP_TIMEOUT=${STEP_TIMEOUT:-420}
STEPS=("$@")
[ ${#STEPS[@]} -eq 0 ] && STEPS=(dmd_eps throughput vs_reference dmd2_long)

keep() {  # copy result files to $OUT (the device tool brings back what is there)
    [ -n "$OUT" ] && cp "$@" "$OUT"/ 2>/dev/null
    return 0
}

step_dmd_eps() {
    local teacher=work_dirs/ddpm_eps_digits_cond
    [ -f "$teacher/step2500/model_index.json" ] || \
        python tools/train.py configs/teachers/ddpm_eps_digits_cond.py --work-dir "$teacher"
    python tools/benchmark/dmd_quality.py --device cuda --teacher "$teacher/step2500" \
        --pairs work_dirs/pairs/digits_cond_eps --work-dir work_dirs/dmd_benchmark_eps \
        --reference-seed-sets 4 --out "$RESULTS/dmd_quality_eps" \
        --cfg-options model.generator_prediction_type=v_prediction
    keep "$RESULTS"/dmd_quality_eps.*
}

step_dmd2_long() {
    local teacher=work_dirs/ddpm_v_digits_cond
    [ -f "$teacher/step2500/model_index.json" ] || \
        python tools/train.py configs/teachers/ddpm_v_digits_cond.py --work-dir "$teacher"
    python tools/benchmark/dmd_quality.py --device cuda --teacher "$teacher/step2500" \
        --runs DMD2 --reference-seed-sets 4 --work-dir work_dirs/dmd_benchmark_long \
        --cfg-options train_cfg.max_iters=6000 --out "$RESULTS/dmd_quality_long"
    keep "$RESULTS"/dmd_quality_long.*
}

step_throughput() {
    python tools/benchmark/throughput.py --unet cifar --device cuda \
        --modes bf16,bf16+compile --sampling --out "$RESULTS/throughput_cifar_cuda_parts"
    keep "$RESULTS"/throughput_cifar_cuda_parts.*
}

step_vs_reference() {
    if [ -z "${REFS:-}" ]; then
        echo "vs_reference: set REFS to a folder with diff-sampler/ and DMD2/ checkouts"
        return 0
    fi
    python tools/benchmark/vs_reference.py --sfd-main "$REFS/diff-sampler/sfd-main" \
        --dmd2 "$REFS/DMD2" --unet cifar --device cuda --precision bf16 --batch 128
    keep "$RESULTS"/vs_reference_*cuda*
}

for step in "${STEPS[@]}"; do
    echo "== $step ($(date -u +%T))"
    start=$SECONDS
    timeout "$STEP_TIMEOUT" bash -c "$(declare -f keep "step_$step"); RESULTS=$RESULTS \
        OUT=$OUT REFS=${REFS:-} step_$step"
    echo "== $step: exit $?, $((SECONDS - start)) s"
done
