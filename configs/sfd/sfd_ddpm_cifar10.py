# SFD of google/ddpm-cifar10-32 (epsilon prediction, 1000 linear-beta steps;
# hub id or a local copy) at 2 NFE with the paper's CIFAR-10 settings: 200
# kimg of trajectories, batch 128, Adam lr 5e-5 (/10 at half), DPM-Solver++(3M)
# teacher with M = 3, AFS. The sigma interval is the model's own: (0.01, 80).
# Not run in CI (needs the weights and a GPU):
#   mim train diffengine_distill configs/sfd/sfd_ddpm_cifar10.py --gpus 4 --launcher pytorch
# SFD-v: --cfg-options model.use_step_condition=True (and 800 kimg as the paper).
_base_ = [
    "../_base_/models/sfd_student.py",
    "../_base_/datasets/noise_16px.py",
    "../_base_/schedules/sfd_adam.py",
    "../_base_/default_runtime.py",
]

teacher = "google/ddpm-cifar10-32"  # or a local folder with unet/ and scheduler/

model = dict(unet=dict(path=teacher), scheduler=dict(path=teacher, class_name="DDPMScheduler"))
train_dataloader = dict(dataset=dict(shape=(3, 32, 32)))
default_hooks = dict(checkpoint=dict(interval=200))
custom_hooks = [
    dict(type="DiffusersExportHook", interval=500, use_ema=False),
    dict(type="SampleVisualizationHook", interval=200, num_images=64),
]
