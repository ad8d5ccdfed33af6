# SFD of Stable Diffusion 1.5 at 2 NFE (num_steps=4 with AFS): the teacher's
# DPM-Solver++ without thresholding (latents), guidance 1 while training; the
# export guides at sampling (StableDiffusionPipeline's guidance_scale).
#   mim train diffengine_distill sfd_sd15.py --gpus 8 --launcher pytorch --amp
_base_ = [
    "../_base_/models/sfd_student.py",
    "../_base_/datasets/prompts_noise_sd15.py",
    "../_base_/schedules/sfd_adam.py",
    "../_base_/default_runtime.py",
]

base_model = "stable-diffusion-v1-5/stable-diffusion-v1-5"
model = dict(
    unet=dict(path=base_model),
    scheduler=dict(path=base_model, class_name="DDPMScheduler"),
    data_preprocessor=dict(type="StableDiffusionDataPreprocessor", model=base_model,
                           dtype="bfloat16"),
    thresholding=False,
)
total_kimg = 20
batch = 16
max_iters = total_kimg * 1000 // batch
train_dataloader = dict(batch_size=batch)
param_scheduler = [dict(type="MultiStepLR", by_epoch=False, milestones=[max_iters // 2],
                        gamma=0.1, end=max_iters)]
train_cfg = dict(max_iters=max_iters)
default_hooks = dict(checkpoint=dict(interval=250))
custom_hooks = [
    dict(type="DiffusersExportHook", interval=max_iters, use_ema=False),
    dict(type="SampleVisualizationHook", interval=250, num_images=4, prompts=["yoda pokemon"]),
]
