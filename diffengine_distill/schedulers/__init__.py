from .grid_ddim import GridDDIMScheduler
from .sfd_euler import SFDScheduler

__all__ = ["GridDDIMScheduler", "SFDScheduler"]
