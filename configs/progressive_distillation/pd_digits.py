# Progressive distillation of the digits teacher, 64 -> 32 -> 16 -> 8 -> 4 steps.
# Train the teacher first:
#   mim train diffengine_distill configs/teachers/ddpm_v_digits.py
#   mim train diffengine_distill configs/progressive_distillation/pd_digits.py
# Each stage is exported to work_dirs/pd_digits/stage_<k>_<N>steps.
# Batch 64 (digits_16px.py) is per process; one process here.
_base_ = [
    "../_base_/models/pd_v_student.py",
    "../_base_/datasets/digits_16px.py",
    "../_base_/schedules/pd_adam.py",
    "../_base_/default_runtime.py",
]

teacher = "work_dirs/ddpm_v_digits/step2500"
iters_per_stage = 300

# stage0_clip_x0: pixels in [-1, 1]; used by the conversion stage 0 of an eps teacher.
model = dict(unet=dict(path=teacher), scheduler=dict(path=teacher), teacher_steps=64,
             stage0_clip_x0=1.0)
# A small model on CPU: a larger LR than the paper's 5e-5 (batch 128, 50k steps/stage).
optim_wrapper = dict(optimizer=dict(lr=2e-4))
train_cfg = dict(max_iters=4 * iters_per_stage)

default_hooks = dict(checkpoint=dict(interval=iters_per_stage // 2))
custom_hooks = [
    dict(type="ProgressiveDistillationHook", end_steps=4, iters_per_stage=iters_per_stage),
    dict(type="SampleVisualizationHook", interval=iters_per_stage, num_images=64),
]
