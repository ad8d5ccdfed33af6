"""Tiny Stable Diffusion / SDXL pipelines built from config dicts (nothing is
downloaded), saved as local diffusers folders that configs load with
``from_pretrained(path)``. The tokenizer vocabulary ships in tests/data."""
import os.path as osp

import torch

TOKENIZER = osp.join(osp.dirname(osp.abspath(__file__)), "data", "tiny_clip_tokenizer")
TEXT = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
            vocab_size=514, max_position_embeddings=16, bos_token_id=512, eos_token_id=513,
            pad_token_id=513, projection_dim=32)
UNET = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
            block_out_channels=(32, 64), norm_num_groups=32, attention_head_dim=4,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 32),
           norm_num_groups=32, layers_per_block=1, sample_size=16,
           down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                 beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                 steps_offset=1, prediction_type="epsilon")


def make_tiny_sd(folder, xl: bool = False) -> str:
    """An SD-1.5-like (or SDXL-like) pipeline folder: 16 px images, 8 px latents."""
    from diffusers import (AutoencoderKL, DDIMScheduler, EulerDiscreteScheduler,
                           StableDiffusionPipeline, StableDiffusionXLPipeline,
                           UNet2DConditionModel)
    from transformers import (CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection,
                              CLIPTokenizer)
    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(TOKENIZER)
    vae = AutoencoderKL(**VAE)
    if not xl:
        pipe = StableDiffusionPipeline(
            vae=vae, text_encoder=CLIPTextModel(CLIPTextConfig(**TEXT)), tokenizer=tokenizer,
            unet=UNet2DConditionModel(**UNET, cross_attention_dim=32),
            scheduler=DDIMScheduler(**SCHEDULER), safety_checker=None, feature_extractor=None,
            requires_safety_checker=False)
    else:
        unet = UNet2DConditionModel(
            **UNET, cross_attention_dim=64, addition_embed_type="text_time",
            addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + 32,
            transformer_layers_per_block=1)
        pipe = StableDiffusionXLPipeline(
            vae=vae, text_encoder=CLIPTextModel(CLIPTextConfig(**TEXT)), tokenizer=tokenizer,
            text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**TEXT)),
            tokenizer_2=tokenizer, unet=unet,
            scheduler=EulerDiscreteScheduler(**{k: v for k, v in SCHEDULER.items()
                                                if k not in ("clip_sample", "set_alpha_to_one")}))
    pipe.save_pretrained(folder)
    return str(folder)
