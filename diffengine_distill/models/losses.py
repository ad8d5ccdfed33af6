"""Diffusion regression loss with the usual SNR weightings.

Every weighting is defined on the x0-MSE, w(SNR) * ||x0_hat - x0||^2, and
applied to the MSE of the model's own parameterisation, which equals the
x0-MSE times SNR (eps) or SNR + 1 (v). Dividing by that factor in closed form
avoids converting a prediction into x0 where alpha is tiny.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from diffengine_distill.registry import MODELS

from ..diffusion import check_prediction_type

WEIGHTINGS = ("uniform", "snr", "truncated_snr", "snr_plus_one", "min_snr")
# The weighting under which each prediction type's own MSE is the loss
# (e.g. an eps model's training loss, applied to a v student's output).
OWN_MSE_WEIGHTING = dict(epsilon="snr", v_prediction="snr_plus_one", sample="uniform")


def x0_mse_factor(snr: Tensor, prediction_type: str) -> Tensor:
    """MSE of this parameterisation divided by the x0-MSE."""
    check_prediction_type(prediction_type)
    if prediction_type == "epsilon":
        return snr
    if prediction_type == "v_prediction":
        return snr + 1
    return torch.ones_like(snr)


def snr_weight(snr: Tensor, weighting: str, prediction_type: str,
               snr_gamma: float = 5.0) -> Tensor:
    """Per-sample (B,) weight on the MSE of ``prediction_type``."""
    if weighting == "uniform":
        return torch.ones_like(snr)
    if weighting == "snr":  # x0-MSE * SNR, i.e. the DDPM eps-MSE
        w_x0 = snr
    elif weighting == "truncated_snr":  # PD: max(SNR, 1)
        w_x0 = snr.clamp_min(1.0)
    elif weighting == "snr_plus_one":  # the v-MSE
        w_x0 = snr + 1
    elif weighting == "min_snr":  # Hang et al. 2023: min(SNR, gamma)
        w_x0 = snr.clamp_max(snr_gamma)
    else:
        raise ValueError(f"Unknown weighting {weighting!r}; use one of {WEIGHTINGS}.")
    # An eps prediction at zero SNR carries no x0 information: the weight is
    # 0/0 (snr, min_snr: limit 1) or 1/0 (truncated_snr, snr_plus_one). Use 1,
    # a finite stand-in for a timestep where eps-prediction is ill-posed anyway.
    factor = x0_mse_factor(snr, prediction_type)
    return torch.where(factor > 0, w_x0 / factor.clamp_min(1e-30), torch.ones_like(snr))


@MODELS.register_module()
class DiffusionLoss(nn.Module):
    """Weighted MSE between a prediction and its target, mean over batch.

    Args:
        weighting: one of ``uniform`` (plain MSE of the model's target),
            ``snr``, ``truncated_snr`` (max(SNR, 1)), ``snr_plus_one`` and
            ``min_snr`` (min(SNR, gamma)), all defined on the x0-MSE.
        snr_gamma: gamma of ``min_snr``.
        loss_weight: overall multiplier.
    """

    def __init__(self, weighting: str = "uniform", snr_gamma: float = 5.0,
                 loss_weight: float = 1.0):
        super().__init__()
        if weighting not in WEIGHTINGS:
            raise ValueError(f"Unknown weighting {weighting!r}; use one of {WEIGHTINGS}.")
        self.weighting, self.snr_gamma, self.loss_weight = weighting, snr_gamma, loss_weight

    def forward(self, pred: Tensor, target: Tensor, snr: Tensor,
                prediction_type: str) -> Tensor:
        per_sample = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
        weight = snr_weight(snr.to(per_sample), self.weighting, prediction_type,
                            self.snr_gamma)
        return self.loss_weight * (weight * per_sample).mean()
