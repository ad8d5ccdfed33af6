# A small pixel UNet (1.1M parameters, attention at 4x4) for 16x16 one-channel
# digits, trained as a v-prediction model on a 1024-step cosine schedule:
# 1024 = 2^10, so every progressive-distillation halving down to 1 step lands
# on integer timesteps. Trained on continuous t so fractional grids work too.
model = dict(
    type="DiffusionModel",
    unet=dict(
        type="UNet2DModel",
        sample_size=16,
        in_channels=1,
        out_channels=1,
        layers_per_block=1,
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        attention_head_dim=32,
    ),
    scheduler=dict(type="DDPMScheduler", num_train_timesteps=1024,
                   beta_schedule="squaredcos_cap_v2", clip_sample=False),
    prediction_type="v_prediction",
    loss=dict(type="DiffusionLoss", weighting="uniform"),
    continuous_time=True,
    # No x0 clipping: diffusers' DDIM clips x0_hat but not eps_hat, which
    # speckles long (1000-step) samples; the unclipped ODE is what PD distils.
    sampler=dict(clip_sample=False, num_inference_steps=50),
)
