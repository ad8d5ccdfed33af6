from .hooks import DiffusersExportHook, SampleVisualizationHook

__all__ = ["DiffusersExportHook", "SampleVisualizationHook"]
