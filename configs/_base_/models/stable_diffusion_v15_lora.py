# Stable Diffusion 1.5 with LoRA adapters on its UNet (PEFT), VAE and text
# encoder frozen. Leaves set the base model (hub id or a local diffusers
# folder) in the three places it is read:
#   model.unet.path, model.scheduler.path, model.data_preprocessor.model
base_model = "stable-diffusion-v1-5/stable-diffusion-v1-5"
model = dict(
    type="DiffusionModel",
    unet=dict(type="pretrained", path=base_model, subfolder="unet"),
    # SD's folder holds a PNDM sampler; training needs only its noise schedule.
    scheduler=dict(type="pretrained", path=base_model, class_name="DDPMScheduler"),
    data_preprocessor=dict(type="StableDiffusionDataPreprocessor", model=base_model),
    lora_config=dict(r=8, lora_alpha=8, init_lora_weights="gaussian",
                     target_modules=["to_q", "to_k", "to_v", "to_out.0"]),
    loss=dict(type="DiffusionLoss", weighting="uniform"),
    sampler=dict(num_inference_steps=50),
)
