# SFD of the digits teacher to 2 NFE (num_steps=4 with AFS), the paper's
# defaults otherwise. Train the teacher first:
#   mim train diffengine_distill configs/teachers/ddpm_v_digits.py
#   mim train diffengine_distill configs/sfd/sfd_digits.py
# Other NFEs: --cfg-options model.num_steps=5 (3 NFE), 6 (4 NFE), 7 (5 NFE).
_base_ = [
    "../_base_/models/sfd_student.py",
    "../_base_/datasets/noise_16px.py",
    "../_base_/schedules/sfd_adam.py",
    "../_base_/default_runtime.py",
]

teacher = "work_dirs/ddpm_v_digits/step2500"
# A 1.1M-parameter model on CPU: fewer trajectories and a larger LR than the
# paper's 200 kimg at 5e-5 for a 56M-parameter CIFAR-10 UNet.
total_kimg = 20
batch = 128  # per process; one process (CPU): global batch 128 as the paper
gpus = 1
global_batch = batch * gpus
lr = 2e-4
max_iters = total_kimg * 1000 // global_batch

model = dict(unet=dict(path=teacher), scheduler=dict(path=teacher))
train_dataloader = dict(batch_size=batch)
optim_wrapper = dict(optimizer=dict(lr=lr))
# end is explicit so that a run stopped early and resumed keeps the training schedule.
param_scheduler = [dict(type="MultiStepLR", by_epoch=False, milestones=[max_iters // 2],
                        gamma=0.1, end=max_iters)]
train_cfg = dict(max_iters=max_iters)

default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=50))
custom_hooks = [
    dict(type="DiffusersExportHook", interval=max_iters, use_ema=False),
    dict(type="SampleVisualizationHook", interval=50, num_images=64),
]
