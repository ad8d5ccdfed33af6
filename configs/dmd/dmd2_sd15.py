# DMD2 of Stable Diffusion 1.5: one-step generator at t = 999, real score with
# CFG 1.75 (DMD2's SD 1.5 setting), fake score at guidance 1, TTUR 5, GAN term
# on captioned images. Sample the export with guidance_scale=1.
#   mim train diffengine_distill dmd2_sd15.py --gpus 8 --launcher pytorch --amp
_base_ = [
    "../_base_/models/dmd2_generator.py",
    "../_base_/datasets/pokemon_blip_512.py",
    "../_base_/schedules/dmd_adamw.py",
    "../_base_/default_runtime.py",
]

model = dict(
    base_model="stable-diffusion-v1-5/stable-diffusion-v1-5",  # teacher: UNet, VAE, text
    scheduler=dict(class_name="DDPMScheduler"),
    data_preprocessor=dict(type="StableDiffusionDataPreprocessor", dtype="bfloat16"),
    real_guidance_scale=1.75,
)
_optimizer = dict(type="AdamW", lr=1e-5, betas=(0.9, 0.999), weight_decay=0.01)
optim_wrapper = dict(generator=dict(optimizer=_optimizer), critic=dict(optimizer=_optimizer))
default_hooks = dict(checkpoint=dict(interval=1000))
custom_hooks = [
    dict(type="DiffusersExportHook", interval=5000, use_ema=False),
    dict(type="SampleVisualizationHook", interval=1000, num_images=4,
         prompts=["yoda pokemon"], guidance_scale=1.0),
]
