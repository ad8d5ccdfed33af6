# Seconds-long sharded SFD runs of a tiny SDXL folder on 8 x 8 latent noise.
# SGD with momentum instead of Adam: its update is linear in the gradient, so
# weights of runs with different process counts agree to rounding (Adam's
# first steps are sign-like and flip on gradients within rounding of zero).
_base_ = ["../../configs/sfd/sfd_sdxl.py", "../../configs/_base_/strategies/fsdp.py"]

model = dict(M=1, data_preprocessor=dict(dtype="float32", vae=None), global_batch=None)
train_dataloader = dict(batch_size=2, dataset=dict(
    shape=(4, 8, 8), prompts=["a red digit", "a blue digit", "a seven"]))
# A small clip_grad max_norm clips every step: the norm must be the global one.
optim_wrapper = dict(optimizer=dict(_delete_=True, type="SGD", lr=0.05, momentum=0.9),
                     clip_grad=dict(max_norm=0.05))
param_scheduler = None
train_cfg = dict(max_iters=3)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=3))
custom_hooks = [dict(type="DiffusersExportHook", interval=3, use_ema=False)]
