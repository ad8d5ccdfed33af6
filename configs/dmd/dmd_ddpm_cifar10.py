# DMD of google/ddpm-cifar10-32 (unconditional, epsilon prediction, 1000
# linear-beta steps; hub id or a local copy) with the paper's settings: AdamW
# 5e-5, lambda_reg 0.25 with LPIPS on teacher ODE pairs. Not run in CI:
#   python tools/make_pairs.py google/ddpm-cifar10-32 --out work_dirs/pairs/cifar10 \
#       --seeds 0-99999 --steps 64 --device cuda
# Batch: train_dataloader.batch_size (64, pairs_16px.py) is PER PROCESS:
# 4 GPUs x 64 = 256 global.
#   mim train diffengine_distill configs/dmd/dmd_ddpm_cifar10.py --gpus 4 --launcher pytorch
_base_ = [
    "../_base_/models/dmd_generator.py",
    "../_base_/datasets/pairs_16px.py",
    "../_base_/schedules/dmd_adamw.py",
    "../_base_/default_runtime.py",
]

teacher = "google/ddpm-cifar10-32"  # or a local folder with unet/ and scheduler/
# A v-reading generator of this eps teacher: why in dmd2_ddpm_cifar10.py.
model = dict(unet=dict(path=teacher),
             scheduler=dict(path=teacher, class_name="DDPMScheduler"),
             generator_prediction_type="v_prediction")
train_dataloader = dict(dataset=dict(path="work_dirs/pairs/cifar10"))
default_hooks = dict(checkpoint=dict(interval=1000))
custom_hooks = [
    dict(type="DiffusersExportHook", interval=5000, use_ema=False),
    dict(type="SampleVisualizationHook", interval=1000, num_images=64),
]
