# SFD-v: one digits student for 2..5 NFE (num_steps drawn from 4..7 per
# iteration, fed to the UNet as a step condition); 4x SFD's trajectories as
# in the paper (800 vs 200 kimg). Sample any trained NFE from the export:
#   python tools/sample.py work_dirs/sfd_v_digits --steps 3
_base_ = ["./sfd_digits.py"]

total_kimg = 80
batch = 128  # per process, one process
gpus = 1
global_batch = batch * gpus
max_iters = total_kimg * 1000 // global_batch

model = dict(use_step_condition=True, step_range=(4, 7))
# end is explicit so that a run stopped early and resumed keeps the training schedule.
param_scheduler = [dict(type="MultiStepLR", by_epoch=False, milestones=[max_iters // 2],
                        gamma=0.1, end=max_iters)]
train_cfg = dict(max_iters=max_iters)
