# Guided progressive distillation of Stable Diffusion 1.5 (Meng et al. 2023;
# full UNet student, v prediction) on captioned images: stage 0 teaches the
# student the CFG-guided teacher for guidance scales 2..14 through a
# guidance-scale embedding, then 64 -> 4 steps. Every stage_* export samples
# any scale in the range in one UNet call a step:
#   pipe("yoda pokemon", num_inference_steps=4, guidance_scale=7.5)
# Batch: train_dataloader.batch_size (2) is PER PROCESS: 8 GPUs x 2 = 16 global.
# An eps teacher with a v student: stage 0 also converts the teacher's output to v.
#   mim train diffengine_distill pd_sd15.py --gpus 8 --launcher pytorch --amp
_base_ = [
    "../_base_/models/pd_v_student.py",
    "../_base_/datasets/pokemon_blip_512.py",
    "../_base_/schedules/pd_adam.py",
    "../_base_/default_runtime.py",
]

iters_per_stage = 2000
model = dict(
    base_model="stable-diffusion-v1-5/stable-diffusion-v1-5",  # hub id or local diffusers folder
    data_preprocessor=dict(type="StableDiffusionDataPreprocessor", dtype="bfloat16"),
    teacher_steps=64,
    guidance_scale=(2.0, 14.0),
)
optim_wrapper = dict(optimizer=dict(lr=1e-5))
train_cfg = dict(max_iters=5 * iters_per_stage)  # stage 0, then 32, 16, 8, 4 steps
default_hooks = dict(checkpoint=dict(interval=iters_per_stage // 2))
custom_hooks = [
    dict(type="ProgressiveDistillationHook", end_steps=4, iters_per_stage=iters_per_stage),
    dict(type="SampleVisualizationHook", interval=iters_per_stage, num_images=4,
         prompts=["yoda pokemon"]),  # the student's scale: 7.5, or 1 when baked in
]
