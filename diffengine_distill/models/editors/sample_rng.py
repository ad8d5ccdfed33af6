"""Random draws tied to each training sample, not to the process.

Noise and timesteps drawn from a generator seeded with (seed, dataset index,
iteration) are the same whichever process a sample lands on, so N processes
with batch B each train exactly like one process with batch N*B (the
sampler shards the same indices); they still differ between samples and
iterations, and a resumed run draws them again identically.
"""
from __future__ import annotations

import torch
from mmengine.logging import MessageHub
from torch import Tensor


def current_iteration() -> int:
    """The runner's iteration (0 outside a Runner)."""
    hub = MessageHub.get_current_instance()
    return int(hub.get_info("iter") or 0)


class SampleRNG:
    """One CPU generator per sample of a batch; draws land on ``device``."""

    def __init__(self, indices, seed: int, device, iteration: int | None = None):
        iteration = current_iteration() if iteration is None else iteration
        self.gens = [torch.Generator().manual_seed(
            (seed * 1_000_003 + int(i)) * 1_000_033 + iteration) for i in indices]
        self.device = device

    def randn(self, *shape: int) -> Tensor:
        return torch.stack([torch.randn(shape, generator=g) for g in self.gens]).to(self.device)

    def rand(self) -> Tensor:
        """(B,) uniform in [0, 1), float64."""
        return torch.stack([torch.rand((), generator=g, dtype=torch.float64)
                            for g in self.gens]).to(self.device)

    def randint(self, low: int, high: int) -> Tensor:
        return torch.stack([torch.randint(low, high, (), generator=g)
                            for g in self.gens]).to(self.device)


class GlobalRNG:
    """The process's own RNG with the same interface (data without indices)."""

    def __init__(self, n: int, device):
        self.n, self.device = n, device

    def randn(self, *shape: int) -> Tensor:
        return torch.randn(self.n, *shape, device=self.device)

    def rand(self) -> Tensor:
        return torch.rand(self.n, device=self.device, dtype=torch.float64)

    def randint(self, low: int, high: int) -> Tensor:
        return torch.randint(low, high, (self.n,), device=self.device)


def batch_rng(data_samples: dict | None, n: int, seed: int, device,
              iteration: int | None = None):
    """Per-sample draws when the batch carries dataset indices, else global."""
    indices = (data_samples or {}).get("indices")
    if indices is None:
        return GlobalRNG(n, device)
    return SampleRNG(indices.tolist(), seed, device, iteration)
