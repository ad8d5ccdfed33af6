# Two seconds-long stages of guided PD on a tiny SD folder: stage 0 (guidance
# into the w embedding, 8 steps) and 8 -> 4 steps; paths from the tests.
_base_ = ["../../configs/progressive_distillation/pd_sd15.py"]

model = dict(teacher_steps=8, data_preprocessor=dict(dtype="float32"))
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False, dataset=dict(
    pipeline=[dict(type="LoadImage", color_type="rgb"),
              dict(type="SDXLResizeCrop", size=16), dict(type="PackInputs")]))
train_cfg = dict(max_iters=4)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
custom_hooks = [dict(type="ProgressiveDistillationHook", end_steps=4, iters_per_stage=2)]
