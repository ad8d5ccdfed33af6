# SFD-v of Stable Diffusion 1.5: one student for 2..5 NFE (num_steps drawn
# from 4..7 per iteration), 4x SFD's images as sfd-main's SFD-v (800 vs 200
# kimg). The step count's embedding row is folded into each export's UNet:
# step<N>/ samples 2 NFE; step<N>/unet_nfe<k>/ is the UNet for k NFE:
#   pipe.unet = UNet2DConditionModel.from_pretrained(export, subfolder="unet_nfe3")
#   pipe(prompt, num_inference_steps=3)
_base_ = ["./sfd_sd15.py"]

model = dict(use_step_condition=True, step_range=(4, 7))
total_kimg = 80
batch = 16
max_iters = total_kimg * 1000 // batch
param_scheduler = [dict(type="MultiStepLR", by_epoch=False, milestones=[max_iters // 2],
                        gamma=0.1, end=max_iters)]
train_cfg = dict(max_iters=max_iters)
custom_hooks = [
    dict(type="DiffusersExportHook", interval=max_iters, use_ema=False),
    dict(type="SampleVisualizationHook", interval=250, num_images=4, prompts=["yoda pokemon"]),
]
