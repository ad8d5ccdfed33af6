# DMD (one step, distribution matching + regression) of Stable Diffusion 1.5,
# as the paper's LAION model: dmd2_sd15.py without DMD2's refinements (no
# TTUR, no GAN term), real score with CFG 3, lambda_reg 0.25 on teacher ODE
# pairs (PNDM, 50 steps, guidance 3; the paper: 500k pairs of
# LAION-Aesthetic 6.25+ prompts), LPIPS on the pairs decoded by the tiny VAE,
# AdamW lr 1e-5 with 500 warm-up iterations. Make the pairs, then distil:
#   python tools/make_pairs.py stable-diffusion-v1-5/stable-diffusion-v1-5 --out work_dirs/pairs/sd15 \
#       --prompts data/prompts.txt --guidance-scale 3 --solver pndm --steps 50 \
#       --seeds 0-499999 --device cuda --dtype float16 --batch-size 64
# Batch: train_dataloader.batch_size is PER PROCESS: 4 x 8 GPUs = 32 global here.
#   mim train diffengine_distill dmd_sd15.py --gpus 8 --launcher pytorch --amp
# The paper draws separate batches for the DM loss (2304) and the regression
# (1152); here both use the pairs' batch (the pairs' prompts and fresh noise
# for the DM loss). Sample the export with guidance_scale=1.
_base_ = ["./dmd2_sd15.py"]

model = dict(
    real_guidance_scale=3.0,
    regression_weight=0.25,
    regression_loss="lpips",
    regression_vae=dict(path="madebyollin/taesd", class_name="AutoencoderTiny"),
    critic_updates_per_generator=1,
    gan_generator_weight=0.0,
    gan_critic_weight=0.0,
    gan_start_iter=0,
    gradient_checkpointing=True,
)
train_dataloader = dict(batch_size=4, dataset=dict(
    _delete_=True, type="PairsDataset", path="work_dirs/pairs/sd15"))
param_scheduler = [dict(type="LinearLR", start_factor=1e-3, by_epoch=False, begin=0, end=500)]
train_cfg = dict(max_iters=20000)
