# Class-conditional v-prediction teacher on the embedded digits (the DMD
# benchmark's teacher): ten digit classes plus a null class (label 10) that
# replaces the label 10% of the time, so classifier-free guidance works.
#   mim train diffengine_distill configs/teachers/ddpm_v_digits_cond.py
_base_ = ["./ddpm_v_digits.py"]

model = dict(unet=dict(num_class_embeds=11), class_dropout_prob=0.1)
