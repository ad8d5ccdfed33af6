# Seconds-long DMD runs on a tiny class-conditional teacher; the tests pass
# the teacher export and the pairs folder with --cfg-options.
_base_ = ["../../configs/dmd/dmd_digits.py"]

train_dataloader = dict(batch_size=8)
train_cfg = dict(max_iters=6)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
custom_hooks = [
    dict(type="DiffusersExportHook", interval=3, use_ema=False),
    dict(type="SampleVisualizationHook", interval=3, num_images=4),
]
