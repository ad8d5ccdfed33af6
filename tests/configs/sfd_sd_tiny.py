# A seconds-long SFD run of a tiny SD folder on 8 x 8 latent noise with prompts.
_base_ = ["../../configs/sfd/sfd_sd15.py"]

model = dict(M=1, data_preprocessor=dict(dtype="float32"), global_batch=None)
train_dataloader = dict(batch_size=2, dataset=dict(
    shape=(4, 8, 8), prompts=["a red digit", "a blue digit", "a seven"]))
param_scheduler = [dict(type="MultiStepLR", by_epoch=False, milestones=[2], end=4, gamma=0.1)]
train_cfg = dict(max_iters=4)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
custom_hooks = [dict(type="DiffusersExportHook", interval=4, use_ema=False)]
