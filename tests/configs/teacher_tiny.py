# A seconds-long version of configs/teachers/ddpm_v_digits.py for the tests.
_base_ = ["../../configs/teachers/ddpm_v_digits.py"]

model = dict(
    unet=dict(sample_size=8, block_out_channels=(8, 16),
              down_block_types=("DownBlock2D", "AttnDownBlock2D"),
              up_block_types=("AttnUpBlock2D", "UpBlock2D"),
              norm_num_groups=4, attention_head_dim=8),
    sampler=dict(num_inference_steps=4),
)
train_dataloader = dict(batch_size=16, dataset=dict(resolution=8))
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [dict(type="ConstantLR", factor=1.0, by_epoch=False)]
train_cfg = dict(max_iters=6)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
custom_hooks = [
    dict(type="EMAHook", momentum=0.1, update_buffers=False, priority="NORMAL"),
    dict(type="DiffusersExportHook", interval=3),
    dict(type="SampleVisualizationHook", interval=3, num_images=4),
]
