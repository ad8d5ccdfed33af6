"""diffengine_distill: distil slow diffusers models into few-step samplers.

Importing the package loads only what exports need to sample (the diffusion
math, the schedulers and the pipeline), never the training stack (mmengine,
the method editors, the tools' APIs): those load with
``diffengine_distill.registry`` / ``.models`` / ``.apis``.
"""
from .version import __version__

# Top-level so that exports naming ["diffengine_distill", <class>] in their
# model_index.json load with diffusers' from_pretrained.
from .pipelines import SamplerPipeline
from .schedulers import GridDDIMScheduler, SFDScheduler

__all__ = ["GridDDIMScheduler", "SFDScheduler", "SamplerPipeline", "__version__"]
