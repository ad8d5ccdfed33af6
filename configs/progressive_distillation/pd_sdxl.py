# Progressive distillation of SDXL (full UNet student) at 1024 px, 64 -> 4 steps.
_base_ = ["./pd_sd15.py"]

model = dict(base_model="stabilityai/stable-diffusion-xl-base-1.0",
             data_preprocessor=dict(vae="madebyollin/sdxl-vae-fp16-fix"))
train_dataloader = dict(batch_size=1, dataset=dict(pipeline=[  # batch_size: per process
    dict(type="LoadImage", color_type="rgb"),
    dict(type="SDXLResizeCrop", size=1024, random_crop=True, flip_prob=0.5),
    dict(type="PackInputs"),
]))
