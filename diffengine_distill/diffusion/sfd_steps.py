"""SFD's step counts. sfd-main counts timestamps (``num_steps``): a sampler
on ``num_steps`` timestamps takes ``num_steps - 1`` steps, and the analytical
first step (AFS) needs no network call. SFD-v conditions its UNet on the count
through rows of the class-embedding table (class x count)."""
from __future__ import annotations

import torch


def nfe(num_steps: int, afs: bool) -> int:
    """Network evaluations of a sampler on ``num_steps`` timestamps."""
    return num_steps - 1 - int(afs)


def timestamps(num_evaluations: int, afs: bool) -> int:
    """The ``num_steps`` (timestamps) that take ``num_evaluations`` NFE."""
    return num_evaluations + 1 + int(afs)


def step_labels(class_labels, num_steps: int, size: int, batch_size: int, device=None):
    """Rows of SFD-v's class x step-count table (``size`` rows per class)."""
    if not 0 <= num_steps < size:
        raise ValueError(f"Step condition {num_steps} is outside the table (0..{size - 1}).")
    if class_labels is None:
        classes = torch.zeros(batch_size, dtype=torch.long, device=device)
    else:
        classes = torch.as_tensor(class_labels, device=device).long().flatten()
    return classes * size + num_steps
