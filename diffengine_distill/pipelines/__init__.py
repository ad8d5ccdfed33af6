from .class_conditional import ClassConditionalPipeline

__all__ = ["ClassConditionalPipeline"]
