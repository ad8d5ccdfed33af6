from .grid_ddim import GridDDIMScheduler

__all__ = ["GridDDIMScheduler"]
