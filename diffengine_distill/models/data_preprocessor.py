from __future__ import annotations

import torch
from mmengine.model import BaseDataPreprocessor

from diffengine_distill.registry import MODELS


@MODELS.register_module()
class DiffusionDataPreprocessor(BaseDataPreprocessor):
    """Stacks uint8 images into a float batch in [-1, 1] and packs labels;
    float inputs (noise, latents) pass through unscaled.

    Output: ``dict(inputs=(B, C, H, W) float, data_samples=dict(labels=(B,)
    long or None[, indices=(B,) dataset indices][, noise=(B, C, H, W)]))``,
    the keyword arguments of the models' ``forward``; ``indices`` key
    per-sample noise, ``noise`` comes from noise-image pairs (DMD).
    """

    def forward(self, data: dict, training: bool = False) -> dict:
        data = self.cast_data(data)
        inputs = data["inputs"]
        if isinstance(inputs, (list, tuple)):
            inputs = torch.stack(list(inputs))
        inputs = inputs.float() / 127.5 - 1.0 if inputs.dtype == torch.uint8 else inputs.float()
        # pseudo_collate turns the per-sample dicts into a dict of lists.
        labels = (data.get("data_samples") or {}).get("label")
        if labels is not None and any(label is None for label in labels):
            labels = None
        if labels is not None:
            labels = torch.as_tensor(labels, device=inputs.device).long()
        samples = dict(labels=labels)
        indices = (data.get("data_samples") or {}).get("index")
        if indices is not None and all(i is not None for i in indices):
            samples["indices"] = torch.as_tensor(list(indices)).long()
        noise = (data.get("data_samples") or {}).get("noise")
        if noise is not None:
            samples["noise"] = torch.stack(list(noise)).to(inputs) \
                if isinstance(noise, (list, tuple)) else noise.to(inputs)
        return dict(inputs=inputs, data_samples=samples)
