# Progressive distillation of google/ddpm-cifar10-32 (an epsilon-prediction
# DDPM, 1000 linear-beta steps; hub id or a local copy of the repo), read
# through the shared eps -> x0 conversion. The student predicts v (the paper's
# choice: an eps student at 1 step divides its error by alpha_999 = 0.0064), so
# a conversion stage 0 first teaches it the teacher's output as v at every t
# (an eps net's weights read as v are not the teacher), then 9 halvings.
# The plan 512 -> 256 -> ... -> 1 puts the grids between the teacher's 1000
# integer steps (spacing 1000/N): trained with fractional t and exported with
# GridDDIMScheduler (exact), which is plain DDIM where N divides 1000.
# Batch: train_dataloader.batch_size is PER PROCESS. The paper's global batch
# is 128: 16 per process on 8 GPUs (or batch_size=128 on one GPU).
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
             teacher_steps=512,
             stage0_clip_x0=1.0)  # pixels in [-1, 1]: sane stage-0 targets at high t
train_dataloader = dict(batch_size=16, dataset=dict(data_root="data/cifar10/train"))  # x 8 GPUs
# conversion stage 0 (512 steps, eps -> v), then 9 halvings: 256, 128, ..., 1 steps
train_cfg = dict(max_iters=10 * iters_per_stage)
default_hooks = dict(checkpoint=dict(interval=5000))
custom_hooks = [
    dict(type="ProgressiveDistillationHook", end_steps=1, iters_per_stage=iters_per_stage),
    dict(type="SampleVisualizationHook", interval=5000, num_images=64),
]
