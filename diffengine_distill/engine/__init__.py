from .hooks import DiffusersExportHook, SampleVisualizationHook
from .optimizers import GuardedAmpOptimWrapper, GuardedOptimWrapper
from .strategies import FullyShardStrategy

__all__ = ["DiffusersExportHook", "FullyShardStrategy", "GuardedAmpOptimWrapper",
           "GuardedOptimWrapper", "SampleVisualizationHook"]
