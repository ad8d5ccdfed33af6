"""Noise-image pairs of a teacher's ODE (DMD's regression dataset).

A pairs folder (written by ``tools/make_pairs.py``) holds ``pairs.json`` and
shards ``shard_<k>.safetensors`` with ``noise`` and ``images`` (N, C, H, W)
float32 (latents for text-to-image teachers), ``seeds`` (N,) and, for
class-conditional teachers, ``labels``; text-to-image shards keep their
prompts as JSON in the safetensors metadata (``prompts``).
"""
from __future__ import annotations

import json
import os.path as osp

import torch
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


def load_shard(path: str) -> dict:
    """The shard's tensors, plus ``prompts`` (a list) when it has them."""
    from safetensors import safe_open
    with safe_open(path, framework="pt") as f:
        shard = {k: f.get_tensor(k) for k in f.keys()}
        prompts = (f.metadata() or {}).get("prompts")
    if prompts is not None:
        shard["prompts"] = json.loads(prompts)
    return shard


@DATASETS.register_module()
class PairsDataset(Dataset):
    """``dict(inputs=teacher image, data_samples=dict(noise=its noise, label=...,
    text=its prompt))``.

    Args:
        path: a folder written by ``tools/make_pairs.py``.
    """

    def __init__(self, path: str):
        meta = read_pairs_meta(path)
        tensors = {"noise": [], "images": [], "labels": [], "prompts": []}
        for name in meta["shards"]:
            shard_file = osp.join(osp.expanduser(path), name)
            if not osp.isfile(shard_file):
                raise FileNotFoundError(f"{shard_file!r} listed in {PAIRS_META} is missing: "
                                        "rerun tools/make_pairs.py with the same --out.")
            shard = load_shard(shard_file)
            for key in tensors:
                if key in shard:
                    tensors[key].append(shard[key])
        if not tensors["noise"]:
            raise ValueError(f"{path!r} holds no pairs: rerun tools/make_pairs.py.")
        self.noise = torch.cat(tensors["noise"])
        self.images = torch.cat(tensors["images"])
        self.labels = torch.cat(tensors["labels"]) if tensors["labels"] else None
        self.prompts = sum(tensors["prompts"], []) or None
        if self.prompts is not None and len(self.prompts) != len(self.noise):
            raise ValueError(f"Pairs at {path!r} hold {len(self.prompts)} prompts for "
                             f"{len(self.noise)} pairs: remake them with tools/make_pairs.py.")
        shape = tuple(meta["shape"])
        if self.noise.shape != self.images.shape or self.noise.shape[1:] != shape:
            raise ValueError(f"Pairs at {path!r} are shaped noise {tuple(self.noise.shape)}, "
                             f"images {tuple(self.images.shape)}, expected (N, *{shape}): "
                             "remake them with tools/make_pairs.py.")
        self.metainfo = dict(teacher=meta.get("teacher"), num_classes=meta.get("num_classes"))

    def __len__(self) -> int:
        return len(self.noise)

    def __getitem__(self, index: int) -> dict:
        label = None if self.labels is None else int(self.labels[index])
        samples = dict(label=label, noise=self.noise[index])
        if self.prompts is not None:
            samples["text"] = self.prompts[index]
        return dict(inputs=self.images[index], data_samples=samples)
