# Progressive-distillation student (v-prediction) of a pretrained teacher.
# Leaves set the teacher (model.unet.path, model.scheduler.path) and teacher_steps.
model = dict(
    type="ProgressiveDistillation",
    unet=dict(type="pretrained", path=None, subfolder="unet"),
    scheduler=dict(type="pretrained", path=None, class_name="DDIMScheduler"),
    # The paper's v student. An eps teacher then gets a conversion stage 0 (its
    # output taught as v at every t); None keeps the teacher's type (exact start).
    student_prediction_type="v_prediction",
    loss=dict(type="DiffusionLoss", weighting="truncated_snr"),  # max(x-MSE, eps-MSE)
    sampler=dict(clip_sample=False),  # the teacher's unclipped ODE (see unet_digits_16px.py)
)
