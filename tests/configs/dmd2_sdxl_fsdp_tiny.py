# Seconds-long sharded DMD2 runs (the shipped SDXL FSDP config) of a tiny SDXL
# folder: generator and fake score sharded, two optimizers; GAN off (its
# random head is covered by the broadcast at sharding time).
_base_ = ["../../configs/dmd/dmd2_sdxl_fsdp.py"]

model = dict(gan_start_iter=1000, critic_updates_per_generator=2,
             data_preprocessor=dict(dtype="float32", vae=None))
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False, dataset=dict(
    pipeline=[dict(type="LoadImage", color_type="rgb"),
              dict(type="SDXLResizeCrop", size=16), dict(type="PackInputs")]))
param_scheduler = None
train_cfg = dict(max_iters=4)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
custom_hooks = [
    dict(type="DiffusersExportHook", interval=4, use_ema=False),
    dict(type="SampleVisualizationHook", interval=4, num_images=2, prompts=["a seven"],
         guidance_scale=1.0),
]
