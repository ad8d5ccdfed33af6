# scikit-learn's 1,797 real handwritten digits at 16x16, shipped with the package.
train_dataloader = dict(
    batch_size=64,
    num_workers=0,  # the whole set is in memory; workers would only add start-up
    sampler=dict(type="InfiniteSampler", shuffle=True),
    collate_fn=dict(type="pseudo_collate"),
    dataset=dict(type="DigitsDataset", resolution=16, split="train",
                 pipeline=[dict(type="PackInputs")]),
)
val_dataloader = val_evaluator = val_cfg = None
test_dataloader = test_evaluator = test_cfg = None
