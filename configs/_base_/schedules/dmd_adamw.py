# DMD: AdamW (lr 5e-5, weight decay 0.01, gradient clipping at 10) for both
# the generator and the critic, constant LR, no EMA.
_optimizer = dict(type="AdamW", lr=5e-5, betas=(0.9, 0.999), weight_decay=0.01)
optim_wrapper = dict(
    constructor="PerModuleOptimWrapperConstructor",  # one optimizer per sub-network
    generator=dict(type="GuardedOptimWrapper", optimizer=_optimizer,
                   clip_grad=dict(max_norm=10.0)),
    critic=dict(type="GuardedOptimWrapper", optimizer=_optimizer,
                clip_grad=dict(max_norm=10.0)),
)
param_scheduler = None
train_cfg = dict(type="IterBasedTrainLoop", max_iters=20000)
