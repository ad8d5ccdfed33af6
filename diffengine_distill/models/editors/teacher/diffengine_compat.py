"""diffengine's (okotaku/diffengine) model keys, mapped onto this package's.

Keys that map one-to-one are renamed; the others fail at start with a
message naming what to use instead (docs/diffengine_compat.md has the table).
"""
from __future__ import annotations

import dataclasses

# diffengine key -> why it is refused and what to use instead.
REFUSED = {
    "noise_generator": "offset / pyramid noise changes the VP noise schedule the exports pin; "
                       "remove it (plain Gaussian noise)",
    "noise_offset_weight": "offset noise changes the VP noise schedule the exports pin; remove it",
    "timesteps_generator": "remove it (t is drawn uniformly; the loss weighting is "
                           "model.loss=dict(type='DiffusionLoss', weighting=...))",
    "input_perturbation_gamma": "input perturbation is not implemented; remove it",
    "prior_loss_weight": "DreamBooth prior preservation is not implemented; remove it",
    "pre_compute_text_embeddings": "remove it (the text encoders run per batch; frozen "
                                   "ones without a graph)",
    "tokenizer": "the tokenizers load from model.base_model",
    "tokenizer_one": "the tokenizers load from model.base_model",
    "tokenizer_two": "the tokenizers load from model.base_model",
    "text_encoder": "the text encoders load from model.base_model",
    "text_encoder_one": "the text encoders load from model.base_model",
    "text_encoder_two": "the text encoders load from model.base_model",
    "vae": "use model.vae_model (a VAE folder or hub id) or "
           "model.data_preprocessor.vae",
}
# diffengine's data preprocessors: ours is derived from the base model.
PREPROCESSORS = ("SDDataPreprocessor", "SDXLDataPreprocessor")


def lora_options(options: dict, key: str = "lora_config") -> dict:
    """PEFT ``LoraConfig`` options; diffengine's ``dict(type="LoRA", r=...,
    lora_alpha=..., target_modules=[...])`` is accepted as is."""
    from peft import LoraConfig
    options = dict(options)
    kind = options.pop("type", "LoRA")
    if kind != "LoRA":
        raise ValueError(f"model.{key}: type={kind!r} is not supported; only type='LoRA' "
                         "(PEFT LoraConfig options r, lora_alpha, target_modules, ...).")
    if "rank" in options:
        raise ValueError(f"model.{key}: rank= is diffengine's pre-PEFT key; use r=<rank>, "
                         "lora_alpha=<rank> and target_modules=['to_q', 'to_k', 'to_v', "
                         "'to_out.0'].")
    known = {f.name for f in dataclasses.fields(LoraConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"model.{key} has unknown option(s) {unknown}; PEFT LoraConfig "
                         "takes e.g. r, lora_alpha, target_modules, lora_dropout, "
                         "init_lora_weights.")
    return options


def translate_keys(owner: str, extra: dict, base_model, lora_config, data_preprocessor,
                   attention: str):
    """Map diffengine's keys in ``extra`` (keyword arguments ``owner`` does not
    take) onto ``base_model``, ``lora_config``, the data preprocessor's VAE and
    ``attention``; anything else is an error naming the key to use."""
    extra = dict(extra)
    model = extra.pop("model", None)
    if model is not None:
        if base_model is not None and base_model != model:
            raise ValueError(f"model.model={model!r} (diffengine's key) and model.base_model="
                             f"{base_model!r} disagree: set only model.base_model.")
        base_model = model
    unet_lora = extra.pop("unet_lora_config", None)
    if unet_lora is not None:
        if lora_config:
            raise ValueError("model.unet_lora_config (diffengine's key) and model.lora_config "
                             "are both set: keep one.")
        lora_config = unet_lora
    vae = extra.pop("vae_model", None)
    if isinstance(data_preprocessor, dict) and \
            data_preprocessor.get("type") in PREPROCESSORS:
        data_preprocessor = {k: v for k, v in data_preprocessor.items() if k != "type"}
    if vae is not None:
        if not (data_preprocessor is None or isinstance(data_preprocessor, dict)):
            raise ValueError("model.vae_model needs a data_preprocessor config, not a module.")
        data_preprocessor = dict(data_preprocessor or {}, vae=vae)
    if extra.pop("enable_xformers", False):
        attention = "xformers"
    for key in ("text_encoder_lora_config", "finetune_text_encoder"):
        if extra.get(key):
            raise ValueError(f"model.{key}: text-encoder LoRA is trained by DiffusionModel "
                             f"(fine-tuning) only; {owner} keeps the text encoders frozen.")
        extra.pop(key, None)
    for key in extra:
        if key in REFUSED:
            raise ValueError(f"model.{key} (a diffengine key) is not supported by {owner}: "
                             f"{REFUSED[key]}.")
    if extra:
        raise TypeError(f"{owner} got unknown model key(s) {sorted(extra)}; see its docstring "
                        "and docs/diffengine_compat.md for diffengine's keys.")
    return base_model, lora_config, data_preprocessor, attention


def translate_loss(loss: dict | None) -> dict | None:
    """diffengine's ``L2Loss`` is the plain MSE of ``DiffusionLoss``."""
    if not isinstance(loss, dict):
        return loss
    kind = loss.get("type")
    if kind == "L2Loss":
        unknown = sorted(set(loss) - {"type", "loss_weight"})
        if unknown:
            raise ValueError(f"model.loss: L2Loss option(s) {unknown} are not supported.")
        return dict(type="DiffusionLoss", weighting="uniform",
                    loss_weight=loss.get("loss_weight", 1.0))
    if kind in ("SNRL2Loss", "DeBiasEstimationLoss", "HuberLoss"):
        raise ValueError(
            f"model.loss: diffengine's {kind} is not supported; use dict(type="
            "'DiffusionLoss', weighting='min_snr', snr_gamma=5.0) (min(SNR, gamma)/(SNR+1) "
            "for v-prediction; diffengine's SNRL2Loss used min(SNR+1, gamma)) or another "
            "weighting of DiffusionLoss.")
    return loss
