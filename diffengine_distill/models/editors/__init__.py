from .base import BaseDiffusionModel
from .diffusion import DiffusionModel

__all__ = ["BaseDiffusionModel", "DiffusionModel"]
