"""Exports sample without the training stack: in a fresh interpreter, loading
and sampling every kind of export imports neither mmengine nor the method
editors nor the tools' APIs (only diffusers and the package's math,
schedulers and pipeline)."""
import json
import os.path as osp
import subprocess
import sys

import torch

from tiny_sd import make_tiny_sd

TRAINING = ("mmengine", "diffengine_distill.models", "diffengine_distill.apis",
            "diffengine_distill.registry")
PIXEL_UNET = dict(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                  block_out_channels=(8, 16), norm_num_groups=4,
                  down_block_types=("DownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "UpBlock2D"))
BETAS = dict(num_train_timesteps=1000, beta_schedule="linear")
SIGMAS = dict(sigma_min=0.02, sigma_max=80.0)  # inside the linear schedule's 0.01 .. 157

SAMPLE = r"""
import json, sys
import numpy as np
import torch
import diffusers
import diffengine_distill  # the exports' schedulers and pipeline, as the docs say
folder, kind = sys.argv[1], sys.argv[2]
index = json.load(open(folder + "/model_index.json"))
cls = getattr(diffusers, index["_class_name"], None) or \
    getattr(diffengine_distill, index["_class_name"])
pipe = cls.from_pretrained(folder)
pipe.set_progress_bar_config(disable=True)
gen = torch.Generator().manual_seed(0)
if kind == "text":
    out = pipe("a prompt", num_inference_steps=2, guidance_scale=1.0, generator=gen,
               output_type="np").images
elif kind == "class":
    out = pipe(class_labels=[3], num_inference_steps=2, generator=gen, output_type="np").images
else:
    out = pipe(batch_size=1, num_inference_steps=2, generator=gen, output_type="np").images
leaked = [m for m in sys.modules if m.startswith({training!r})]
print(json.dumps(dict(leaked=leaked, image=np.asarray(out).tolist())))
""".replace("{training!r}", repr(TRAINING))


def _exports(root):
    """One folder per kind of export, built from diffusers and the package's
    schedulers / pipeline alone (no training code)."""
    from diffusers import (DDIMPipeline, DDIMScheduler, StableDiffusionPipeline,
                           UNet2DModel)

    from diffengine_distill import GridDDIMScheduler, SamplerPipeline, SFDScheduler
    torch.manual_seed(0)
    unet = UNet2DModel(**PIXEL_UNET)
    cond = UNet2DModel(**PIXEL_UNET, num_class_embeds=10 * 8)  # SFD-v: class x step count
    kinds = {
        "ddim": ("plain", DDIMPipeline(unet, DDIMScheduler(**BETAS, prediction_type="v_prediction",
                                                           timestep_spacing="trailing"))),
        "grid_ddim": ("plain", SamplerPipeline(unet, GridDDIMScheduler(**BETAS))),
        "class_ddim": ("class", SamplerPipeline(UNet2DModel(**PIXEL_UNET, num_class_embeds=11),
                                                DDIMScheduler(**BETAS))),
        "sfd": ("plain", SamplerPipeline(unet, SFDScheduler(**BETAS, **SIGMAS, num_steps=4))),
        "sfd_v": ("class", SamplerPipeline(cond, SFDScheduler(
            **BETAS, **SIGMAS, num_steps=4, step_range=(4, 7), step_condition_size=8, num_classes=10))),
    }
    folders = {}
    for name, (kind, pipe) in kinds.items():
        pipe.save_pretrained(str(root / name))
        folders[name] = (kind, str(root / name))
    text = StableDiffusionPipeline.from_pretrained(make_tiny_sd(root / "sd_base"))
    text.scheduler = SFDScheduler(beta_start=0.00085, beta_end=0.012,
                                  beta_schedule="scaled_linear", num_steps=4, sigma_min=0.1,
                                  sigma_max=14.6)
    text.save_pretrained(str(root / "sd_sfd"))
    folders["sd_sfd"] = ("text", str(root / "sd_sfd"))
    return folders


def test_every_kind_of_export_samples_without_the_training_stack(tmp_path):
    for name, (kind, folder) in _exports(tmp_path).items():
        proc = subprocess.run([sys.executable, "-c", SAMPLE, folder, kind],
                              capture_output=True, text=True)
        assert proc.returncode == 0, f"{name}: {proc.stderr[-3000:]}"
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        assert result["leaked"] == [], f"{name} imported {result['leaked']}"
        image = torch.tensor(result["image"])
        assert image.std() > 0, name
        with open(osp.join(folder, "model_index.json")) as f:
            assert json.load(f)["scheduler"][0].startswith(("diffusers", "diffengine_distill"))
