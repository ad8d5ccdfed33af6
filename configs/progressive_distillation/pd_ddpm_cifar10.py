# Progressive distillation of google/ddpm-cifar10-32 (an epsilon-prediction
# DDPM, 1000 linear-beta steps; hub id or a local copy of the repo), read
# through the shared eps -> x0 conversion; the student predicts v.
# 1000 = 2^3 x 125, so the exported DDIM grids are exact for 500, 250 and 125
# steps: the plan stops at 125. Not run in CI (needs the weights and a GPU):
#   mim train diffengine_distill configs/progressive_distillation/pd_ddpm_cifar10.py \
#       --gpus 8 --launcher pytorch
_base_ = [
    "../_base_/datasets/image_folder_32px.py",
    "../_base_/schedules/pd_adam.py",
    "../_base_/default_runtime.py",
]

teacher = "google/ddpm-cifar10-32"  # or a local folder with unet/ and scheduler/
iters_per_stage = 50000  # the paper's CIFAR-10 budget per halving

model = dict(
    type="ProgressiveDistillation",
    unet=dict(type="pretrained", path=teacher, subfolder="unet"),
    scheduler=dict(type="pretrained", path=teacher, class_name="DDPMScheduler"),
    teacher_steps=1000,
    student_prediction_type="v_prediction",
    loss=dict(type="DiffusionLoss", weighting="truncated_snr"),
    sampler=dict(clip_sample=True),
)
train_dataloader = dict(batch_size=128, dataset=dict(data_root="data/cifar10/train"))
train_cfg = dict(max_iters=3 * iters_per_stage)
default_hooks = dict(checkpoint=dict(interval=5000))
custom_hooks = [
    dict(type="ProgressiveDistillationHook", end_steps=125, iters_per_stage=iters_per_stage),
    dict(type="SampleVisualizationHook", interval=5000, num_images=64),
]
