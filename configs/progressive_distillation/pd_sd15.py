# Progressive distillation of Stable Diffusion 1.5 (full UNet student, v
# prediction) on captioned images, 64 -> 4 steps. Sample the export with
# guidance_scale=1: the student learns the unguided teacher.
#   mim train diffengine_distill pd_sd15.py --gpus 8 --launcher pytorch --amp
_base_ = [
    "../_base_/models/pd_v_student.py",
    "../_base_/datasets/pokemon_blip_512.py",
    "../_base_/schedules/pd_adam.py",
    "../_base_/default_runtime.py",
]

base_model = "runwayml/stable-diffusion-v1-5"  # hub id or local diffusers folder
iters_per_stage = 2000
model = dict(
    unet=dict(path=base_model), scheduler=dict(path=base_model, class_name="DDIMScheduler"),
    data_preprocessor=dict(type="StableDiffusionDataPreprocessor", model=base_model,
                           dtype="bfloat16"),
    teacher_steps=64,
)
optim_wrapper = dict(optimizer=dict(lr=1e-5))
train_cfg = dict(max_iters=4 * iters_per_stage)
default_hooks = dict(checkpoint=dict(interval=iters_per_stage // 2))
custom_hooks = [
    dict(type="ProgressiveDistillationHook", end_steps=4, iters_per_stage=iters_per_stage),
    dict(type="SampleVisualizationHook", interval=iters_per_stage, num_images=4,
         prompts=["yoda pokemon"], guidance_scale=1.0),
]
