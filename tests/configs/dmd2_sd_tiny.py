# Seconds-long DMD2 runs (real-score CFG, TTUR 2, GAN term) of a tiny SD folder.
_base_ = ["../../configs/dmd/dmd2_sd15.py"]

# GAN from iteration 2 (dmd2_sd15's gan_start_iter is 39000): both phases run.
model = dict(critic_updates_per_generator=2, gan_start_iter=2,
             data_preprocessor=dict(dtype="float32"))
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False, dataset=dict(
    pipeline=[dict(type="LoadImage", color_type="rgb"),
              dict(type="SDXLResizeCrop", size=16), dict(type="PackInputs")]))
train_cfg = dict(max_iters=4)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
custom_hooks = [
    dict(type="DiffusersExportHook", interval=4, use_ema=False),
    dict(type="SampleVisualizationHook", interval=4, num_images=2, prompts=["a seven"],
         guidance_scale=1.0),
]
