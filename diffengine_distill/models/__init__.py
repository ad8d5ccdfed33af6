from . import builders  # noqa: F401  (registers diffusers UNets)
from .data_preprocessor import DiffusionDataPreprocessor
from .editors import BaseDiffusionModel, DiffusionModel, ProgressiveDistillation
from .losses import DiffusionLoss
from .text_conditioning import StableDiffusionDataPreprocessor

__all__ = ["BaseDiffusionModel", "DiffusionDataPreprocessor", "DiffusionLoss",
           "DiffusionModel", "ProgressiveDistillation", "StableDiffusionDataPreprocessor"]
