"""diffengine_distill: distil slow diffusers models into few-step samplers."""
from .version import __version__
from .utils.safe_load import allow_mmengine_checkpoints

allow_mmengine_checkpoints()

# Top-level so that exports naming ["diffengine_distill", <class>] in their
# model_index.json load with diffusers' from_pretrained.
from .pipelines import SamplerPipeline  # noqa: E402
from .schedulers import GridDDIMScheduler, SFDScheduler  # noqa: E402

__all__ = ["GridDDIMScheduler", "SFDScheduler", "SamplerPipeline", "__version__"]
