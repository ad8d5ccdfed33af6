# DMD2 of SDXL, one step, real-score CFG 8 (DMD2's SDXL setting), 1024 px.
_base_ = ["./dmd2_sd15.py"]

model = dict(base_model="stabilityai/stable-diffusion-xl-base-1.0",
             data_preprocessor=dict(vae="madebyollin/sdxl-vae-fp16-fix"),
             real_guidance_scale=8.0)
train_dataloader = dict(batch_size=1, dataset=dict(pipeline=[
    dict(type="LoadImage", color_type="rgb"),
    dict(type="SDXLResizeCrop", size=1024, random_crop=True, flip_prob=0.5),
    dict(type="PackInputs"),
]))
