"""The embedded default dataset: scikit-learn's 1,797 real 8x8 digits."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.dataset import BaseDataset

from diffengine_distill.registry import DATASETS


def is_val_index(index: int) -> bool:
    """Deterministic split shared with the evaluation classifier: every 10th."""
    return index % 10 == 0


def load_digits_uint8(resolution: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """All digits as (N, R, R) uint8 (bilinear upsampling) and (N,) labels."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    x = torch.from_numpy(digits.images).float()[:, None] / 16.0
    if resolution != 8:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear",
                          align_corners=False)
    img = (x.clamp(0, 1) * 255).round().to(torch.uint8)[:, 0].numpy()
    return img, digits.target.astype(np.int64)


@DATASETS.register_module()
class DigitsDataset(BaseDataset):
    """Handwritten digits, white on black, 1 channel, labels 0-9.

    Args:
        resolution: output side (8 is the native size; 16 or 32 typical).
        split: ``train`` (90%), ``val`` (every 10th image) or ``all``.
        pipeline: transforms applied to ``dict(img, gt_label)``.
    """

    METAINFO = dict(classes=tuple(str(i) for i in range(10)))

    def __init__(self, resolution: int = 16, split: str = "train", pipeline=(),
                 **kwargs):
        if split not in ("train", "val", "all"):
            raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
        if resolution < 8:
            raise ValueError(f"resolution must be >= 8, got {resolution}")
        self.resolution, self.split = resolution, split
        super().__init__(pipeline=list(pipeline), **kwargs)

    def load_data_list(self) -> list[dict]:
        images, labels = load_digits_uint8(self.resolution)
        keep = [i for i in range(len(labels))
                if self.split == "all" or is_val_index(i) == (self.split == "val")]
        return [dict(img=images[i][..., None], gt_label=int(labels[i]), index=i)
                for i in keep]
