# The SDXL seed recipe (epoch-based, fp16 AMP, fp32 on CPU) on a tiny
# SDXL-like model; the tests pass the base model and data root. 12 captioned
# images at batch 2: one epoch is 6 iterations (step6).
_base_ = ["../../configs/v_prediction/stable_diffusion_xl_lora_v_prediction_pokemon_blip.py"]

model = dict(data_preprocessor=dict(dtype="float32"))  # fp32 on CPU
train_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(
    pipeline=[dict(type="LoadImage", color_type="rgb"),
              dict(type="SDXLResizeCrop", size=16, random_crop=True),
              dict(type="PackInputs")]))
optim_wrapper = dict(optimizer=dict(lr=1e-2))
train_cfg = dict(max_epochs=1)
default_hooks = dict(logger=dict(interval=1))
custom_hooks = [
    dict(type="DiffusersExportHook", interval=1, by_epoch=True, use_ema=False),
    dict(type="SampleVisualizationHook", interval=1, by_epoch=True, num_images=2,
         num_inference_steps=2, prompts=["a red digit"]),
]
