# Class-conditional epsilon-prediction teacher on the embedded digits: the
# schedule and loss of ddpm_eps_digits.py (1000 linear betas, eps-MSE) with the
# classes and null class of ddpm_v_digits_cond.py. The eps counterpart of the
# DMD benchmark's teacher:
#   mim train diffengine_distill configs/teachers/ddpm_eps_digits_cond.py
# batch_size (64) is per process.
_base_ = ["./ddpm_eps_digits.py"]

model = dict(unet=dict(num_class_embeds=11), class_dropout_prob=0.1)
