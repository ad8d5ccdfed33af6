# SFD-v of Stable Diffusion 1.5: one student for 2..5 NFE (num_steps drawn
# from 4..7 per iteration), 4x SFD's trajectories as sfd-main's SFD-v (800 vs
# 200 kimg on CIFAR-10; here 80 vs 20). The step count's embedding row is
# folded into each export's UNet: step<N>/ samples 2 NFE; step<N>/unet_nfe<k>/
# is the UNet for k NFE:
#   pipe.unet = UNet2DConditionModel.from_pretrained(export, subfolder="unet_nfe3")
#   pipe(prompt, num_inference_steps=3)
# `batch` is per process: 8 x 16 = 128 trajectories per iteration.
#   mim train diffengine_distill configs/sfd/sfd_v_sd15.py --gpus 8 --launcher pytorch --amp
_base_ = ["./sfd_sd15.py"]

total_kimg = 80
gpus = 8
batch = 16  # per process
global_batch = batch * gpus
max_iters = total_kimg * 1000 // global_batch  # 625

model = dict(use_step_condition=True, step_range=(4, 7), global_batch=global_batch)
train_dataloader = dict(batch_size=batch)
param_scheduler = [dict(type="MultiStepLR", by_epoch=False, milestones=[max_iters // 2],
                        gamma=0.1, end=max_iters)]
train_cfg = dict(max_iters=max_iters)
custom_hooks = [
    dict(type="DiffusersExportHook", interval=max_iters, use_ema=False),
    dict(type="SampleVisualizationHook", interval=50, num_images=4, prompts=["yoda pokemon"]),
]
