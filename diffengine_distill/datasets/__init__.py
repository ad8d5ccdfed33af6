from .digits import DigitsDataset, load_digits_uint8
from .image_folder import ImageFolderDataset
from .transforms import LoadImage, PackInputs

__all__ = ["DigitsDataset", "ImageFolderDataset", "LoadImage", "PackInputs",
           "load_digits_uint8"]
