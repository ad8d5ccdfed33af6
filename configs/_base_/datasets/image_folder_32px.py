# Your own images: set train_dataloader.dataset.data_root (flat folder, or one
# sub-folder per class for class-conditional models).
train_dataloader = dict(
    batch_size=64,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    collate_fn=dict(type="pseudo_collate"),
    dataset=dict(
        type="ImageFolderDataset",
        data_root="data/images",
        pipeline=[
            dict(type="LoadImage", color_type="rgb"),
            dict(type="Resize", scale=32, keep_ratio=True),
            dict(type="CenterCrop", crop_size=32),
            dict(type="RandomFlip", prob=0.5, direction="horizontal"),
            dict(type="PackInputs"),
        ]),
)
val_dataloader = val_evaluator = val_cfg = None
test_dataloader = test_evaluator = test_cfg = None
