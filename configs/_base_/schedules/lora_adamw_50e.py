# diffengine's stable_diffusion_50e schedule: AdamW 1e-5 (weight decay 1e-2),
# gradient clipping at 1, fp16 mixed precision, 50 epochs. Without a CUDA
# GPU the run falls back to fp32.
optim_wrapper = dict(
    type="GuardedAmpOptimWrapper",  # fp16 autocast + loss scaling; skips NaN/Inf steps
    dtype="float16",
    optimizer=dict(type="AdamW", lr=1e-5, weight_decay=1e-2),
    clip_grad=dict(max_norm=1.0),
)
param_scheduler = None
train_cfg = dict(type="EpochBasedTrainLoop", max_epochs=50)
# Leaves checkpoint by epoch: default_hooks = dict(checkpoint=dict(interval=1, by_epoch=True))
