"""LPIPS, the perceptual distance of SFD's second stage and DMD's regression loss."""
from __future__ import annotations

import torch
from torch import Tensor


def build_lpips(option: str, fallback: str):
    """LPIPS (AlexNet) from the ``lpips`` package, with its weights already local.

    ``option`` names the config key that asked for it, ``fallback`` the
    documented alternative, both quoted in the error.
    """
    fix = f"or set {fallback}, the documented fallback."
    try:
        import lpips
    except ImportError as err:
        raise ImportError(f"{option}='lpips' needs the `lpips` package (pip install lpips) "
                          f"with its AlexNet weights in the torch hub cache, {fix}") from err
    try:
        return lpips.LPIPS(net="alex", verbose=False).eval().requires_grad_(False)
    except Exception as err:  # noqa: BLE001 (download attempts fail in many ways offline)
        raise RuntimeError(f"Could not build LPIPS ({err}): put the AlexNet weights in the "
                           f"torch hub cache, {fix}") from err


def lpips_distance(net, x: Tensor, y: Tensor, size: int | None = 224) -> Tensor:
    """Per-image LPIPS at ``size`` px (224 as sfd-main; None: as they are);
    one-channel images are repeated to RGB."""
    def prep(img):
        img = img.repeat(1, 3, 1, 1) if img.shape[1] == 1 else img
        if size is None:
            return img
        return torch.nn.functional.interpolate(img, size=size, mode="bilinear")
    return net.to(x.device)(prep(x), prep(y)).flatten()
