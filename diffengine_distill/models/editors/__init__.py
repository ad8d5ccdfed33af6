from .base import BaseDiffusionModel
from .teacher import DiffusionModel
from .dmd import DMD
from .progressive_distillation import ProgressiveDistillation
from .sfd import SFD

__all__ = ["BaseDiffusionModel", "DiffusionModel", "DMD", "ProgressiveDistillation", "SFD"]
