from __future__ import annotations

import mmcv.transforms  # noqa: F401  (registers Resize, CenterCrop, RandomFlip, ...)
import numpy as np
import torch
from mmcv.transforms import BaseTransform
from PIL import Image, UnidentifiedImageError

from diffengine_distill.registry import TRANSFORMS


@TRANSFORMS.register_module()
class LoadImage(BaseTransform):
    """Read ``img_path`` into ``img`` (H, W, C) uint8, RGB or grayscale.

    mmcv's LoadImageFromFile returns BGR; diffusers models expect RGB.
    """

    def __init__(self, color_type: str = "rgb"):
        if color_type not in ("rgb", "grayscale"):
            raise ValueError(f"color_type must be 'rgb' or 'grayscale', got {color_type!r}")
        self.mode = "RGB" if color_type == "rgb" else "L"

    def transform(self, results: dict) -> dict:
        path = results["img_path"]
        try:
            with Image.open(path) as im:
                img = np.asarray(im.convert(self.mode))
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"Cannot read {path!r} as an image ({err}); remove it "
                             "from the dataset folder.") from err
        results["img"] = img[..., None] if img.ndim == 2 else img
        results["img_shape"] = results["ori_shape"] = img.shape[:2]
        return results


@TRANSFORMS.register_module()
class PackInputs(BaseTransform):
    """``img`` (H, W[, C]) uint8 -> ``inputs`` (C, H, W) tensor; label -> sample."""

    def transform(self, results: dict) -> dict:
        img = np.asarray(results["img"])
        if img.ndim == 2:
            img = img[..., None]
        inputs = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        # The dataset index keys per-sample noise (identical under any process count).
        return dict(inputs=inputs, data_samples=dict(label=results.get("gt_label"),
                                                     index=results.get("sample_idx")))
