from .caption_folder import CaptionImageFolderDataset, HFCaptionDataset
from .digits import DigitsDataset, load_digits_uint8
from .hf_dataset import HFDataset
from .image_folder import ImageFolderDataset
from .noise import NoiseDataset
from .pairs import PairsDataset
from .transforms import LoadImage, PackInputs, SDXLResizeCrop

__all__ = ["CaptionImageFolderDataset", "DigitsDataset", "HFCaptionDataset", "HFDataset",
           "ImageFolderDataset", "LoadImage", "NoiseDataset", "PackInputs", "PairsDataset",
           "SDXLResizeCrop", "load_digits_uint8"]
