"""Optimizer wrappers that skip updates whose loss is NaN or Inf.

One bad batch (an fp16 overflow, a corrupt image) should cost one step, not
the run: the update is skipped on every process (the decision is all-reduced,
so DDP never waits for a backward that one rank skipped), counted, logged and
reported to TensorBoard as ``train/skipped_steps``; after
``max_consecutive_nonfinite`` bad losses in a row, or on an update that
makes the weights non-finite, training stops with an error before a hook can
checkpoint, so the latest checkpoint stays finite.
"""
from __future__ import annotations

import torch
from mmengine.dist import all_reduce
from mmengine.logging import MessageHub, MMLogger
from mmengine.optim import AmpOptimWrapper, OptimWrapper

from diffengine_distill.registry import OPTIM_WRAPPERS


def finite_on_all_ranks(loss: torch.Tensor) -> bool:
    flag = torch.isfinite(loss.detach()).all().float().reshape(1)
    all_reduce(flag, op="min")  # no-op without a process group
    return bool(flag.item() > 0)


class NonFiniteGuard:
    """Mixin for mmengine optimizer wrappers (see the module docstring)."""

    def __init__(self, *args, max_consecutive_nonfinite: int = 5, **kwargs):
        super().__init__(*args, **kwargs)
        if max_consecutive_nonfinite < 1:
            raise ValueError("max_consecutive_nonfinite must be >= 1, got "
                             f"{max_consecutive_nonfinite}.")
        self.max_consecutive_nonfinite = max_consecutive_nonfinite
        self.nonfinite_in_a_row = 0
        self.skipped_steps = 0
        self._skip_next_step = False
        self.last_update_skipped = False  # the same on every rank

    def backward(self, loss: torch.Tensor, **kwargs) -> None:
        if finite_on_all_ranks(loss):
            self.nonfinite_in_a_row = 0
            return super().backward(loss, **kwargs)
        self._skip_next_step = True
        self._inner_count += 1
        self.skipped_steps += 1
        self.nonfinite_in_a_row += 1
        MessageHub.get_current_instance().update_scalar("train/skipped_steps",
                                                        self.skipped_steps)
        MMLogger.get_current_instance().warning(
            f"Non-finite loss ({float(loss.detach().float()):g}): update skipped "
            f"({self.nonfinite_in_a_row} in a row, {self.skipped_steps} in all).")
        if self.nonfinite_in_a_row >= self.max_consecutive_nonfinite:
            raise FloatingPointError(
                f"The loss was NaN/Inf {self.nonfinite_in_a_row} times in a row; stopping. "
                "The latest checkpoint predates the divergence: lower the LR, enable "
                "gradient clipping (optim_wrapper.clip_grad) or check the data, then "
                "--resume. Raise optim_wrapper.max_consecutive_nonfinite to tolerate more.")

    def step(self, **kwargs) -> None:
        self.last_update_skipped = self._skip_next_step
        if self._skip_next_step:
            self._skip_next_step = False
            self.optimizer.zero_grad()
            return
        super().step(**kwargs)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        if params and not torch.isfinite(torch.stack(torch._foreach_norm(params)).sum()):
            # Raised before any hook can checkpoint the broken weights.
            raise FloatingPointError(
                "An optimizer step made the weights NaN/Inf although the loss was finite "
                "(an overflowing update); stopping before it is checkpointed. Lower the "
                "LR or enable gradient clipping (optim_wrapper.clip_grad), then --resume.")


@OPTIM_WRAPPERS.register_module()
class GuardedOptimWrapper(NonFiniteGuard, OptimWrapper):
    """``OptimWrapper`` that skips non-finite losses."""


@OPTIM_WRAPPERS.register_module()
class GuardedAmpOptimWrapper(NonFiniteGuard, AmpOptimWrapper):
    """``AmpOptimWrapper`` (bf16/fp16 autocast) that skips non-finite losses."""
