# SDXL switched to v-prediction and fine-tuned with LoRA on Pokémon captions
# (diffengine's recipe). Train:
#   mim train diffengine_distill stable_diffusion_xl_lora_v_prediction_pokemon_blip.py
# Use (the adapter of work_dirs/<this config>/step<N>):
#   pipe = DiffusionPipeline.from_pretrained(base, vae=vae, torch_dtype=torch.float16)
#   pipe.scheduler = pipe.scheduler.from_config(pipe.scheduler.config,
#                                               prediction_type="v_prediction")
#   pipe.unet = PeftModel.from_pretrained(pipe.unet, work_dir / "step<N>" / "unet",
#                                         adapter_name="default")
# or pipe.load_lora_weights(work_dir / "step<N>").
_base_ = [
    "../_base_/models/stable_diffusion_xl_lora.py",
    "../_base_/datasets/pokemon_blip_512.py",
    "../_base_/schedules/lora_adamw.py",
    "../_base_/default_runtime.py",
]

model = dict(prediction_type="v_prediction",
             data_preprocessor=dict(dtype="bfloat16"))  # frozen VAE/text encoders
train_dataloader = dict(dataset=dict(pipeline=[
    dict(type="LoadImage", color_type="rgb"),
    dict(type="SDXLResizeCrop", size=1024, random_crop=True, flip_prob=0.5),
    dict(type="PackInputs"),
]))
default_hooks = dict(checkpoint=dict(interval=1000))
custom_hooks = [
    dict(type="DiffusersExportHook", interval=1000, use_ema=False),
    dict(type="SampleVisualizationHook", interval=1000, num_images=4,
         prompts=["yoda pokemon"]),
]
