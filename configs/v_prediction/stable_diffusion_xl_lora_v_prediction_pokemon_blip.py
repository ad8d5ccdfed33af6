# diffengine's stable_diffusion_xl_lora_v_prediction_pokemon_blip recipe: LoRA
# (rank 8) on ptx0/terminus-xl-gamma-v1, an SDXL trained for v-prediction,
# with the fp16-fix VAE; 50 epochs of the 833 Pokémon captions at batch 2,
# fp16 mixed precision. On one GPU the exports are step417 ... step20850
# (every epoch), as diffengine's. Train:
#   mim train diffengine_distill stable_diffusion_xl_lora_v_prediction_pokemon_blip.py
# Use: configs/v_prediction/README.md (diffengine's snippet loads step<N>/unet).
_base_ = [
    "../_base_/models/stable_diffusion_xl_lora.py",
    "../_base_/datasets/pokemon_blip_512.py",
    "../_base_/schedules/lora_adamw_50e.py",
    "../_base_/default_runtime.py",
]

model = dict(base_model="ptx0/terminus-xl-gamma-v1",
             prediction_type="v_prediction",
             data_preprocessor=dict(dtype="float16"))  # the frozen VAE and text encoders
train_dataloader = dict(
    batch_size=2,  # per process
    sampler=dict(_delete_=True, type="DefaultSampler", shuffle=True),
    dataset=dict(pipeline=[
        dict(type="LoadImage", color_type="rgb"),
        dict(type="SDXLResizeCrop", size=1024, random_crop=True, flip_prob=0.5),
        dict(type="PackInputs"),
    ]))
default_hooks = dict(checkpoint=dict(interval=1, by_epoch=True, max_keep_ckpts=3))
custom_hooks = [
    dict(type="DiffusersExportHook", interval=1, by_epoch=True, use_ema=False),
    dict(type="SampleVisualizationHook", interval=1, by_epoch=True, num_images=4,
         prompts=["yoda pokemon"]),
]
