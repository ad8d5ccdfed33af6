from .digits import DigitsDataset, load_digits_uint8
from .image_folder import ImageFolderDataset
from .noise import NoiseDataset
from .pairs import PairsDataset
from .transforms import LoadImage, PackInputs

__all__ = ["DigitsDataset", "ImageFolderDataset", "LoadImage", "NoiseDataset", "PackInputs", "PairsDataset",
           "load_digits_uint8"]
