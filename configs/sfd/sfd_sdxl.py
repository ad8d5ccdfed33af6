# SFD of SDXL at 2 NFE on 1024 px latent noise (4 x 128 x 128).
_base_ = ["./sfd_sd15.py"]

base_model = "stabilityai/stable-diffusion-xl-base-1.0"
model = dict(unet=dict(path=base_model), scheduler=dict(path=base_model),
             data_preprocessor=dict(model=base_model, vae="madebyollin/sdxl-vae-fp16-fix"))
train_dataloader = dict(batch_size=4, dataset=dict(shape=(4, 128, 128)))
