from .diffusion_model import DiffusionModel

__all__ = ["DiffusionModel"]
