# DMD (one step, distribution matching + regression) of the class-conditional
# digits teacher. Train the teacher, make its ODE pairs, then distil:
#   mim train diffengine_distill configs/teachers/ddpm_v_digits_cond.py
#   python tools/make_pairs.py work_dirs/ddpm_v_digits_cond/step2500 \
#       --out work_dirs/pairs/digits_cond --seeds 0-9999 --steps 64
#   mim train diffengine_distill configs/dmd/dmd_digits.py
# Batch 64 (pairs_16px.py) is per process; one process here.
_base_ = [
    "../_base_/models/dmd_generator.py",
    "../_base_/datasets/pairs_16px.py",
    "../_base_/schedules/dmd_adamw.py",
    "../_base_/default_runtime.py",
]

teacher = "work_dirs/ddpm_v_digits_cond/step2500"
model = dict(
    unet=dict(path=teacher), scheduler=dict(path=teacher),
    regression_loss="l2",  # no LPIPS weights offline: the explicit fallback
)
# A 1.1M-parameter model: a larger LR than the paper's 5e-5 for ImageNet's EDM.
_optimizer = dict(type="AdamW", lr=1e-4, betas=(0.9, 0.999), weight_decay=0.01)
optim_wrapper = dict(generator=dict(optimizer=_optimizer), critic=dict(optimizer=_optimizer))
train_cfg = dict(max_iters=2000)

default_hooks = dict(logger=dict(interval=50), checkpoint=dict(interval=500))
custom_hooks = [
    dict(type="DiffusersExportHook", interval=500, use_ema=False),
    dict(type="SampleVisualizationHook", interval=250, num_images=64),
    dict(type="DigitsMetricHook", interval=250),  # FD and class accuracy in TensorBoard
]
