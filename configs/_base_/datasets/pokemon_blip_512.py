# lambdalabs/pokemon-blip-captions as the diffusers imagefolder convention:
# data/pokemon-blip-captions/{*.png, metadata.jsonl with file_name and text}.
# (Or a `datasets.save_to_disk` copy: dataset=dict(type="HFCaptionDataset", path=...).)
train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    collate_fn=dict(type="pseudo_collate"),
    dataset=dict(
        type="CaptionImageFolderDataset",
        data_root="data/pokemon-blip-captions",
        pipeline=[
            dict(type="LoadImage", color_type="rgb"),
            dict(type="SDXLResizeCrop", size=512, random_crop=True, flip_prob=0.5),
            dict(type="PackInputs"),
        ]),
)
val_dataloader = val_evaluator = val_cfg = None
test_dataloader = test_evaluator = test_cfg = None
