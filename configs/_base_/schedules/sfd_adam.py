# SFD: Adam with the paper's defaults, LR / 10 at half of training, no EMA.
# One iteration = one batch of trajectories = num_steps - 1 (- AFS) updates.
# Batch sizes: `batch` (mmengine's train_dataloader.batch_size) is PER PROCESS;
# sfd-main's --batch 128 and total_kimg count trajectories over ALL processes
# (global batch = batch x processes). Leaves recompute the derived lines when
# they change total_kimg/batch/gpus/lr:
#   global_batch = batch * gpus; max_iters = total_kimg * 1000 // global_batch
total_kimg = 200  # trajectories (x 1000) to train on, all processes together
batch = 128       # per process
gpus = 1          # processes the config's command launches (mim train --gpus)
global_batch = batch * gpus
lr = 5e-5
max_iters = total_kimg * 1000 // global_batch

optim_wrapper = dict(
    type="GuardedOptimWrapper",  # skips NaN/Inf losses, stops after 5 in a row
    optimizer=dict(type="Adam", lr=lr, betas=(0.9, 0.999), eps=1e-8),
)
# end is explicit so that a run stopped early and resumed keeps the schedule.
param_scheduler = [dict(type="MultiStepLR", by_epoch=False, milestones=[max_iters // 2],
                        gamma=0.1, end=max_iters)]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters)
