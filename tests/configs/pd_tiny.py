# Two seconds-long PD stages (8 -> 4 -> 2 steps) on the tiny teacher; the
# tests pass the teacher export with --cfg-options teacher paths.
_base_ = ["../../configs/progressive_distillation/pd_digits.py"]

model = dict(teacher_steps=8, sampler=dict(clip_sample=False))
train_dataloader = dict(batch_size=8, dataset=dict(resolution=8))
optim_wrapper = dict(optimizer=dict(lr=1e-3))
train_cfg = dict(max_iters=6)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
custom_hooks = [
    dict(type="ProgressiveDistillationHook", end_steps=2, iters_per_stage=3),
    dict(type="SampleVisualizationHook", interval=3, num_images=4),
]
