"""A local Hugging Face cache holding tiny models under real hub ids.

``save_to_hub_cache(folder, "org/name", cache)`` copies a saved diffusers
folder into ``cache/models--org--name/snapshots/<rev>/`` with
``refs/main`` pointing at it, the layout ``huggingface_hub`` reads with
``HF_HUB_CACHE=cache HF_HUB_OFFLINE=1``. Tests then load the real ids
without any network.
"""
from __future__ import annotations

import hashlib
import os
import shutil

import pytest


def save_to_hub_cache(folder: str, repo_id: str, cache: str, kind: str = "models") -> str:
    """Copy ``folder`` into ``cache`` as the snapshot of ``repo_id`` (a
    ``kind`` repo: models or datasets); returns the snapshot folder."""
    repo = os.path.join(str(cache), f"{kind}--" + repo_id.replace("/", "--"))
    revision = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = os.path.join(repo, "snapshots", revision)
    shutil.rmtree(snapshot, ignore_errors=True)
    shutil.copytree(folder, snapshot)
    os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
    with open(os.path.join(repo, "refs", "main"), "w") as f:
        f.write(revision)
    return snapshot


# The ids the shipped configs use, each with its real repo's layout, class
# names, scheduler and prediction type (tiny weights).
SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
SDXL = "stabilityai/stable-diffusion-xl-base-1.0"
TERMINUS = "ptx0/terminus-xl-gamma-v1"
SDXL_VAE = "madebyollin/sdxl-vae-fp16-fix"
TAESD = "madebyollin/taesd"
TAESDXL = "madebyollin/taesdxl"
CIFAR10 = "google/ddpm-cifar10-32"
HUB_IDS = (SD15, SDXL, TERMINUS, SDXL_VAE, TAESD, TAESDXL, CIFAR10)

# google/ddpm-cifar10-32's scheduler_config.json
CIFAR10_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02,
                         beta_schedule="linear", clip_sample=True, variance_type="fixed_large")


def _replace_scheduler(folder: str, scheduler) -> None:
    """Swap the scheduler of a saved pipeline folder (and its model_index entry)."""
    import json
    shutil.rmtree(os.path.join(folder, "scheduler"))
    scheduler.save_pretrained(os.path.join(folder, "scheduler"))
    index = os.path.join(folder, "model_index.json")
    with open(index) as f:
        config = json.load(f)
    config["scheduler"] = ["diffusers", type(scheduler).__name__]
    with open(index, "w") as f:
        json.dump(config, f, indent=2)


def build_hub_cache(cache: str, work: str) -> str:
    """Save every id of ``HUB_IDS`` into ``cache`` (``work`` is scratch space)."""
    import torch
    from diffusers import (AutoencoderKL, AutoencoderTiny, DDPMPipeline, DDPMScheduler,
                           EulerDiscreteScheduler, PNDMScheduler, UNet2DModel)

    from tiny_sd import SCHEDULER, VAE, make_tiny_sd

    sd_betas = {k: SCHEDULER[k] for k in ("num_train_timesteps", "beta_start", "beta_end",
                                            "beta_schedule", "steps_offset")}
    folder = make_tiny_sd(os.path.join(work, "sd15"))
    _replace_scheduler(folder, PNDMScheduler(**sd_betas, skip_prk_steps=True,
                                             set_alpha_to_one=False))
    save_to_hub_cache(folder, SD15, cache)

    folder = make_tiny_sd(os.path.join(work, "sdxl"), xl=True)  # EulerDiscrete, epsilon
    save_to_hub_cache(folder, SDXL, cache)
    folder = make_tiny_sd(os.path.join(work, "terminus"), xl=True)
    _replace_scheduler(folder, EulerDiscreteScheduler(
        **sd_betas, prediction_type="v_prediction", timestep_spacing="trailing",
        rescale_betas_zero_snr=True))
    save_to_hub_cache(folder, TERMINUS, cache)

    torch.manual_seed(1)
    folder = os.path.join(work, "sdxl_vae")
    AutoencoderKL(**VAE, scaling_factor=0.13025).save_pretrained(folder)
    save_to_hub_cache(folder, SDXL_VAE, cache)
    for repo in (TAESD, TAESDXL):
        folder = os.path.join(work, repo.split("/")[1])
        AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8),
                        decoder_block_out_channels=(8, 8, 8, 8)).save_pretrained(folder)
        save_to_hub_cache(folder, repo, cache)

    folder = os.path.join(work, "cifar10")
    unet = UNet2DModel(sample_size=32, in_channels=3, out_channels=3, layers_per_block=1,
                       block_out_channels=(16, 32), norm_num_groups=8,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"))
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(**CIFAR10_SCHEDULER)).save_pretrained(folder)
    save_to_hub_cache(folder, CIFAR10, cache)
    return cache


def hub_env(cache: str) -> dict:
    """Environment variables that make ``huggingface_hub`` read only ``cache``."""
    return {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
            "HF_HOME": os.path.join(os.path.dirname(str(cache)), "hf_home")}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A module's local HF cache with every id of ``HUB_IDS``."""
    root = tmp_path_factory.mktemp("hf")
    return build_hub_cache(str(root / "hub"), str(root / "work"))


@pytest.fixture
def offline_hub(hub, monkeypatch):
    """``hub`` as this process's only source of models (``HF_HUB_OFFLINE``)."""
    import huggingface_hub.constants as constants
    for key, value in hub_env(hub).items():
        monkeypatch.setenv(key, value)
    # huggingface_hub reads these at import: patch the constants too.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", hub)
    return hub
