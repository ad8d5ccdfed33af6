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
        # A copy: images read with np.asarray(PIL) are read-only, and torch warns
        # about (and must not share) non-writable memory.
        inputs = torch.from_numpy(img.transpose(2, 0, 1).copy())
        # The dataset index keys per-sample noise (identical under any process count).
        samples = dict(label=results.get("gt_label"), index=results.get("sample_idx"))
        for key in ("text", "time_ids"):  # text-to-image captions, SDXL size conditioning
            if key in results:
                samples[key] = results[key]
        return dict(inputs=inputs, data_samples=samples)


@TRANSFORMS.register_module()
class SDXLResizeCrop(BaseTransform):
    """Resize the shorter side to ``size``, crop ``size`` x ``size`` (centre or
    random), optionally flip, and record SDXL's size conditioning
    ``time_ids = (orig_h, orig_w, crop_top, crop_left, size, size)``."""

    def __init__(self, size: int, random_crop: bool = False, flip_prob: float = 0.0):
        self.size, self.random_crop, self.flip_prob = size, random_crop, flip_prob

    def transform(self, results: dict) -> dict:
        img = np.asarray(results["img"])
        h, w = img.shape[:2]
        scale = self.size / min(h, w)
        nh, nw = max(self.size, round(h * scale)), max(self.size, round(w * scale))
        pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        img = np.asarray(pil.resize((nw, nh), Image.BICUBIC))
        img = img[..., None] if img.ndim == 2 else img
        if self.random_crop:
            top = int(np.random.randint(0, nh - self.size + 1))
            left = int(np.random.randint(0, nw - self.size + 1))
        else:
            top, left = (nh - self.size) // 2, (nw - self.size) // 2
        img = img[top:top + self.size, left:left + self.size]
        if self.flip_prob and np.random.rand() < self.flip_prob:
            img = img[:, ::-1]
        results["img"] = np.ascontiguousarray(img)
        results["time_ids"] = (h, w, top, left, self.size, self.size)
        return results
