"""Models by hub id, as users name them, from a local Hugging Face cache with
the real repos' layouts (tests/hub_cache.py), offline."""
import pytest
import torch

from hub_cache import (CIFAR10, SD15, SDXL, SDXL_VAE, TAESD, TERMINUS, hub,  # noqa: F401
                       offline_hub)


@pytest.mark.parametrize("repo, unet_class, scheduler_class, prediction", [
    (SD15, "UNet2DConditionModel", "PNDMScheduler", "epsilon"),
    (SDXL, "UNet2DConditionModel", "EulerDiscreteScheduler", "epsilon"),
    (TERMINUS, "UNet2DConditionModel", "EulerDiscreteScheduler", "v_prediction"),
    (CIFAR10, "UNet2DModel", "DDPMScheduler", "epsilon"),
])
def test_classes_come_from_the_models_own_config(offline_hub, repo, unet_class,
                                                 scheduler_class, prediction):
    from diffusers import DiffusionPipeline

    from diffengine_distill.models.builders import build_scheduler, pretrained_unet
    unet = pretrained_unet(path=repo)
    scheduler = build_scheduler(dict(type="pretrained", path=repo))
    assert type(unet).__name__ == unet_class
    assert type(scheduler).__name__ == scheduler_class
    assert scheduler.config.prediction_type == prediction
    # The same weights as diffusers' own pipeline loads.
    reference = DiffusionPipeline.from_pretrained(repo).unet
    for name, value in reference.state_dict().items():
        assert torch.equal(unet.state_dict()[name], value), name
    # class_name overrides what the config records.
    assert type(build_scheduler(dict(type="pretrained", path=repo,
                                     class_name="DDPMScheduler"))).__name__ == "DDPMScheduler"


def test_bare_autoencoders_by_hub_id(offline_hub):
    from diffengine_distill.models.builders import load_vae
    assert type(load_vae(SDXL_VAE)).__name__ == "AutoencoderKL"
    assert load_vae(SDXL_VAE).config.scaling_factor == 0.13025
    assert type(load_vae(TAESD, "AutoencoderTiny")).__name__ == "AutoencoderTiny"


def test_missing_hub_id_offline_names_the_id_and_the_fix(offline_hub):
    from diffengine_distill.models.builders import build_scheduler, pretrained_unet
    for build in (lambda: pretrained_unet(path="runwayml/stable-diffusion-v1-5"),
                  lambda: build_scheduler(dict(type="pretrained",
                                               path="runwayml/stable-diffusion-v1-5"))):
        with pytest.raises(OSError) as err:
            build()
        message = str(err.value)
        assert "runwayml/stable-diffusion-v1-5" in message
        assert "HF_HUB_OFFLINE" in message and "huggingface-cli download" in message
