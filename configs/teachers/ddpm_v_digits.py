# v-prediction teacher on the embedded digits (16x16), trained from scratch.
#   mim train diffengine_distill configs/teachers/ddpm_v_digits.py
_base_ = [
    "../_base_/models/unet_digits_16px.py",
    "../_base_/datasets/digits_16px.py",
    "../_base_/schedules/adamw_2500it.py",
    "../_base_/default_runtime.py",
]

custom_hooks = [
    dict(type="EMAHook", momentum=1e-3, update_buffers=False, priority="NORMAL"),
    dict(type="DiffusersExportHook", interval=500),
    dict(type="SampleVisualizationHook", interval=500, num_images=64),
]
