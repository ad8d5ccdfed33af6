# Progressive distillation of google/ddpm-cifar10-32 (an epsilon-prediction
# DDPM, 1000 linear-beta steps; hub id or a local copy of the repo), read
# through the shared eps -> x0 conversion; the student predicts v.
# The plan 512 -> 256 -> ... -> 1 puts the grids between the teacher's 1000
# integer steps (spacing 1000/N): trained with fractional t and exported with
# GridDDIMScheduler (exact), which is plain DDIM where N divides 1000.
# Not run in CI (needs the weights and a GPU):
#   mim train diffengine_distill configs/progressive_distillation/pd_ddpm_cifar10.py \
#       --gpus 8 --launcher pytorch
_base_ = [
    "../_base_/models/pd_v_student.py",
    "../_base_/datasets/image_folder_32px.py",
    "../_base_/schedules/pd_adam.py",
    "../_base_/default_runtime.py",
]

teacher = "google/ddpm-cifar10-32"  # or a local folder with unet/ and scheduler/
iters_per_stage = 50000  # the paper's CIFAR-10 budget per halving

model = dict(unet=dict(path=teacher),
             scheduler=dict(path=teacher, class_name="DDPMScheduler"),
             teacher_steps=512)
train_dataloader = dict(batch_size=128, dataset=dict(data_root="data/cifar10/train"))
train_cfg = dict(max_iters=9 * iters_per_stage)  # 9 halvings: 256, 128, ..., 1 steps
default_hooks = dict(checkpoint=dict(interval=5000))
custom_hooks = [
    dict(type="ProgressiveDistillationHook", end_steps=1, iters_per_stage=iters_per_stage),
    dict(type="SampleVisualizationHook", interval=5000, num_images=64),
]
