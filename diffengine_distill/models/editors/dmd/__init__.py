from .critic import DMDCritic
from .dmd import DMD, dm_gradient, dm_loss

__all__ = ["DMD", "DMDCritic", "dm_gradient", "dm_loss"]
