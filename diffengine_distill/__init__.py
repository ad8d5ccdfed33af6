"""diffengine_distill: distil slow diffusers models into few-step samplers."""
from .version import __version__
from .utils.safe_load import allow_mmengine_checkpoints

allow_mmengine_checkpoints()

__all__ = ["__version__"]
