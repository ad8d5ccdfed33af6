# Data-free trajectory distillation: Gaussian noise (1x16x16, the digits UNet's
# input), reproducible per index; SFD draws no images.
train_dataloader = dict(
    batch_size=128,
    num_workers=0,
    sampler=dict(type="InfiniteSampler", shuffle=True, seed=0),  # same order for any process count
    collate_fn=dict(type="pseudo_collate"),
    dataset=dict(type="NoiseDataset", shape=(1, 16, 16)),
)
val_dataloader = val_evaluator = val_cfg = None
test_dataloader = test_evaluator = test_cfg = None
