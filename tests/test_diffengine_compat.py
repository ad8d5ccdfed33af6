"""diffengine users at home: one base-model key, LoRA alpha != rank through
every export format, text-encoder LoRA, and diffengine's own config keys
(a diffengine-style SDXL config runs with its hub ids from a local cache)."""
import os
import shutil

import pytest
import torch
from mmengine.config import Config

from conftest import mim_train
from diffengine_distill.registry import MODELS
from hub_cache import save_to_hub_cache
from tiny_sd import make_tiny_sd

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
# r=4, alpha=8: a reload that falls back to alpha = r halves every update.
LORA = dict(type="LoRA", r=4, lora_alpha=8, target_modules=UNET_TARGETS)
TEXT_LORA = dict(type="LoRA", r=4, lora_alpha=8, target_modules=TEXT_TARGETS)


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    root = tmp_path_factory.mktemp("bases")
    return dict(sd=make_tiny_sd(root / "sd"), sdxl=make_tiny_sd(root / "sdxl", xl=True))


def unet_out(unet, xl):
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(2, 4, 8, 8, generator=gen)
    ctx = torch.randn(2, 16, 64 if xl else 32, generator=gen)
    extra = dict(added_cond_kwargs=dict(
        text_embeds=torch.randn(2, 32, generator=gen),
        time_ids=torch.tensor([[16., 16, 0, 0, 16, 16]] * 2))) if xl else {}
    with torch.no_grad():
        return unet(z, torch.tensor([10, 500]), encoder_hidden_states=ctx, **extra).sample


def text_out(encoder):
    ids = torch.tensor([[512, 5, 17, 300, 513, 513]])
    with torch.no_grad():
        return encoder(ids, output_hidden_states=True).hidden_states[-2]


def random_adapters(model):
    """Non-zero lora_B (PEFT starts it at 0): every adapter changes its layer."""
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


@pytest.mark.parametrize("kind", ["sd", "sdxl"])
def test_alpha_and_text_encoder_adapters_survive_every_export(bases, kind, tmp_path):
    from diffusers import DiffusionPipeline
    from peft import PeftModel
    base, xl = bases[kind], kind == "sdxl"
    model = MODELS.build(dict(type="DiffusionModel", base_model=base, lora_config=LORA,
                              text_encoder_lora_config=TEXT_LORA,
                              prediction_type="v_prediction"))
    random_adapters(model)
    model.save_export(str(tmp_path))
    encoders = list(model.data_preprocessor.text_encoders)
    trained_unet, trained_text = unet_out(model.unet, xl), [text_out(e) for e in encoders]

    pipe = DiffusionPipeline.from_pretrained(base)
    plain = unet_out(pipe.unet, xl)
    pipe.load_lora_weights(tmp_path)
    reloaded = [pipe.text_encoder] + ([pipe.text_encoder_2] if xl else [])
    assert (unet_out(pipe.unet, xl) - trained_unet).abs().max() < 1e-5
    # alpha matters: with alpha = r the update would be half as large.
    assert (trained_unet - plain).abs().max() > 1e-2
    for encoder, trained, sub in zip(reloaded, trained_text, ["text_encoder", "text_encoder_2"]):
        assert (text_out(encoder) - trained).abs().max() < 1e-5
        frozen = type(encoder).from_pretrained(base, subfolder=sub)
        assert (trained - text_out(frozen)).abs().max() > 1e-2

    # diffengine's PeftSaveHook layout: PeftModel.from_pretrained on each part.
    fresh = DiffusionPipeline.from_pretrained(base)
    unet = PeftModel.from_pretrained(fresh.unet, tmp_path / "unet")
    assert (unet_out(unet, xl) - trained_unet).abs().max() < 1e-5
    folders = ["text_encoder_one", "text_encoder_two"] if xl else ["text_encoder"]
    parts = [fresh.text_encoder] + ([fresh.text_encoder_2] if xl else [])
    assert sorted(p.name for p in tmp_path.iterdir() if (p / "adapter_config.json").is_file()) \
        == sorted(["unet", *folders])
    for folder, part, trained in zip(folders, parts, trained_text):
        encoder = PeftModel.from_pretrained(part, tmp_path / folder)
        assert (text_out(encoder) - trained).abs().max() < 1e-5


# -- a diffengine config, keys unchanged, through mim ------------------------------------
@pytest.fixture(scope="module")
def diffengine_run(bases, tmp_path_factory):
    """Hub ids of the config -> tiny folders in a local HF cache; 4 captioned
    images in a folder with metadata.csv (HFDataset's local form); 2 epochs."""
    import numpy as np
    from PIL import Image
    root = tmp_path_factory.mktemp("diffengine")
    cache, data = root / "hub", root / "pokemon"
    save_to_hub_cache(bases["sdxl"], "ptx0/terminus-xl-gamma-v1", cache)
    save_to_hub_cache(os.path.join(bases["sdxl"], "vae"), "madebyollin/sdxl-vae-fp16-fix", cache)
    data.mkdir()
    rng = np.random.default_rng(0)
    rows = ["file_name,text"]
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(data / f"{i}.png")
        rows.append(f"{i}.png,a {['red', 'blue'][i % 2]} pokemon")
    (data / "metadata.csv").write_text("\n".join(rows) + "\n")
    work = root / "work"
    env = dict(HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")
    mim_train("tests/configs/diffengine_sdxl_lora_tiny.py", work, "--cfg-options",
              f"train_dataloader.dataset.dataset={data}", env=env)
    return work


def trained_from_checkpoint(base, checkpoint):
    """The run's model, rebuilt from the local base folder and its checkpoint."""
    model = MODELS.build(dict(type="DiffusionModel", base_model=base, lora_config=LORA,
                              text_encoder_lora_config=TEXT_LORA,
                              prediction_type="v_prediction"))
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    assert state and all("lora_" in k for k in state), "checkpoints keep only adapters"
    model.load_state_dict(state)
    return model.eval()


def test_diffengine_config_runs_unchanged(bases, diffengine_run):
    from diffusers import DDIMScheduler, DiffusionPipeline
    from peft import PeftModel
    base, work = bases["sdxl"], diffengine_run
    # PeftSaveHook: an export next to each epoch's checkpoint (2 iterations each).
    assert sorted(p.name for p in work.glob("step*")) == ["step2", "step4"]
    model = trained_from_checkpoint(base, work / "epoch_2.pth")
    trained_text = [text_out(e) for e in model.data_preprocessor.text_encoders]
    pipe = DiffusionPipeline.from_pretrained(base)
    frozen_text = [text_out(pipe.text_encoder), text_out(pipe.text_encoder_2)]
    # Both text encoders were trained (PEFT starts lora_B at 0: no change at first).
    for trained, frozen in zip(trained_text, frozen_text):
        assert (trained - frozen).abs().max() > 1e-4
    # diffengine's loading snippet: PeftModel on unet / text_encoder_one / _two.
    unet = PeftModel.from_pretrained(pipe.unet, work / "step4" / "unet")
    assert (unet_out(unet, True) - unet_out(model.unet, True)).abs().max() < 1e-5
    for folder, part, trained in zip(["text_encoder_one", "text_encoder_two"],
                                     [pipe.text_encoder, pipe.text_encoder_2], trained_text):
        encoder = PeftModel.from_pretrained(part, work / "step4" / folder)
        assert (text_out(encoder) - trained).abs().max() < 1e-5
    # diffusers' loader: UNet and both text encoders, alpha 8 on rank 4.
    pipe = DiffusionPipeline.from_pretrained(base)
    pipe.load_lora_weights(work / "step4")
    assert (unet_out(pipe.unet, True) - unet_out(model.unet, True)).abs().max() < 1e-5
    for encoder, trained in zip([pipe.text_encoder, pipe.text_encoder_2], trained_text):
        assert (text_out(encoder) - trained).abs().max() < 1e-5
    scheduler = DDIMScheduler.from_pretrained(work / "step4", subfolder="scheduler")
    assert scheduler.config.prediction_type == "v_prediction"
    # VisualizationHook: before training and after each epoch.
    assert sorted(p.name for p in (work / "samples").iterdir()) == \
        ["step0.png", "step2.png", "step4.png"]
