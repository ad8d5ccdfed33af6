# Stable Diffusion 1.5 with LoRA adapters on its UNet (PEFT), VAE and text
# encoder frozen. One key sets the base model (hub id or local diffusers
# folder): the UNet, the noise schedule, the VAE and the text encoder all
# load from model.base_model (e.g. --cfg-options model.base_model=<folder>);
# model.unet.path, model.scheduler.path, model.data_preprocessor.model
# override single parts.
model = dict(
    type="DiffusionModel",
    base_model="stable-diffusion-v1-5/stable-diffusion-v1-5",
    unet=dict(type="pretrained", subfolder="unet"),
    # SD's folder holds a PNDM sampler; training needs only its noise schedule.
    scheduler=dict(type="pretrained", class_name="DDPMScheduler"),
    data_preprocessor=dict(type="StableDiffusionDataPreprocessor"),
    lora_config=dict(r=8, lora_alpha=8, init_lora_weights="gaussian",
                     target_modules=["to_q", "to_k", "to_v", "to_out.0"]),
    loss=dict(type="DiffusionLoss", weighting="uniform"),
    sampler=dict(num_inference_steps=50),
)
