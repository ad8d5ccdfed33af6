from .base import BaseDiffusionModel
from .diffusion import DiffusionModel
from .progressive_distillation import ProgressiveDistillation

__all__ = ["BaseDiffusionModel", "DiffusionModel", "ProgressiveDistillation"]
