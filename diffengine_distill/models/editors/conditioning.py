"""The UNet conditioning of a batch: class labels, a text dict or None."""
import torch


def unet_kwargs(cond) -> dict:
    """UNet keyword arguments of a conditioning: class labels, a dict (text), None."""
    if isinstance(cond, dict):
        return cond
    return {} if cond is None else dict(class_labels=cond)


def cat_conditions(conds: list):
    """Concatenate the conditioning of several batches: class labels, text
    dicts (nested) or None."""
    first = conds[0]
    if first is None:
        return None
    if isinstance(first, dict):
        return {k: cat_conditions([c[k] for c in conds]) for k in first}
    return torch.cat(conds)
