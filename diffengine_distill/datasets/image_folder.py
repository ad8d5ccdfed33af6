"""A user's own images: a flat folder, or one sub-folder per class."""
from __future__ import annotations

import os
import os.path as osp

from mmengine.dataset import BaseDataset

from diffengine_distill.registry import DATASETS

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


@DATASETS.register_module()
class ImageFolderDataset(BaseDataset):
    """Images under ``data_root``; class labels from sorted sub-folder names.

    Files directly in ``data_root`` get no label. Use the ``LoadImage``
    transform first in ``pipeline``.
    """

    def __init__(self, data_root: str, pipeline=(), **kwargs):
        if not osp.isdir(osp.expanduser(data_root)):
            raise FileNotFoundError(
                f"ImageFolderDataset: data_root {data_root!r} is not a directory. "
                "Set train_dataloader.dataset.data_root to a folder of images "
                "(flat, or one sub-folder per class).")
        super().__init__(data_root=osp.expanduser(data_root), pipeline=list(pipeline),
                         **kwargs)

    def load_data_list(self) -> list[dict]:
        root = self.data_root
        classes = sorted(d for d in os.listdir(root) if osp.isdir(osp.join(root, d)))
        self._metainfo["classes"] = tuple(classes)
        data = []
        for label, folder in [(None, root)] + list(enumerate(osp.join(root, c) for c in classes)):
            walk = [(folder, [], os.listdir(folder))] if label is None else os.walk(folder)
            for dirpath, _, files in walk:
                for name in sorted(files):
                    if name.lower().endswith(IMAGE_EXTENSIONS):
                        data.append(dict(img_path=osp.join(dirpath, name), gt_label=label))
        if not data:
            raise FileNotFoundError(
                f"ImageFolderDataset: no images ({', '.join(IMAGE_EXTENSIONS)}) "
                f"under {root!r}.")
        return data
