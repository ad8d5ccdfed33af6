from .schedule import (PREDICTION_TYPES, VPSchedule, check_prediction_type,
                       convert_prediction, ddim_step, per_sample, prediction_target,
                       split_prediction)

__all__ = ["PREDICTION_TYPES", "VPSchedule", "check_prediction_type",
           "convert_prediction", "ddim_step", "per_sample", "prediction_target", "split_prediction"]
