from .diffengine_hooks import PeftSaveHook, VisualizationHook
from .digits_metric_hook import DigitsMetricHook
from .export_hook import DiffusersExportHook, export_model
from .progressive_distillation_hook import ProgressiveDistillationHook
from .rng_state_hook import RNGStateHook
from .visualization_hook import SampleVisualizationHook

__all__ = ["DiffusersExportHook", "DigitsMetricHook", "PeftSaveHook",
           "ProgressiveDistillationHook", "RNGStateHook", "SampleVisualizationHook",
           "VisualizationHook", "export_model"]
