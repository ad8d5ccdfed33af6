# SFD of Stable Diffusion 1.5 at 2 NFE (num_steps=4 with AFS), as sfd-main's
# SD setting: sigma in [0.1, 14.61] (sigma_min 0.1 for SD-class teachers,
# sigma_max = sigma(t = 999)), global batch 128, the teacher's DPM-Solver++
# without thresholding (latents), guidance 1 while training; the export guides
# at sampling (StableDiffusionPipeline's guidance_scale; CFG doubles the batch
# of each UNet call, not the number of calls).
#   mim train diffengine_distill configs/sfd/sfd_sd15.py --gpus 8 --launcher pytorch --amp
# `batch` is per process: 8 x 16 = 128 trajectories per iteration. Other
# process counts keep 128 with --cfg-options train_dataloader.batch_size=128/N;
# the first iteration logs processes x batch and stops if it is not 128.
_base_ = [
    "../_base_/models/sfd_student.py",
    "../_base_/datasets/prompts_noise_sd15.py",
    "../_base_/schedules/sfd_adam.py",
    "../_base_/default_runtime.py",
]

total_kimg = 20  # trajectories (x 1000), all processes together
gpus = 8
batch = 16  # per process
global_batch = batch * gpus
max_iters = total_kimg * 1000 // global_batch  # 156

model = dict(
    base_model="stable-diffusion-v1-5/stable-diffusion-v1-5",  # teacher: UNet, VAE, text
    scheduler=dict(class_name="DDPMScheduler"),
    data_preprocessor=dict(type="StableDiffusionDataPreprocessor", dtype="bfloat16"),
    thresholding=False,
    global_batch=global_batch,
)
train_dataloader = dict(batch_size=batch)
param_scheduler = [dict(type="MultiStepLR", by_epoch=False, milestones=[max_iters // 2],
                        gamma=0.1, end=max_iters)]
train_cfg = dict(max_iters=max_iters)
default_hooks = dict(checkpoint=dict(interval=50))
custom_hooks = [
    dict(type="DiffusersExportHook", interval=max_iters, use_ema=False),
    dict(type="SampleVisualizationHook", interval=50, num_images=4, prompts=["yoda pokemon"]),
]
