# Seconds-long DMD2 runs (TTUR 2, GAN term) on 8x8 digits and a tiny
# class-conditional teacher, passed with --cfg-options.
_base_ = ["../../configs/dmd/dmd2_digits.py"]

model = dict(critic_updates_per_generator=2)
train_dataloader = dict(batch_size=8, dataset=dict(resolution=8))
train_cfg = dict(max_iters=6)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
custom_hooks = [
    dict(type="DiffusersExportHook", interval=3, use_ema=False),
    dict(type="SampleVisualizationHook", interval=3, num_images=4),
]
