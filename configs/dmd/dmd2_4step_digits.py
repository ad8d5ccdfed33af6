# DMD2 four-step generator (LCM timesteps, backward simulation) of the digits
# teacher; exports sample with diffusers' LCMScheduler in 4 steps.
#   mim train diffengine_distill configs/dmd/dmd2_4step_digits.py
_base_ = ["./dmd2_digits.py"]

model = dict(num_generator_steps=4)
