"""Data-free distillation input: Gaussian noise (and class labels), one item
per index, reproducible from (seed, index) alone.

Trajectory distillation (SFD) needs no images; tying each noise sample to its
dataset index makes a run independent of how the sampler shards indices over
processes.
"""
from __future__ import annotations

import os.path as osp

import torch
from torch.utils.data import Dataset

from diffengine_distill.registry import DATASETS


def read_prompts(prompts) -> list[str]:
    """A list of prompts, or a text file with one per line (blank lines skipped)."""
    if isinstance(prompts, str):
        if not osp.isfile(prompts):
            raise FileNotFoundError(f"Prompt file {prompts!r} not found: give a text file "
                                    "with one prompt per line.")
        with open(prompts) as f:
            prompts = [line.strip() for line in f if line.strip()]
    if not prompts:
        raise ValueError("The prompt list is empty: give at least one prompt.")
    return list(prompts)


@DATASETS.register_module()
class NoiseDataset(Dataset):
    """``dict(inputs=N(0, I) of shape, data_samples=dict(label=...))``.

    Args:
        shape: (C, H, W) of the model's input.
        num_classes: labels drawn uniformly from 0..num_classes-1, or None.
        length: indices per epoch (an iteration-based run cycles through them).
        seed: noise of item i is drawn from a generator seeded with seed, i.
        prompts: text-to-image teachers: a list of prompts or a text file with
            one per line; item i gets prompt i mod their number.
    """

    def __init__(self, shape, num_classes: int | None = None, length: int = 1_000_000,
                 seed: int = 0, prompts=None):
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"shape must be (C, H, W) of positive sizes, got {shape}.")
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}.")
        self.shape, self.num_classes, self.length, self.seed = shape, num_classes, length, seed
        self.prompts = None if prompts is None else read_prompts(prompts)
        self.metainfo = {}

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + int(index))
        noise = torch.randn(self.shape, generator=gen)
        label = None
        if self.num_classes:
            label = int(torch.randint(self.num_classes, (), generator=gen))
        samples = dict(label=label)
        if self.prompts:
            samples["text"] = self.prompts[index % len(self.prompts)]
        return dict(inputs=noise, data_samples=samples)
