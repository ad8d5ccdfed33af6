# SFD of google/ddpm-cifar10-32 (epsilon prediction, 1000 linear-beta steps;
# hub id or a local copy) at 2 NFE with the paper's CIFAR-10 settings (sfd-main's
# launch.sh): 200 kimg of trajectories in global batches of 128 (4 GPUs x 32),
# Adam lr 5e-5 (/10 at half), DPM-Solver++(3M) teacher with M = 3, AFS.
# sigma interval: sfd-main's (0.006, 80) within the model's own range, i.e.
# (0.01, 80) for this DDPM (sigma(t = 0) = 0.01). Not run in CI (needs the
# weights and GPUs):
#   mim train diffengine_distill configs/sfd/sfd_ddpm_cifar10.py --gpus 4 --launcher pytorch
# Other process counts keep the global batch: --gpus 8 with
#   --cfg-options train_dataloader.batch_size=16   (1 GPU: ...batch_size=128)
# The first iteration logs processes x batch and stops if it is not 128.
# SFD-v: --cfg-options model.use_step_condition=True and 800 kimg as the
# paper (train_cfg.max_iters=6250 param_scheduler.0.milestones=[3125]
# param_scheduler.0.end=6250), or a leaf config with total_kimg = 800.
_base_ = [
    "../_base_/models/sfd_student.py",
    "../_base_/datasets/noise_16px.py",
    "../_base_/schedules/sfd_adam.py",
    "../_base_/default_runtime.py",
]

teacher = "google/ddpm-cifar10-32"  # or a local folder with unet/ and scheduler/
total_kimg = 200
gpus = 4
batch = 32  # per process: 4 x 32 = 128 trajectories per iteration, as the paper
global_batch = batch * gpus
max_iters = total_kimg * 1000 // global_batch  # 1562

model = dict(unet=dict(path=teacher), scheduler=dict(path=teacher, class_name="DDPMScheduler"),
             global_batch=global_batch)
train_dataloader = dict(batch_size=batch, dataset=dict(shape=(3, 32, 32)))
param_scheduler = [dict(type="MultiStepLR", by_epoch=False, milestones=[max_iters // 2],
                        gamma=0.1, end=max_iters)]
train_cfg = dict(max_iters=max_iters)
default_hooks = dict(checkpoint=dict(interval=200))
custom_hooks = [
    dict(type="DiffusersExportHook", interval=500, use_ema=False),
    dict(type="SampleVisualizationHook", interval=200, num_images=64),
]
