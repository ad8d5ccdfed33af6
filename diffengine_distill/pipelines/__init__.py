from .sampler_pipeline import SamplerPipeline

__all__ = ["SamplerPipeline"]
