from .hooks import DiffusersExportHook, SampleVisualizationHook
from .optimizers import GuardedAmpOptimWrapper, GuardedOptimWrapper

__all__ = ["DiffusersExportHook", "GuardedAmpOptimWrapper", "GuardedOptimWrapper",
           "SampleVisualizationHook"]
