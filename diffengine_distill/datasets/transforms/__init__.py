from .transforms import LoadImage, PackInputs, SDXLResizeCrop

__all__ = ["LoadImage", "PackInputs", "SDXLResizeCrop"]
