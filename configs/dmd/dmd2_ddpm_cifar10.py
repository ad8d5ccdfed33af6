# DMD2 of google/ddpm-cifar10-32: no regression, TTUR 5, GAN term on real
# CIFAR-10 images (an image folder at data/cifar10/train), AdamW 2e-6 as the
# paper's ImageNet run. Not run in CI:
# Batch: train_dataloader.batch_size (64, image_folder_32px.py) is PER PROCESS:
# 8 GPUs x 64 = 512 global.
#   mim train diffengine_distill configs/dmd/dmd2_ddpm_cifar10.py --gpus 8 --launcher pytorch
_base_ = [
    "../_base_/models/dmd2_generator.py",
    "../_base_/datasets/image_folder_32px.py",
    "../_base_/schedules/dmd_adamw.py",
    "../_base_/default_runtime.py",
]

teacher = "google/ddpm-cifar10-32"
# The generator reads its output as v: an eps output at t=999 of this linear
# schedule reaches x0 scaled by 1/alpha = 157 (on the eps digits teacher an eps
# generator stalls, a v one trains; docs/benchmarks.md). EDM, the papers'
# CIFAR/ImageNet teachers, is likewise well-conditioned there.
model = dict(unet=dict(path=teacher),
             scheduler=dict(path=teacher, class_name="DDPMScheduler"),
             generator_prediction_type="v_prediction")
_optimizer = dict(type="AdamW", lr=2e-6, betas=(0.9, 0.999), weight_decay=0.01)
optim_wrapper = dict(generator=dict(optimizer=_optimizer), critic=dict(optimizer=_optimizer))
train_cfg = dict(max_iters=200000)
train_dataloader = dict(dataset=dict(data_root="data/cifar10/train"))
default_hooks = dict(checkpoint=dict(interval=1000))
custom_hooks = [
    dict(type="DiffusersExportHook", interval=5000, use_ema=False),
    dict(type="SampleVisualizationHook", interval=1000, num_images=64),
]
