# LoRA fine-tuning: AdamW 1e-4 on the adapters, gradient clipping, constant LR.
optim_wrapper = dict(
    type="GuardedOptimWrapper",  # skips NaN/Inf losses, stops after 5 in a row
    optimizer=dict(type="AdamW", lr=1e-4, weight_decay=1e-2),
    clip_grad=dict(max_norm=1.0),
)
param_scheduler = None
train_cfg = dict(type="IterBasedTrainLoop", max_iters=5000)
