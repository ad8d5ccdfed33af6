"""Optimizer wrappers that skip updates whose loss or gradients are NaN or Inf.

One bad batch (an fp16 overflow, a corrupt image) should cost one step, not
the run: the update is skipped on every process (the decision is all-reduced,
so DDP never waits for a backward that one rank skipped), counted, logged and
reported to TensorBoard as ``train/skipped_steps``; after
``max_consecutive_nonfinite`` bad steps in a row, or on an update that
makes the weights non-finite, training stops with an error before a hook can
checkpoint, so the latest checkpoint stays finite.

A finite loss can still give non-finite gradients (an overflow in backward);
those are checked before clipping (clipping would spread the NaN over every
weight). Under ``--amp`` with a loss scaler, inf gradients are the scaler's
signal to lower its scale: it checks the unscaled gradients, skips that
step itself and backs off, so the guard leaves gradients to it.
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


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """A sharded (FSDP) DTensor's own shard; any other tensor itself."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def grads_finite_on_all_ranks(params) -> bool:
    grads = [_local(p.grad) for p in params if p.grad is not None]
    total = torch.stack(torch._foreach_norm(grads)).sum() if grads else torch.zeros(())
    return finite_on_all_ranks(total)


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
            return super().backward(loss, **kwargs)
        self._skip_next_step = True
        self._inner_count += 1
        self._count_skip(f"Non-finite loss ({float(loss.detach().float()):g})")

    def _count_skip(self, what: str) -> None:
        """Count and log a skipped update; stop after too many in a row."""
        self.skipped_steps += 1
        self.nonfinite_in_a_row += 1
        MessageHub.get_current_instance().update_scalar("train/skipped_steps",
                                                        self.skipped_steps)
        MMLogger.get_current_instance().warning(
            f"{what}: update skipped ({self.nonfinite_in_a_row} in a row, "
            f"{self.skipped_steps} in all).")
        if self.nonfinite_in_a_row >= self.max_consecutive_nonfinite:
            raise FloatingPointError(
                f"The loss or its gradients were NaN/Inf {self.nonfinite_in_a_row} times in a "
                "row; stopping. The latest checkpoint predates the divergence: lower the LR, "
                "enable gradient clipping (optim_wrapper.clip_grad) or check the data, then "
                "--resume. Raise optim_wrapper.max_consecutive_nonfinite to tolerate more.")

    def _params(self) -> list:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def _scaler_handles_grads(self) -> bool:
        scaler = getattr(self, "loss_scaler", None)
        return scaler is not None and scaler.is_enabled()

    def step(self, **kwargs) -> None:
        skip, self._skip_next_step = self._skip_next_step, False
        if not skip and not self._scaler_handles_grads() and \
                not grads_finite_on_all_ranks(self._params()):
            skip = True
            self._count_skip("Non-finite gradients with a finite loss")
        self.last_update_skipped = skip
        if skip:
            self.optimizer.zero_grad()
            return
        super().step(**kwargs)
        self.nonfinite_in_a_row = 0
        params = [_local(p) for p in self._params()]
        if params and not torch.isfinite(torch.stack(torch._foreach_norm(params)).sum()):
            # Raised before any hook can checkpoint the broken weights.
            raise FloatingPointError(
                "An optimizer step made the weights NaN/Inf although the loss was finite "
                "(an overflowing update); stopping before it is checkpointed. Lower the "
                "LR or enable gradient clipping (optim_wrapper.clip_grad), then --resume.")


@OPTIM_WRAPPERS.register_module()
class GuardedOptimWrapper(NonFiniteGuard, OptimWrapper):
    """``OptimWrapper`` that skips non-finite losses and gradients."""


@OPTIM_WRAPPERS.register_module()
class GuardedAmpOptimWrapper(NonFiniteGuard, AmpOptimWrapper):
    """``AmpOptimWrapper`` (bf16/fp16 autocast) that skips non-finite losses;
    non-finite gradients are left to its GradScaler (skip + lower the scale)."""
