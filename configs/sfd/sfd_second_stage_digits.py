# Second-stage SFD: a 1-NFE student (num_steps=3 with AFS) of the first-stage
# SFD-v model, whose Euler trajectory on (M+1)(3-1)+1 = 7 timestamps is the
# teacher (its step schedule, AFS and step condition are read from its export).
#   mim train diffengine_distill configs/sfd/sfd_v_digits.py
#   mim train diffengine_distill configs/sfd/sfd_second_stage_digits.py
_base_ = ["./sfd_digits.py"]

teacher = "work_dirs/sfd_v_digits/step625"
total_kimg = 80
lr = 5e-4  # the paper's second-stage LR
batch = 128  # per process, one process
gpus = 1
global_batch = batch * gpus
max_iters = total_kimg * 1000 // global_batch

# SFDSecondStage ignores the first-stage options inherited from sfd_digits.py
# (teacher solver, step schedule, sigma interval): they come from the export.
model = dict(type="SFDSecondStage", unet=dict(path=teacher), scheduler=dict(path=teacher),
             num_steps=3, M=2,
             # No LPIPS weights ship with the package: L1 alone on the last
             # step. With `pip install lpips` and its weights cached, use "lpips".
             last_step_loss="l1")
optim_wrapper = dict(optimizer=dict(lr=lr))
# end is explicit so that a run stopped early and resumed keeps the training schedule.
param_scheduler = [dict(type="MultiStepLR", by_epoch=False, milestones=[max_iters // 2],
                        gamma=0.1, end=max_iters)]
train_cfg = dict(max_iters=max_iters)
