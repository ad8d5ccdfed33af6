# DMD2's SDXL recipe, step 1: regression-only pre-training of the one-step
# generator on teacher ODE pairs (tianweiy/DMD2, sdxl_lr1e-5_8node_ode_pretraining_
# 10k_cond399: 10k pairs, LPIPS through the tiny VAE, lr 1e-5, the generator's
# input labelled t = 399; the official run keeps its iteration-2000 checkpoint).
# No distribution matching, no critic (dm_weight=0). Then step 2, dmd2_sdxl.py
# started from this export:
#   python tools/make_pairs.py stabilityai/stable-diffusion-xl-base-1.0 \
#       --out work_dirs/pairs/sdxl --prompts data/prompts.txt --guidance-scale 8 \
#       --seeds 0-9999 --device cuda --dtype float16
#   mim train diffengine_distill dmd_sdxl_ode_pretrain.py --gpus 8 --launcher pytorch --amp
#   mim train diffengine_distill dmd2_sdxl.py --gpus 8 --launcher pytorch --amp \
#       --cfg-options model.generator_init=work_dirs/dmd_sdxl_ode_pretrain/step2000
# Batch: PER PROCESS; officially 4 pairs per GPU on 64 GPUs = 256 global.
_base_ = ["./dmd2_sdxl.py"]

model = dict(
    dm_weight=0.0,
    regression_weight=1.0,
    regression_loss="lpips",
    regression_vae=dict(path="madebyollin/taesdxl", class_name="AutoencoderTiny"),
    critic_updates_per_generator=1,
    gan_generator_weight=0.0,
    gan_critic_weight=0.0,
)
_optimizer = dict(type="AdamW", lr=1e-5, betas=(0.9, 0.999), weight_decay=0.01)
optim_wrapper = dict(generator=dict(optimizer=_optimizer), critic=dict(optimizer=_optimizer))
param_scheduler = None  # constant LR
train_cfg = dict(max_iters=2000)
train_dataloader = dict(batch_size=4, dataset=dict(
    _delete_=True, type="PairsDataset", path="work_dirs/pairs/sdxl"))
default_hooks = dict(checkpoint=dict(interval=500))
custom_hooks = [
    dict(type="DiffusersExportHook", interval=500, use_ema=False),
    dict(type="SampleVisualizationHook", interval=500, num_images=4,
         prompts=["yoda pokemon"], guidance_scale=1.0),
]
