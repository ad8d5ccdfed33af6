# Noise-image pairs of the digits teacher (DMD's regression set), made by
#   python tools/make_pairs.py work_dirs/ddpm_v_digits_cond/step2500 \
#       --out work_dirs/pairs/digits_cond --seeds 0-9999 --steps 64
train_dataloader = dict(
    batch_size=64,
    num_workers=0,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    collate_fn=dict(type="pseudo_collate"),
    dataset=dict(type="PairsDataset", path="work_dirs/pairs/digits_cond"),
)
val_dataloader = val_evaluator = val_cfg = None
test_dataloader = test_evaluator = test_cfg = None
