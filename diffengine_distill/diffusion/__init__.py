from .edm import (STEP_SCHEDULE_TYPES, afs_step, denoised, euler_step, model_input,
                  sampling_sigmas, vp_scale)
from .noise_schedule import (PREDICTION_TYPES, NoiseSchedule, check_prediction_type,
                             convert_prediction, ddim_step, per_sample, prediction_target,
                             split_prediction)

__all__ = ["PREDICTION_TYPES", "STEP_SCHEDULE_TYPES", "NoiseSchedule", "afs_step",
           "check_prediction_type", "convert_prediction", "ddim_step", "denoised",
           "euler_step", "model_input", "per_sample", "prediction_target",
           "sampling_sigmas", "split_prediction", "vp_scale"]
