from .diffusion_model import DiffusionModel, StableDiffusion, StableDiffusionXL

__all__ = ["DiffusionModel", "StableDiffusion", "StableDiffusionXL"]
