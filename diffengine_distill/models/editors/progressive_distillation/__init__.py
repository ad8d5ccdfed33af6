from .pd_target import pd_target, student_grid
from .progressive_distillation import ProgressiveDistillation

__all__ = ["ProgressiveDistillation", "pd_target", "student_grid"]
