from .transforms import LoadImage, PackInputs

__all__ = ["LoadImage", "PackInputs"]
