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
