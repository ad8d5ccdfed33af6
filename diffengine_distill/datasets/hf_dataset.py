"""diffengine's ``HFDataset``: image-caption pairs from a hub dataset id
(through the ``datasets`` library and its cache) or a local folder with a
csv of file names and captions."""
from __future__ import annotations

import csv as csv_lib
import os.path as osp

import numpy as np
from mmengine.dataset import BaseDataset
from PIL import Image

from diffengine_distill.registry import DATASETS

# diffengine's transforms (and our file loader): HFDataset's images are decoded.
DIFFENGINE_TRANSFORMS = ("SaveImageShape", "torchvision/Resize", "RandomCrop", "CenterCrop",
                         "RandomHorizontalFlip", "ComputeTimeIds", "torchvision/ToTensor",
                         "torchvision/Normalize", "RandomTextDrop", "LoadImage")
PIPELINE_HINT = ("pipeline=[dict(type='SDXLResizeCrop', size=1024, random_crop=True, "
                 "flip_prob=0.5), dict(type='PackInputs')]")


@DATASETS.register_module()
class HFDataset(BaseDataset):
    """``dict(img, text)`` per row: ``img`` is decoded (H, W, 3) uint8 RGB, so
    the pipeline starts at the resize (no LoadImage).

    Args:
        dataset: a hub dataset id (e.g. ``lambdalabs/pokemon-blip-captions``,
            loaded by ``datasets.load_dataset`` from its cache; needs the
            ``datasets`` package) or a local folder holding ``csv``.
        image_column, caption_column: column names; in a local csv the image
            column holds file names relative to the folder.
        csv: the local folder's caption file.
        cache_dir: the ``datasets`` cache (default: its own, ``HF_DATASETS_CACHE``).
    """

    def __init__(self, dataset: str, image_column: str = "image",
                 caption_column: str = "text", csv: str = "metadata.csv",
                 pipeline=(), cache_dir: str | None = None, **kwargs):
        for step in pipeline:
            kind = step.get("type") if isinstance(step, dict) else None
            if kind in DIFFENGINE_TRANSFORMS or (kind == "PackInputs" and "input_keys" in step):
                raise ValueError(f"HFDataset: transform {kind!r} does not apply here (a "
                                 "diffengine pipeline?); HFDataset yields decoded RGB images: "
                                 f"use {PIPELINE_HINT} (size 512 for SD 1.5).")
        self.dataset_name, self.csv, self.cache_dir = dataset, csv, cache_dir
        self.image_column, self.caption_column = image_column, caption_column
        self.rows = None
        super().__init__(pipeline=list(pipeline), **kwargs)

    def load_data_list(self) -> list[dict]:
        local = osp.expanduser(self.dataset_name)
        if osp.isdir(local):
            table = osp.join(local, self.csv)
            if not osp.isfile(table):
                raise FileNotFoundError(f"HFDataset: no {self.csv!r} in {local!r} (a local "
                                        "folder needs a csv of file names and captions).")
            with open(table, newline="") as f:
                rows = list(csv_lib.DictReader(f))
            self._check(rows[0].keys() if rows else [])
            return [dict(img_path=osp.join(local, row[self.image_column]),
                         text=self._caption(row[self.caption_column], i))
                    for i, row in enumerate(rows)]
        try:
            import datasets
        except ImportError as err:
            raise ImportError(f"HFDataset(dataset={self.dataset_name!r}) loads a hub dataset "
                              "with the `datasets` package: pip install datasets (or save the "
                              "images with a metadata.csv and give the folder).") from err
        self.rows = datasets.load_dataset(self._source(), cache_dir=self.cache_dir)["train"]
        self._check(self.rows.column_names)
        # The caption column alone: reading whole rows would decode every image.
        return [dict(row=i, text=self._caption(caption, i))
                for i, caption in enumerate(self.rows[self.caption_column])]

    def _source(self) -> str:
        """The hub id, or offline its snapshot in the Hugging Face hub cache
        (``datasets`` alone would look only in its own processed cache)."""
        import os
        if os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("1", "true", "yes"):
            return self.dataset_name
        from huggingface_hub import snapshot_download
        try:
            return snapshot_download(self.dataset_name, repo_type="dataset",
                                     local_files_only=True)
        except Exception as err:  # noqa: BLE001 (huggingface_hub's several "not cached")
            raise OSError(f"HFDataset: {self.dataset_name!r} is not in the local Hugging Face "
                          "cache and HF_HUB_OFFLINE=1 is set: run `huggingface-cli download "
                          f"--repo-type dataset {self.dataset_name}` on a connected machine, "
                          "or give a local folder.") from err

    def _check(self, columns) -> None:
        columns = list(columns)
        if not columns:
            raise ValueError(f"HFDataset: {self.dataset_name!r} has no rows.")
        for column in (self.image_column, self.caption_column):
            if column not in columns:
                raise KeyError(f"HFDataset: {self.dataset_name!r} has no column {column!r} "
                               f"(has {sorted(columns)}): set image_column / caption_column.")

    def _caption(self, caption, i: int) -> str:
        if isinstance(caption, (list, tuple)):  # several captions: the first
            caption = caption[0]
        if not isinstance(caption, str):
            raise ValueError(f"HFDataset: row {i} column {self.caption_column!r} is not text.")
        return caption

    def get_data_info(self, idx: int) -> dict:
        info = super().get_data_info(idx)
        if "row" in info:
            info["img"] = np.asarray(self.rows[info.pop("row")][self.image_column].convert("RGB"))
        else:
            with Image.open(info.pop("img_path")) as image:
                info["img"] = np.asarray(image.convert("RGB"))
        return info
