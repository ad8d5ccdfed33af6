"""DMD's fake score (critic): a copy of the teacher UNet, plus DMD2's GAN head."""
from __future__ import annotations

from torch import Tensor, nn

from ..conditioning import unet_kwargs


def gan_head(unet_config) -> nn.Sequential:
    """DMD2's classifier on the UNet's mid-block features: stride-2 4x4 convs
    down to 2x2 (GroupNorm + SiLU after each), a conv to 1x1, a 1x1 conv to one
    logit."""
    cfg = unet_config
    if getattr(cfg, "mid_block_type", "") is None:
        raise ValueError("The GAN head reads the UNet's mid block, which this UNet lacks.")
    channels = cfg.block_out_channels[-1]
    size = cfg.sample_size if isinstance(cfg.sample_size, int) else min(cfg.sample_size)
    res = max(1, size // 2 ** (len(cfg.block_out_channels) - 1))
    groups = cfg.norm_num_groups or 32

    def block(conv):
        return [conv, nn.GroupNorm(groups, channels), nn.SiLU()]
    layers = []
    while res > 2:
        layers += block(nn.Conv2d(channels, channels, 4, stride=2, padding=1))
        res //= 2
    layers += block(nn.Conv2d(channels, channels, res))
    layers.append(nn.Conv2d(channels, 1, 1))
    return nn.Sequential(*layers)


class DMDCritic(nn.Module):
    """Fake score network; with ``gan=True`` also DMD2's real/fake classifier.

    One ``forward`` call serves a whole critic update (denoising and GAN rows
    concatenated), so DDP sees one forward per backward.
    """

    def __init__(self, unet: nn.Module, gan: bool = False):
        super().__init__()
        self.unet = unet
        self.gan_head = gan_head(unet.config) if gan else None

    def forward(self, z: Tensor, t: Tensor, labels=None,
                with_logits: bool = False) -> tuple[Tensor, Tensor | None]:
        """(UNet output, logits (B,) or None)."""
        if with_logits and self.gan_head is None:
            raise ValueError("This critic has no GAN head (built with gan=False).")
        features = []
        hook = self.unet.mid_block.register_forward_hook(
            lambda module, args, out: features.append(out)) if with_logits else None
        try:
            out = self.unet(z, t, **unet_kwargs(labels)).sample
        finally:
            if hook is not None:
                hook.remove()
        logits = self.gan_head(features[0]).flatten() if with_logits else None
        return out, logits


def set_trainable(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


class frozen:  # noqa: N801 (a context manager used like a function)
    """Parameters of ``module`` stop requiring grad inside the block (DMD's
    generator step: gradients flow through the critic, never into it)."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __enter__(self):
        set_trainable(self.module, False)

    def __exit__(self, *exc):
        set_trainable(self.module, True)
        return False


__all__ = ["DMDCritic", "frozen", "gan_head", "set_trainable"]
