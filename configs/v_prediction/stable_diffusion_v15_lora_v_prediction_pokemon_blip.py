# Stable Diffusion 1.5 switched to v-prediction with zero terminal SNR
# (rescaled betas, trailing timesteps, as the v-prediction papers recommend)
# and fine-tuned with LoRA on Pokémon captions. Use the adapter as in the
# SDXL config, with this scheduler:
#   pipe.scheduler = DDIMScheduler.from_pretrained(work_dir / "step<N>", subfolder="scheduler")
_base_ = [
    "../_base_/models/stable_diffusion_v15_lora.py",
    "../_base_/datasets/pokemon_blip_512.py",
    "../_base_/schedules/lora_adamw.py",
    "../_base_/default_runtime.py",
]

model = dict(prediction_type="v_prediction",
             scheduler=dict(rescale_betas_zero_snr=True, timestep_spacing="trailing"))
default_hooks = dict(checkpoint=dict(interval=1000))
custom_hooks = [
    dict(type="DiffusersExportHook", interval=1000, use_ema=False),
    dict(type="SampleVisualizationHook", interval=1000, num_images=4,
         prompts=["yoda pokemon"]),
]
