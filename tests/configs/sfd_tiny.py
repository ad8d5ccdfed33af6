# Seconds-long SFD runs on the tiny teacher; the tests pass the teacher export
# with --cfg-options model.unet.path=... model.scheduler.path=...
_base_ = ["../../configs/sfd/sfd_digits.py"]

model = dict(M=1)
train_dataloader = dict(batch_size=8, dataset=dict(shape=(1, 8, 8)))
optim_wrapper = dict(optimizer=dict(lr=1e-3))
# An explicit end: a run stopped early (max_iters=3) and resumed keeps the
# schedule (mmengine clips an open end to max_iters and saves it).
param_scheduler = [dict(type="MultiStepLR", by_epoch=False, milestones=[3], end=6, gamma=0.1)]
train_cfg = dict(max_iters=6)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
custom_hooks = [
    dict(type="DiffusersExportHook", interval=3, use_ema=False),
    dict(type="SampleVisualizationHook", interval=3, num_images=4),
]
