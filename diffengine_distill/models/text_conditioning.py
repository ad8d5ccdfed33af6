"""Latent, text-conditioned teachers: Stable Diffusion 1.x/2.x and SDXL.

``StableDiffusionDataPreprocessor`` turns a batch of images and captions into
VAE latents and the UNet's text conditioning, so every method (training,
PD, SFD, DMD) works on latents unchanged: the methods pass the conditioning
dict straight to the UNet. The VAE and text encoders are frozen, loaded from
the base model folder or hub id, and kept out of checkpoints.
"""
from __future__ import annotations

import os.path as osp

import torch
from torch import Tensor

from diffengine_distill.registry import MODELS

from .builders import _looks_local, load_pretrained
from .data_preprocessor import DiffusionDataPreprocessor
from .editors.sample_rng import batch_rng

DTYPES = dict(float32=torch.float32, float16=torch.float16, bfloat16=torch.bfloat16)


def _dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {name!r}.")
    return DTYPES[name]


def _graph_if_trainable(encode):
    """Frozen text encoders run without a graph; LoRA-trained ones need it."""
    import functools

    @functools.wraps(encode)
    def wrapper(self, *args, **kwargs):
        trainable = any(p.requires_grad for p in self.text_encoders.parameters())
        with torch.set_grad_enabled(trainable and torch.is_grad_enabled()):
            return encode(self, *args, **kwargs)
    return wrapper


@MODELS.register_module()
class StableDiffusionDataPreprocessor(DiffusionDataPreprocessor):
    """Images -> latents (a draw of ``vae.encode(x).latent_dist`` times
    ``scaling_factor``; with dataset indices the draw is tied to the sample,
    so N processes encode a batch as one process does),
    captions -> ``encoder_hidden_states`` (SDXL: both encoders' penultimate
    layers concatenated, plus ``added_cond_kwargs`` with the pooled embedding
    and ``add_time_ids``).

    Args:
        model: the base model, a hub id or a local diffusers folder with
            ``vae/``, ``tokenizer/``, ``text_encoder/`` (and ``_2`` for SDXL).
        vae: another VAE (e.g. ``madebyollin/sdxl-vae-fp16-fix``), or None.
        variant, dtype: weights variant and dtype of the frozen parts.
        latent_seed: seed of the per-sample latent draws (a stream of its
            own: the methods' noise seeds default to 0).
    """

    def __init__(self, model: str, vae: str | None = None, variant: str | None = None,
                 dtype: str = "float32", latent_seed: int = 99991):
        super().__init__()
        from diffusers import AutoencoderKL
        from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer
        self.model_path, self.dtype_name = model, dtype
        self.latent_seed = int(latent_seed)
        weights = dict(variant=variant, torch_dtype=_dtype(dtype))
        self.xl = _has_subfolder(model, "text_encoder_2")
        tokenizers = [load_pretrained(CLIPTokenizer, model, subfolder="tokenizer")]
        encoders = [load_pretrained(CLIPTextModel, model, subfolder="text_encoder", **weights)]
        if self.xl:
            tokenizers.append(load_pretrained(CLIPTokenizer, model, subfolder="tokenizer_2"))
            encoders.append(load_pretrained(CLIPTextModelWithProjection, model,
                                            subfolder="text_encoder_2", **weights))
        self.tokenizers = tokenizers
        self.text_encoders = torch.nn.ModuleList(encoders).eval().requires_grad_(False)
        self.vae = (load_pretrained(AutoencoderKL, vae, torch_dtype=_dtype(dtype)) if vae else
                    load_pretrained(AutoencoderKL, model, subfolder="vae", **weights))
        self.vae.eval().requires_grad_(False)
        # CFG's unconditional input: zeros (prompt and pooled embeddings) where
        # diffusers' SDXL pipeline uses them (its force_zeros_for_empty_prompt,
        # default True; DMD2's SDXL too), else the encoded empty prompt (SD 1.x/2.x).
        self.zero_uncond = self.xl and _model_index(model).get(
            "force_zeros_for_empty_prompt", True)
        # Frozen and re-loadable from `model`: not worth gigabytes per checkpoint.
        self._register_state_dict_hook(_drop_frozen)
        self.register_load_state_dict_post_hook(_ignore_missing_frozen)

    # -- the UNet must match the text encoders ---------------------------------------
    def check_unet(self, unet) -> None:
        cfg = unet.config
        width = sum(e.config.hidden_size for e in self.text_encoders)
        wants_xl = getattr(cfg, "addition_embed_type", None) == "text_time"
        if wants_xl != self.xl or cfg.cross_attention_dim != width:
            kind = "SDXL (addition_embed_type='text_time')" if wants_xl else "SD 1.x/2.x"
            raise ValueError(
                f"Mismatched components: the UNet is {kind} with cross_attention_dim="
                f"{cfg.cross_attention_dim}, but {self.model_path!r} has "
                f"{len(self.text_encoders)} text encoder(s) of total width {width}"
                f"{' (SDXL)' if self.xl else ''}. Load the UNet and the data preprocessor "
                "from the same base model.")

    # -- encoding ---------------------------------------------------------------------
    @_graph_if_trainable
    def encode_text(self, prompts: list[str], time_ids: Tensor | None = None,
                    size: tuple[int, int] | None = None) -> dict:
        device = self.vae.device
        states, pooled = [], None
        for tokenizer, encoder in zip(self.tokenizers, self.text_encoders):
            ids = tokenizer(list(prompts), padding="max_length", truncation=True,
                            max_length=tokenizer.model_max_length,
                            return_tensors="pt").input_ids.to(device)
            out = encoder(ids, output_hidden_states=self.xl)
            if self.xl:
                states.append(out.hidden_states[-2])
                pooled = out[0]  # the last encoder's projected pooled embedding
            else:
                states.append(out[0])
        cond = dict(encoder_hidden_states=torch.cat(states, dim=-1).float())
        if self.xl:
            if time_ids is None:  # no crop, original size = target size
                h, w = size
                time_ids = torch.tensor([[h, w, 0, 0, h, w]] * len(prompts))
            cond["added_cond_kwargs"] = dict(text_embeds=pooled.float(),
                                             time_ids=time_ids.to(device).float())
        return cond

    def encode_empty(self, n: int, time_ids: Tensor | None = None) -> dict:
        """The unconditional input of classifier-free guidance, as diffusers'
        pipeline of this model builds it: ``encode_text([""] * n, time_ids)``, or
        zeros of that shape (``zero_uncond``); computed once per run (CFG needs
        it every iteration)."""
        if getattr(self, "_empty", None) is None:
            self._empty = self.encode_text([""], size=(0, 0))
            if self.zero_uncond:
                self._empty = dict(
                    encoder_hidden_states=torch.zeros_like(
                        self._empty["encoder_hidden_states"]),
                    added_cond_kwargs=dict(text_embeds=torch.zeros_like(
                        self._empty["added_cond_kwargs"]["text_embeds"])))
        cond = dict(encoder_hidden_states=self._empty["encoder_hidden_states"].expand(
            n, -1, -1))
        if self.xl:
            cond["added_cond_kwargs"] = dict(
                text_embeds=self._empty["added_cond_kwargs"]["text_embeds"].expand(n, -1),
                time_ids=time_ids.float())
        return cond

    @torch.no_grad()
    def encode_images(self, images: Tensor, data_samples: dict | None = None) -> Tensor:
        """mean + std * noise of the VAE posterior (diffusers' ``sample()``),
        the noise drawn per sample when ``data_samples`` has dataset indices."""
        dist = self.vae.encode(images.to(self.vae.dtype)).latent_dist
        rng = batch_rng(data_samples, images.shape[0], self.latent_seed, images.device)
        noise = rng.randn(*dist.mean.shape[1:]).to(dist.mean.dtype)
        return (dist.mean + dist.std * noise).float() * self.vae.config.scaling_factor

    def forward(self, data: dict, training: bool = False) -> dict:
        out = super().forward(data, training)
        samples = data.get("data_samples") or {}
        prompts = samples.get("text")
        if prompts is None or any(p is None for p in prompts):
            raise ValueError("Text-conditioned training needs a caption per image: use "
                             "CaptionImageFolderDataset (metadata.jsonl / metadata.csv).")
        images = out["inputs"]
        raw = data["inputs"]
        pixels = (raw[0] if isinstance(raw, (list, tuple)) else raw).dtype == torch.uint8
        vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        size = tuple(images.shape[-2:]) if pixels else \
            tuple(s * vae_scale for s in images.shape[-2:])
        time_ids = samples.get("time_ids")
        if time_ids is not None:
            time_ids = torch.as_tensor([list(t) for t in time_ids])
        out["data_samples"].update(
            labels=None, text=list(prompts),
            cond=self.encode_text(prompts, time_ids, size))
        if pixels:  # float inputs (noise for SFD, latents) are the UNet's already
            out["inputs"] = self.encode_images(images, out["data_samples"])
        return out

    # -- export -------------------------------------------------------------------------
    def pipeline(self, unet, scheduler):
        """The diffusers text-to-image pipeline of these components and ``unet``."""
        from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
        parts = dict(vae=self.vae, text_encoder=self.text_encoders[0],
                     tokenizer=self.tokenizers[0], unet=unet, scheduler=scheduler)
        if self.xl:
            return StableDiffusionXLPipeline(text_encoder_2=self.text_encoders[1],
                                             tokenizer_2=self.tokenizers[1],
                                             force_zeros_for_empty_prompt=self.zero_uncond,
                                             **parts)
        return StableDiffusionPipeline(safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False, **parts)


_FROZEN = ("vae.", "text_encoders.")


def _drop_frozen(module, state_dict, prefix, local_metadata):
    # Text-encoder LoRA adapters are trained: checkpoints keep them.
    for key in [k for k in state_dict if k[len(prefix):].startswith(_FROZEN)
                and "lora_" not in k]:
        del state_dict[key]


def _ignore_missing_frozen(module, incompatible):
    incompatible.missing_keys[:] = [k for k in incompatible.missing_keys
                                    if not any(f".{f}" in f".{k}" or k.startswith(f)
                                               for f in _FROZEN)]


def _model_index(model: str) -> dict:
    """The base model's model_index.json (pipeline options), {} if it has none."""
    import json
    local = osp.expanduser(model)
    try:
        if osp.isdir(local):
            path = osp.join(local, "model_index.json")
        else:
            from huggingface_hub import hf_hub_download
            path = hf_hub_download(model, "model_index.json")
        with open(path) as f:
            return json.load(f)
    except Exception:  # noqa: BLE001 (no file, or offline: the pipeline's defaults)
        return {}


def _has_subfolder(model: str, name: str) -> bool:
    local = osp.expanduser(model)
    if osp.isdir(local):
        return osp.isdir(osp.join(local, name))
    if _looks_local(local):
        raise FileNotFoundError(
            f"Base model not found: {model!r} is not a directory. Give a local diffusers "
            "folder (with vae/, tokenizer/, text_encoder/, unet/) or a hub id like "
            "'stable-diffusion-v1-5/stable-diffusion-v1-5'.")
    try:  # a hub id: its model_index.json lists the components
        import json

        from huggingface_hub import hf_hub_download
        with open(hf_hub_download(model, "model_index.json")) as f:
            return name in json.load(f)
    except Exception as err:  # noqa: BLE001
        raise OSError(f"Could not read {model!r}/model_index.json ({err}); with "
                      "HF_HUB_OFFLINE=1 give a local diffusers folder.") from err
