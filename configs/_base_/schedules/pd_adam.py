# Progressive distillation: Adam, gradient clipping 1, no EMA, no dropout; the
# LR decays linearly to 0 within each stage (ProgressiveDistillationHook), so
# no param_scheduler here. Set train_cfg.max_iters = stages x iters_per_stage.
optim_wrapper = dict(
    type="GuardedOptimWrapper",  # skips NaN/Inf losses, stops after 5 in a row
    optimizer=dict(type="Adam", lr=5e-5, betas=(0.9, 0.999), eps=1e-8),
    clip_grad=dict(max_norm=1.0),
)
param_scheduler = None
train_cfg = dict(type="IterBasedTrainLoop", max_iters=1000)
