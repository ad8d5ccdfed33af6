# Epsilon-prediction teacher on the embedded digits (16x16), trained from
# scratch with the schedule of google/ddpm-*: 1000 linear betas 1e-4..0.02
# and DDPM's plain eps-MSE; otherwise as ddpm_v_digits.py. A small stand-in
# for the eps teachers (google/ddpm-cifar10-32, SD 1.5) that PD and DMD read:
#   mim train diffengine_distill configs/teachers/ddpm_eps_digits.py
# batch_size (64) is per process.
_base_ = ["./ddpm_v_digits.py"]

model = dict(
    scheduler=dict(type="DDPMScheduler", num_train_timesteps=1000, beta_schedule="linear",
                   beta_start=1e-4, beta_end=0.02, clip_sample=False),
    prediction_type="epsilon",
    loss=dict(type="DiffusionLoss", weighting="uniform"),  # the eps-MSE (L_simple)
)
