# DMD2 of SDXL, one step, with the official SDXL recipe (tianweiy/DMD2,
# experiments/sdxl, sdxl_cond399_..._gan5e-3_guidance8): pure noise goes in
# labelled t = 399 (conditioning_timestep) and x0 is read at 399, real-score
# CFG 8 (unconditional input: zeros, as diffusers' SDXL pipeline), 5 critic
# updates per generator update, GAN term from the start (generator 5e-3, critic
# 1e-2), lr 5e-7 for both networks with a 500-iteration warm-up, 1024 px.
# The export samples one DDIM step from t = 399 (leading grid, steps_offset 399):
#   pipe(prompt, num_inference_steps=1, guidance_scale=1.0)
# Officially the generator starts from ~2k iterations of LPIPS regression on 10k
# teacher ODE pairs at t = 399 (lr 1e-5): dmd_sdxl_ode_pretrain.py, then add
# --cfg-options model.generator_init=work_dirs/dmd_sdxl_ode_pretrain/step2000
# (without it the generator starts from the teacher).
# Batch: PER PROCESS (officially 2 per GPU on 64 GPUs = 128 global):
#   mim train diffengine_distill dmd2_sdxl.py --gpus 8 --launcher pytorch --amp
_base_ = ["./dmd2_sd15.py"]

model = dict(base_model="stabilityai/stable-diffusion-xl-base-1.0",
             data_preprocessor=dict(vae="madebyollin/sdxl-vae-fp16-fix"),
             real_guidance_scale=8.0,
             generator_timestep=399,
             critic_updates_per_generator=5,
             gan_generator_weight=5e-3,
             gan_critic_weight=1e-2,
             gan_start_iter=0)
_optimizer = dict(type="AdamW", lr=5e-7, betas=(0.9, 0.999), weight_decay=0.01)
optim_wrapper = dict(generator=dict(optimizer=_optimizer), critic=dict(optimizer=_optimizer))
param_scheduler = [dict(type="LinearLR", start_factor=1e-3, by_epoch=False, begin=0, end=500)]
train_cfg = dict(max_iters=20000)
train_dataloader = dict(batch_size=1, dataset=dict(pipeline=[
    dict(type="LoadImage", color_type="rgb"),
    dict(type="SDXLResizeCrop", size=1024, random_crop=True, flip_prob=0.5),
    dict(type="PackInputs"),
]))
