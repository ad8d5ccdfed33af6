# DMD2 of Stable Diffusion 1.5 with the official SD 1.5 recipe (tianweiy/DMD2,
# experiments/sdv1.5): one-step generator at t = 999, real score with CFG 1.75
# (unconditional input: the encoded empty prompt), fake score at guidance 1,
# 10 critic updates per generator update, and two phases in one run:
#   phase 1, iterations 0..gan_start: no GAN term, lr 1e-5 (officially 39k iterations);
#   phase 2, from gan_start: GAN term (generator 1e-3, critic 1e-2), lr 5e-7.
# The LR warms up linearly over 500 iterations (diffusers' constant_with_warmup).
# Sample the export with guidance_scale=1.
# Batch: train_dataloader.batch_size is PER PROCESS (global = batch_size x
# processes). Officially 32 per GPU on 64 GPUs = 2048 global; the command below
# gives 8 x 2 = 16 (set batch_size for your memory; scale gan_start with it):
#   mim train diffengine_distill dmd2_sd15.py --gpus 8 --launcher pytorch --amp
_base_ = [
    "../_base_/models/dmd2_generator.py",
    "../_base_/datasets/pokemon_blip_512.py",
    "../_base_/schedules/dmd_adamw.py",
    "../_base_/default_runtime.py",
]

gan_start = 39000  # the official phase-1 checkpoint (checkpoint_model_039000)
model = dict(
    base_model="stable-diffusion-v1-5/stable-diffusion-v1-5",  # teacher: UNet, VAE, text
    scheduler=dict(class_name="DDPMScheduler"),
    data_preprocessor=dict(type="StableDiffusionDataPreprocessor", dtype="bfloat16"),
    real_guidance_scale=1.75,
    critic_updates_per_generator=10,
    gan_generator_weight=1e-3,
    gan_critic_weight=1e-2,
    gan_start_iter=gan_start,
)
_optimizer = dict(type="AdamW", lr=1e-5, betas=(0.9, 0.999), weight_decay=0.01)
optim_wrapper = dict(generator=dict(optimizer=_optimizer), critic=dict(optimizer=_optimizer))
param_scheduler = [  # applied to both optimizers
    dict(type="LinearLR", start_factor=1e-3, by_epoch=False, begin=0, end=500),
    dict(type="MultiStepLR", milestones=[gan_start], gamma=0.05, by_epoch=False),  # -> 5e-7
]
train_cfg = dict(max_iters=gan_start + 20000)
default_hooks = dict(checkpoint=dict(interval=1000))
custom_hooks = [
    dict(type="DiffusersExportHook", interval=5000, use_ema=False),
    dict(type="SampleVisualizationHook", interval=1000, num_images=4,
         prompts=["yoda pokemon"], guidance_scale=1.0),
]
