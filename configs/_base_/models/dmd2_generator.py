# DMD2's refinements of the DMD generator (NeurIPS 2024): no regression pairs,
# five critic updates per generator update (TTUR), and the GAN term (a
# classifier on the critic's mid-block features, trained on real images).
_base_ = ["./dmd_generator.py"]

model = dict(
    regression_weight=0.0,
    critic_updates_per_generator=5,
    gan_generator_weight=3e-3,
    gan_critic_weight=1e-2,
)
# With model.gan_start_iter > 0 the GAN head gets no gradient before that
# iteration: DDP must allow unused parameters (else "Expected to have finished
# reduction in the prior iteration" on 2+ processes).
model_wrapper_cfg = dict(type="MMSeparateDistributedDataParallel", find_unused_parameters=True)
