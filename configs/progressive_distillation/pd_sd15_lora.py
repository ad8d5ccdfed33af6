# Progressive distillation of Stable Diffusion 1.5 into a LoRA (rank 64) on
# the frozen base: each stage's teacher is the previous stage's adapter, so
# the base weights exist once. LoRA exports cannot carry a guidance-scale
# embedding, so one scale (7.5) is baked in: sample with guidance_scale=1,
#   pipe.load_lora_weights("work_dirs/pd_sd15_lora/stage_4_4steps")
#   pipe("yoda pokemon", num_inference_steps=4, guidance_scale=1.0)
_base_ = ["./pd_sd15.py"]

model = dict(
    guidance_scale=7.5,
    lora_config=dict(r=64, lora_alpha=64, init_lora_weights="gaussian",
                     target_modules=["to_q", "to_k", "to_v", "to_out.0", "proj_in",
                                     "proj_out", "ff.net.0.proj", "ff.net.2"]),
)
optim_wrapper = dict(optimizer=dict(lr=1e-4))
