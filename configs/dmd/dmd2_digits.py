# DMD2 (one step) of the class-conditional digits teacher: no regression
# pairs; five critic updates per generator update; GAN term on real digits.
#   mim train diffengine_distill configs/dmd/dmd2_digits.py
# Batch 64 (digits_16px.py) is per process; one process here.
_base_ = [
    "../_base_/models/dmd2_generator.py",
    "../_base_/datasets/digits_16px.py",
    "../_base_/schedules/dmd_adamw.py",
    "../_base_/default_runtime.py",
]

teacher = "work_dirs/ddpm_v_digits_cond/step2500"
model = dict(unet=dict(path=teacher), scheduler=dict(path=teacher))
_optimizer = dict(type="AdamW", lr=1e-4, betas=(0.9, 0.999), weight_decay=0.01)
optim_wrapper = dict(generator=dict(optimizer=_optimizer), critic=dict(optimizer=_optimizer))
train_cfg = dict(max_iters=3000)  # 600 generator updates

default_hooks = dict(logger=dict(interval=50), checkpoint=dict(interval=500))
custom_hooks = [
    dict(type="DiffusersExportHook", interval=1000, use_ema=False),
    dict(type="SampleVisualizationHook", interval=500, num_images=64),
    dict(type="DigitsMetricHook", interval=500),  # FD and class accuracy in TensorBoard
]
