# SFD student of a pretrained teacher, with sfd-main's defaults (README table):
# num_steps counts timestamps, so 4 with AFS is 2 network evaluations (NFE).
# Leaves set the teacher (model.unet.path, model.scheduler.path).
model = dict(
    type="SFD",
    unet=dict(type="pretrained", path=None, subfolder="unet"),
    scheduler=dict(type="pretrained", path=None),
    num_steps=4,
    M=3,                      # teacher timestamps inserted per student interval (K = M + 1)
    afs=True,                 # analytical first step: saves one NFE
    sampler_tea="dpmpp",      # dpm | dpmpp | euler | ipndm | heun
    max_order=3,              # dpmpp 1..3, ipndm 1..4
    predict_x0=True,
    lower_order_final=True,
    schedule_type="polynomial",  # the step schedule: polynomial | logsnr | time_uniform | discrete
    schedule_rho=7,
    use_step_condition=False,  # True: SFD-v, one model for several NFEs
    # None: sfd-main's, within the model's sigma(t=0)..sigma(t=T-1):
    # sigma_min 0.1 for text-to-image (SD-class) teachers, else 0.006; sigma_max 80.
    sigma_min=None,
    sigma_max=None,
)
# SFD updates inside its own train_step, which mmengine's default DDP wrapper
# bypasses: wrap the trainable UNet alone (gradients still all-reduced).
model_wrapper_cfg = dict(type="MMSeparateDistributedDataParallel")
