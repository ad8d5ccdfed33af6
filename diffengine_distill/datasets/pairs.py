"""Noise-image pairs of a teacher's ODE (DMD's regression dataset).

A pairs folder (written by ``tools/make_pairs.py``) holds ``pairs.json`` and
shards ``shard_<k>.safetensors`` with ``noise`` and ``images`` (N, C, H, W)
float32 (latents for text-to-image teachers), ``seeds`` (N,) and, for
class-conditional teachers, ``labels``; text-to-image shards keep their
prompts as JSON in the safetensors metadata (``prompts``).
"""
from __future__ import annotations

import bisect
import json
import os.path as osp

import torch
from torch import Tensor
from torch.utils.data import Dataset

from diffengine_distill.registry import DATASETS

PAIRS_META = "pairs.json"


def read_pairs_meta(path: str) -> dict:
    meta_file = osp.join(osp.expanduser(path), PAIRS_META)
    if not osp.isfile(meta_file):
        raise FileNotFoundError(
            f"No noise-image pairs at {path!r} ({PAIRS_META} missing): make them with "
            f"`python tools/make_pairs.py <teacher export> --out {path}`.")
    with open(meta_file) as f:
        return json.load(f)


def read_shard(path: str) -> dict:
    """A shard's header and small fields: the shapes of ``noise`` and
    ``images`` (which stay on disk), its ``labels`` and ``prompts`` (or None)."""
    from safetensors import safe_open
    with safe_open(path, framework="pt") as f:
        prompts = (f.metadata() or {}).get("prompts")
        return dict(noise=tuple(f.get_slice("noise").get_shape()),
                    images=tuple(f.get_slice("images").get_shape()),
                    labels=f.get_tensor("labels") if "labels" in f.keys() else None,
                    prompts=None if prompts is None else json.loads(prompts))


@DATASETS.register_module()
class PairsDataset(Dataset):
    """``dict(inputs=teacher image, data_samples=dict(noise=its noise, label=...,
    text=its prompt))``. Noise and images are read per item from the
    memory-mapped shards (paper-scale SD pairs are tens of GB); labels and
    prompts are held in memory.

    Args:
        path: a folder written by ``tools/make_pairs.py``.
    """

    def __init__(self, path: str):
        meta = read_pairs_meta(path)
        shape = tuple(meta["shape"])
        self.files, self.starts, labels, prompts = [], [0], [], []
        for name in meta["shards"]:
            shard_file = osp.join(osp.expanduser(path), name)
            if not osp.isfile(shard_file):
                raise FileNotFoundError(f"{shard_file!r} listed in {PAIRS_META} is missing: "
                                        "rerun tools/make_pairs.py with the same --out.")
            shard = read_shard(shard_file)
            n = shard["noise"][0]
            if shard["noise"] != shard["images"] or shard["noise"][1:] != shape:
                raise ValueError(f"{shard_file!r} holds noise {shard['noise']} and images "
                                 f"{shard['images']}, expected (N, *{shape}): remake the "
                                 "pairs with tools/make_pairs.py.")
            if shard["prompts"] is not None and len(shard["prompts"]) != n:
                raise ValueError(f"{shard_file!r} holds {len(shard['prompts'])} prompts for "
                                 f"{n} pairs: remake the pairs with tools/make_pairs.py.")
            self.files.append(shard_file)
            self.starts.append(self.starts[-1] + n)
            if shard["labels"] is not None:
                labels.append(shard["labels"])
            prompts.extend(shard["prompts"] or [])
        if self.starts[-1] == 0:
            raise ValueError(f"{path!r} holds no pairs: rerun tools/make_pairs.py.")
        self.labels = torch.cat(labels) if labels else None
        self.prompts = prompts or None
        self._open = {}  # shard index -> safetensors handle, per process
        self.metainfo = dict(teacher=meta.get("teacher"), num_classes=meta.get("num_classes"))

    def __len__(self) -> int:
        return self.starts[-1]

    def __getstate__(self) -> dict:  # dataloader workers open their own handles
        return dict(self.__dict__, _open={})

    def _rows(self, index: int) -> tuple[Tensor, Tensor]:
        from safetensors import safe_open
        if not 0 <= index < len(self):
            raise IndexError(f"pair {index} of {len(self)}")
        k = bisect.bisect_right(self.starts, index) - 1
        if k not in self._open:
            self._open[k] = safe_open(self.files[k], framework="pt")
        i = index - self.starts[k]
        return tuple(self._open[k].get_slice(key)[i:i + 1][0] for key in ("images", "noise"))

    def __getitem__(self, index: int) -> dict:
        image, noise = self._rows(int(index))
        label = None if self.labels is None else int(self.labels[index])
        samples = dict(label=label, noise=noise, index=int(index))  # keys DMD's draws
        if self.prompts is not None:
            samples["text"] = self.prompts[index]
        return dict(inputs=image, data_samples=samples)
