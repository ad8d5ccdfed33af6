# Data-free trajectory distillation (SFD) of a text-to-image teacher: latent
# noise (4 x 64 x 64 = 512 px for SD 1.5) with a prompt per item, cycling
# through a text file with one prompt per line.
train_dataloader = dict(
    batch_size=16,
    num_workers=0,
    sampler=dict(type="InfiniteSampler", shuffle=True, seed=0),
    collate_fn=dict(type="pseudo_collate"),
    dataset=dict(type="NoiseDataset", shape=(4, 64, 64), prompts="data/prompts.txt"),
)
val_dataloader = val_evaluator = val_cfg = None
test_dataloader = test_evaluator = test_cfg = None
