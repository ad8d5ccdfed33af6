"""Image-caption pairs for text-to-image models: diffusers' imagefolder
convention (``metadata.jsonl`` or ``metadata.csv`` next to the images, a
``file_name`` column and a caption column), or an on-disk Hugging Face
dataset (``datasets.load_from_disk``) when the ``datasets`` package is there."""
from __future__ import annotations

import csv
import json
import os.path as osp

from mmengine.dataset import BaseDataset

from diffengine_distill.registry import DATASETS

from .image_folder import check_image_files


@DATASETS.register_module()
class CaptionImageFolderDataset(BaseDataset):
    """``dict(img_path, text)`` per row of ``data_root/metadata.{jsonl,csv}``.

    Args:
        data_root: the image folder.
        image_column, caption_column: column names (diffusers: file_name, text).
    """

    def __init__(self, data_root: str, image_column: str = "file_name",
                 caption_column: str = "text", pipeline=(), check_images: bool = True,
                 **kwargs):
        self.image_column, self.caption_column = image_column, caption_column
        self.check_images = check_images  # truncated files named before training
        if not osp.isdir(osp.expanduser(data_root)):
            raise FileNotFoundError(f"CaptionImageFolderDataset: data_root {data_root!r} is "
                                    "not a directory of images with metadata.jsonl/.csv.")
        super().__init__(data_root=osp.expanduser(data_root), pipeline=list(pipeline),
                         **kwargs)

    def load_data_list(self) -> list[dict]:
        rows = _read_metadata(self.data_root)
        data = []
        for i, row in enumerate(rows):
            for column in (self.image_column, self.caption_column):
                if column not in row:
                    raise KeyError(f"Row {i} of {self.data_root}/metadata has no column "
                                   f"{column!r} (has {sorted(row)}): set image_column / "
                                   "caption_column.")
            path = osp.join(self.data_root, row[self.image_column])
            if not osp.isfile(path):
                raise FileNotFoundError(f"{path!r} (metadata row {i}) does not exist.")
            data.append(dict(img_path=path, text=str(row[self.caption_column])))
        if not data:
            raise ValueError(f"{self.data_root}/metadata lists no images.")
        if self.check_images:
            check_image_files([d["img_path"] for d in data],
                         f"CaptionImageFolderDataset({self.data_root!r})")
        return data


def _read_metadata(root: str) -> list[dict]:
    jsonl, table = osp.join(root, "metadata.jsonl"), osp.join(root, "metadata.csv")
    if osp.isfile(jsonl):
        with open(jsonl) as f:
            return [json.loads(line) for line in f if line.strip()]
    if osp.isfile(table):
        with open(table, newline="") as f:
            return list(csv.DictReader(f))
    raise FileNotFoundError(f"No metadata.jsonl or metadata.csv in {root!r} (diffusers' "
                            "imagefolder convention: file_name and text columns).")


@DATASETS.register_module()
class HFCaptionDataset(BaseDataset):
    """Rows of a dataset saved with ``datasets``' ``save_to_disk`` (PIL images)."""

    def __init__(self, path: str, image_column: str = "image", caption_column: str = "text",
                 pipeline=(), **kwargs):
        try:
            import datasets
        except ImportError as err:
            raise ImportError("HFCaptionDataset needs the `datasets` package (pip install "
                              "datasets); or export the images with metadata.jsonl and use "
                              "CaptionImageFolderDataset.") from err
        self.rows = datasets.load_from_disk(osp.expanduser(path))
        self.image_column, self.caption_column = image_column, caption_column
        super().__init__(pipeline=list(pipeline), **kwargs)

    def load_data_list(self) -> list[dict]:
        import numpy as np
        return [dict(img=np.asarray(row[self.image_column].convert("RGB")),
                     text=str(row[self.caption_column])) for row in self.rows]
