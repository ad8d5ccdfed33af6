#!/usr/bin/env bash
# The benchmarks that need a GPU, in one prepared run (a borrowed GPU's time is
# short): each step is time-boxed and writes its result files as soon as it
# ends, so a run stopped early keeps what finished.
#
#   bash tools/benchmark/gpu_suite.sh [STEP ...]   (default: every step, in this order)
#
# Steps:
#   dmd_eps     the class-conditional eps digits teacher, then the DMD benchmark on it
#               (tools/benchmark/dmd_quality.py: DMD, DMD2, DMD2 4-step; ~6 min on an H200)
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
[ ${#STEPS[@]} -eq 0 ] && STEPS=(dmd_eps throughput vs_reference)

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
        --out "$RESULTS/dmd_quality_eps"
    keep "$RESULTS"/dmd_quality_eps.*
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
