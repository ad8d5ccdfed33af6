# SDXL with LoRA adapters on its UNet (PEFT); both text encoders and the VAE
# frozen (the fp16-safe VAE the diffengine recipe uses). model.base_model sets
# the UNet, noise schedule and text encoders at once; model.unet.path,
# model.scheduler.path, model.data_preprocessor.model override single parts.
model = dict(
    type="DiffusionModel",
    base_model="stabilityai/stable-diffusion-xl-base-1.0",
    unet=dict(type="pretrained", subfolder="unet"),
    scheduler=dict(type="pretrained", class_name="DDPMScheduler"),
    data_preprocessor=dict(type="StableDiffusionDataPreprocessor",
                           vae="madebyollin/sdxl-vae-fp16-fix"),
    lora_config=dict(r=8, lora_alpha=8, init_lora_weights="gaussian",
                     target_modules=["to_q", "to_k", "to_v", "to_out.0"]),
    loss=dict(type="DiffusionLoss", weighting="uniform"),
    sampler=dict(num_inference_steps=50),
)
