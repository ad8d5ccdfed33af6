from .export_hook import DiffusersExportHook, export_pipeline
from .rng_state_hook import RNGStateHook
from .visualization_hook import SampleVisualizationHook

__all__ = ["DiffusersExportHook", "RNGStateHook", "SampleVisualizationHook", "export_pipeline"]
