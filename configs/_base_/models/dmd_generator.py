# DMD generator of a pretrained teacher, with the paper's defaults (DMD,
# CVPR 2024). Leaves set the teacher (model.unet.path, model.scheduler.path);
# DMD2 leaves switch off the regression loss and turn on TTUR and the GAN term.
model = dict(
    type="DMD",
    unet=dict(type="pretrained", path=None, subfolder="unet"),
    scheduler=dict(type="pretrained", path=None),
    num_generator_steps=1,          # k > 1: DMD2's multi-step generator (backward simulation)
    dm_t_range=(0.02, 0.98),        # DM loss timesteps, fractions of T
    real_guidance_scale=1.0,        # CFG on the real score only
    critic_loss=dict(type="DiffusionLoss", weighting="snr"),  # eps-MSE on generator samples
    regression_weight=0.25,         # lambda_reg on the teacher ODE pairs
    regression_loss="lpips",        # lpips | l2 | l1 (explicit fallbacks without LPIPS weights)
    critic_updates_per_generator=1,  # DMD2: 5 (two time-scale update rule)
    gan_generator_weight=0.0,       # DMD2: 3e-3
    gan_critic_weight=0.0,          # DMD2: 1e-2
)
# DMD updates inside its own train_step, which mmengine's default DDP wrapper
# bypasses: wrap the generator and the critic separately.
model_wrapper_cfg = dict(type="MMSeparateDistributedDataParallel")
