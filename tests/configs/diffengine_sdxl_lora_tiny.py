# diffengine's SDXL v-prediction LoRA recipe with its own keys (okotaku/diffengine
# configs/_base_/models/stable_diffusion_xl_lora.py + v_prediction leaf, epoch-based
# schedule, HFDataset, VisualizationHook, PeftSaveHook) at toy sizes; the hub ids
# resolve to tiny folders in a local HF cache (tests/test_diffengine_compat.py),
# the dataset folder is set by the test.
_base_ = ["../../configs/_base_/default_runtime.py"]

model = dict(
    type="StableDiffusionXL",
    model="ptx0/terminus-xl-gamma-v1",
    vae_model="madebyollin/sdxl-vae-fp16-fix",
    unet_lora_config=dict(type="LoRA", r=4, lora_alpha=8,
                          target_modules=["to_q", "to_v", "to_k", "to_out.0"]),
    text_encoder_lora_config=dict(type="LoRA", r=4, lora_alpha=8,
                                  target_modules=["q_proj", "k_proj", "v_proj", "out_proj"]),
    finetune_text_encoder=True,
    prediction_type="v_prediction",
)
train_dataloader = dict(
    batch_size=2, num_workers=0,
    dataset=dict(type="HFDataset", dataset=None, image_column="file_name",
                 caption_column="text",
                 pipeline=[dict(type="SDXLResizeCrop", size=16, random_crop=True,
                                flip_prob=0.5),
                           dict(type="PackInputs")]),
    sampler=dict(type="DefaultSampler", shuffle=True),
    collate_fn=dict(type="pseudo_collate"),
)
optim_wrapper = dict(optimizer=dict(type="AdamW", lr=1e-2, weight_decay=1e-2),
                     clip_grad=dict(max_norm=1.0))
train_cfg = dict(by_epoch=True, max_epochs=2)
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(type="CheckpointHook", interval=1, by_epoch=True))
custom_hooks = [
    dict(type="VisualizationHook", prompt=["yoda pokemon"] * 2, height=16, width=16),
    dict(type="PeftSaveHook"),
]
