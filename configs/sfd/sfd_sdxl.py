# SFD of SDXL at 2 NFE on 1024 px latent noise (4 x 128 x 128). SDXL is not
# in sfd-main; its SD rules apply (sigma_min 0.1, sigma_max = sigma(t = 999)).
# `batch` is per process: 8 x 4 = 32 trajectories per iteration.
#   mim train diffengine_distill configs/sfd/sfd_sdxl.py --gpus 8 --launcher pytorch --amp
_base_ = ["./sfd_sd15.py"]

total_kimg = 20
gpus = 8
batch = 4  # per process
global_batch = batch * gpus
max_iters = total_kimg * 1000 // global_batch  # 625

model = dict(base_model="stabilityai/stable-diffusion-xl-base-1.0",
             data_preprocessor=dict(vae="madebyollin/sdxl-vae-fp16-fix"),
             global_batch=global_batch)
train_dataloader = dict(batch_size=batch, dataset=dict(shape=(4, 128, 128)))
param_scheduler = [dict(type="MultiStepLR", by_epoch=False, milestones=[max_iters // 2],
                        gamma=0.1, end=max_iters)]
train_cfg = dict(max_iters=max_iters)
custom_hooks = [
    dict(type="DiffusersExportHook", interval=max_iters, use_ema=False),
    dict(type="SampleVisualizationHook", interval=50, num_images=4, prompts=["yoda pokemon"]),
]
