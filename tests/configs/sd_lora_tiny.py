# Seconds-long v-prediction LoRA runs on a tiny SD 1.5-like folder (16 px
# images, 8 px latents); the tests pass the base folder and data root with
# --cfg-options model.unet.path=... (see tests/test_stable_diffusion.py).
_base_ = ["../../configs/v_prediction/stable_diffusion_v15_lora_v_prediction_pokemon_blip.py"]

train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False, dataset=dict(
    pipeline=[dict(type="LoadImage", color_type="rgb"),
              dict(type="SDXLResizeCrop", size=16, random_crop=True),
              dict(type="PackInputs")]))
optim_wrapper = dict(optimizer=dict(lr=1e-2))
train_cfg = dict(max_iters=4)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
custom_hooks = [
    dict(type="DiffusersExportHook", interval=4, use_ema=False),
    dict(type="SampleVisualizationHook", interval=4, num_images=2, num_inference_steps=2,
         prompts=["a red digit"]),
]
