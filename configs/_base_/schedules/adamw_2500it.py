# About 8 minutes on 2 CPU cores for the digits teacher at batch 64.
optim_wrapper = dict(
    type="GuardedOptimWrapper",  # skips NaN/Inf losses, stops after 5 in a row
    optimizer=dict(type="AdamW", lr=2e-3, betas=(0.9, 0.99), weight_decay=0.0),
    clip_grad=dict(max_norm=1.0),
)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type="CosineAnnealingLR", by_epoch=False, begin=100, end=2500, eta_min=1e-5),
]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=2500)
