"""Latent text-to-image teachers on tiny SD 1.5 / SDXL folders built from
configs: v-prediction LoRA fine-tuning through mim, the user's loading
snippet (PeftModel.from_pretrained, load_lora_weights), resume, and the
errors for bad bases, LoRA targets and mixed components."""
import json
import os

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

from conftest import mim_train
from diffengine_distill.registry import MODELS
from tiny_sd import make_tiny_sd

Z, T_STEPS = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)), \
    torch.tensor([10, 500])


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    root = tmp_path_factory.mktemp("bases")
    return dict(sd=make_tiny_sd(root / "sd"), sdxl=make_tiny_sd(root / "sdxl", xl=True))


@pytest.fixture(scope="module")
def captions(tmp_path_factory):
    """12 RGB digits (24 px) with diffusers' metadata.jsonl."""
    from diffengine_distill.datasets.digits import load_digits_uint8
    root = tmp_path_factory.mktemp("captions")
    images, labels = load_digits_uint8(24)
    with open(root / "metadata.jsonl", "w") as f:
        for i in range(12):
            Image.fromarray(np.stack([images[i], images[i] // 2, 255 - images[i]], -1)).save(
                root / f"{i}.png")
            f.write(json.dumps(dict(file_name=f"{i}.png",
                                    text=f"a drawing of the digit {labels[i]}")) + "\n")
    return root


def options(base, captions):
    return [f"model.unet.path={base}", f"model.scheduler.path={base}",
            f"model.data_preprocessor.model={base}",
            f"train_dataloader.dataset.data_root={captions}"]


@pytest.fixture(scope="module")
def runs(bases, captions, tmp_path_factory):
    root = tmp_path_factory.mktemp("sd_runs")
    for kind in ("sd", "sdxl"):
        mim_train(f"tests/configs/{kind}_lora_tiny.py", root / kind, "--cfg-options",
                  *options(bases[kind], captions))
    part = root / "sd_part"
    mim_train("tests/configs/sd_lora_tiny.py", part, "--cfg-options",
              *options(bases["sd"], captions), "train_cfg.max_iters=2")
    mim_train("tests/configs/sd_lora_tiny.py", part, "--resume", "--cfg-options",
              *options(bases["sd"], captions))
    return root


def trained_model(kind, base, work):
    cfg = Config.fromfile(f"tests/configs/{kind}_lora_tiny.py")
    cfg.model.unet.path = cfg.model.scheduler.path = cfg.model.data_preprocessor.model = base
    model = MODELS.build(cfg.model)
    sd = torch.load(work / "iter_4.pth", map_location="cpu", weights_only=True)["state_dict"]
    assert all("lora_" in k for k in sd), "checkpoints keep only the adapters"
    model.load_state_dict(sd)
    return model.eval()


def unet_out(unet, kind):
    gen = torch.Generator().manual_seed(1)
    ctx = torch.randn(2, 16, 32 if kind == "sd" else 64, generator=gen)
    extra = {} if kind == "sd" else dict(added_cond_kwargs=dict(
        text_embeds=torch.randn(2, 32, generator=gen),
        time_ids=torch.tensor([[16., 16, 0, 0, 16, 16]] * 2)))
    with torch.no_grad():
        return unet(Z, T_STEPS, encoder_hidden_states=ctx, **extra).sample


def test_seed_snippet_loads_the_sdxl_adapter(bases, runs):
    """The user's snippet, verbatim but for paths and fp32 on CPU."""
    from diffusers import AutoencoderKL, DiffusionPipeline
    from peft import PeftModel
    base, work_dir = bases["sdxl"], runs / "sdxl"
    vae = AutoencoderKL.from_pretrained(base, subfolder="vae")
    pipe = DiffusionPipeline.from_pretrained(base, vae=vae, torch_dtype=torch.float32)
    pipe.scheduler = pipe.scheduler.from_config(pipe.scheduler.config,
                                                prediction_type="v_prediction")
    before = unet_out(pipe.unet, "sdxl")
    pipe.unet = PeftModel.from_pretrained(pipe.unet, work_dir / "step4" / "unet",
                                          adapter_name="default")
    after = unet_out(pipe.unet, "sdxl")
    trained = unet_out(trained_model("sdxl", base, work_dir).unet, "sdxl")
    assert torch.equal(after, trained) and (after - before).abs().max() > 1e-3
    image = pipe("a red digit", num_inference_steps=2, height=16, width=16,
                 output_type="pt").images
    assert image.shape == (1, 3, 16, 16) and torch.isfinite(image).all()
    assert (work_dir / "samples" / "step4.png").is_file()


def test_sd15_lora_weights_zero_snr_and_resume(bases, runs):
    from diffusers import DDIMScheduler, DiffusionPipeline
    base, work = bases["sd"], runs / "sd"
    pipe = DiffusionPipeline.from_pretrained(base)
    pipe.load_lora_weights(work / "step4")
    trained = trained_model("sd", base, work)
    assert torch.equal(unet_out(pipe.unet, "sd"), unet_out(trained.unet, "sd"))
    scheduler = DDIMScheduler.from_pretrained(work / "step4", subfolder="scheduler")
    cfg = scheduler.config
    assert cfg.prediction_type == "v_prediction" and cfg.rescale_betas_zero_snr
    assert cfg.timestep_spacing == "trailing" and float(scheduler.alphas_cumprod[-1]) < 1e-6
    pipe.scheduler = scheduler
    image = pipe("a red digit", num_inference_steps=2, output_type="pt").images
    assert torch.isfinite(image).all()
    losses = [json.loads(line)["loss"] for line in
              next(work.glob("*/vis_data/scalars.json")).read_text().splitlines()]
    assert len(losses) == 4 and all(np.isfinite(losses))
    a = torch.load(work / "iter_4.pth", map_location="cpu", weights_only=True)["state_dict"]
    b = torch.load(runs / "sd_part" / "iter_4.pth", map_location="cpu",
                   weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_caption_datasets_and_sdxl_size_conditioning(captions, tmp_path):
    from diffengine_distill.datasets import (CaptionImageFolderDataset, LoadImage, PackInputs,
                                             SDXLResizeCrop)
    pipeline = [LoadImage(), SDXLResizeCrop(size=16), PackInputs()]
    item = CaptionImageFolderDataset(str(captions), pipeline=pipeline)[3]
    assert item["inputs"].shape == (3, 16, 16)
    assert item["data_samples"]["time_ids"] == (24, 24, 0, 0, 16, 16)
    assert item["data_samples"]["text"].startswith("a drawing of the digit")
    (tmp_path / "0.png").write_bytes((captions / "0.png").read_bytes())
    (tmp_path / "metadata.csv").write_text("file_name,caption\n0.png,a zero\n")
    data = CaptionImageFolderDataset(str(tmp_path), caption_column="caption", pipeline=pipeline)
    assert data[0]["data_samples"]["text"] == "a zero"
    with pytest.raises(KeyError, match="no column 'text'"):
        CaptionImageFolderDataset(str(tmp_path))
    os.remove(tmp_path / "metadata.csv")
    with pytest.raises(FileNotFoundError, match="metadata.jsonl or metadata.csv"):
        CaptionImageFolderDataset(str(tmp_path))


def model_cfg(unet_base, text_base, **kw):
    cfg = Config.fromfile("tests/configs/sd_lora_tiny.py").model
    cfg.unet.path = cfg.scheduler.path = unet_base
    cfg.data_preprocessor.model = text_base
    cfg.update(kw)
    return cfg


def test_bad_bases_targets_and_mixed_components(bases, monkeypatch, tmp_path):
    import huggingface_hub.constants as hub
    with pytest.raises(ValueError, match="Mismatched components: the UNet is SD 1.x/2.x"):
        MODELS.build(model_cfg(bases["sd"], bases["sdxl"]))
    with pytest.raises(ValueError, match=r"LoRA target_modules=\['to_qq'\] not found.*to_q"):
        MODELS.build(model_cfg(bases["sd"], bases["sd"],
                               lora_config=dict(r=4, target_modules=["to_qq"])))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)  # read at import: patch it too
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match="/nowhere/sd15"):
        MODELS.build(model_cfg("/nowhere/sd15", "/nowhere/sd15"))
    with pytest.raises(OSError, match="HF_HUB_OFFLINE=1.*nobody/no-such-model|"
                       "nobody/no-such-model.*HF_HUB_OFFLINE"):
        MODELS.build(model_cfg(bases["sd"], "nobody/no-such-model"))


# -- distillation of latent text-to-image teachers ----------------------------------------
@pytest.fixture(scope="module")
def latent_runs(bases, captions, tmp_path_factory):
    root = tmp_path_factory.mktemp("latent_runs")
    paths = options(bases["sd"], captions)
    for name in ("pd_sd_tiny", "dmd2_sd_tiny"):
        mim_train(f"tests/configs/{name}.py", root / name, "--cfg-options", *paths)
    mim_train("tests/configs/sfd_sd_tiny.py", root / "sfd_sd_tiny", "--cfg-options", *paths[:3])
    return root


def latent_model(name, base, work):
    cfg = Config.fromfile(f"tests/configs/{name}.py")
    cfg.model.unet.path = cfg.model.scheduler.path = cfg.model.data_preprocessor.model = base
    model = MODELS.build(cfg.model)
    model.load_state_dict(torch.load(work / "iter_4.pth", map_location="cpu",
                                     weights_only=True)["state_dict"])
    return model.eval()


@pytest.mark.parametrize("name, export, scheduler, steps", [
    ("pd_sd_tiny", "stage_2_2steps", "DDIMScheduler", 2),
    ("sfd_sd_tiny", "step4", "SFDScheduler", 2),
    ("dmd2_sd_tiny", "step4", "DDIMScheduler", 1),
])
def test_latent_students_export_as_sd_pipelines(bases, latent_runs, name, export, scheduler,
                                                steps):
    from diffusers import DiffusionPipeline, StableDiffusionPipeline
    work = latent_runs / name
    pipe = DiffusionPipeline.from_pretrained(work / export)
    assert isinstance(pipe, StableDiffusionPipeline)
    assert type(pipe.scheduler).__name__ == scheduler
    model = latent_model(name, bases["sd"], work)
    for k, v in pipe.unet.state_dict().items():  # the trained student, bit for bit
        assert torch.equal(v, model.bare_unet.state_dict()[k]), k
    prompt, gen = "a seven", torch.Generator().manual_seed(0)
    latents = pipe(prompt, num_inference_steps=steps, guidance_scale=1.0, generator=gen,
                   output_type="latent").images
    assert latents.shape == (1, 4, 8, 8) and torch.isfinite(latents).all()
    if name == "pd_sd_tiny":
        return
    # The pipeline's text conditioning and sampler are the training-time ones.
    noise = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    cond = model.data_preprocessor.encode_text([prompt])
    with torch.no_grad():
        if name == "sfd_sd_tiny":
            trained = model.student_sample(noise, cond)
        else:
            trained = model.generator_x0(model.unet, noise, model.timesteps[0], cond)
    assert (latents - trained).abs().max() < 1e-4


def test_latent_method_limits_fail_early(bases):
    cfg = Config.fromfile("tests/configs/sfd_sd_tiny.py").model
    cfg.unet.path = cfg.scheduler.path = cfg.data_preprocessor.model = bases["sd"]
    with pytest.raises(ValueError, match="text-to-image UNets lack"):
        MODELS.build(dict(cfg, use_step_condition=True))
    cfg = Config.fromfile("tests/configs/dmd2_sd_tiny.py").model
    cfg.unet.path = cfg.scheduler.path = cfg.data_preprocessor.model = bases["sd"]
    with pytest.raises(ValueError, match="regression_weight=0"):
        MODELS.build(dict(cfg, regression_weight=0.25, regression_loss="l2"))


LORA = ["model.lora_config.r=4", "model.lora_config.lora_alpha=4",
        "model.lora_config.init_lora_weights=gaussian",
        "model.lora_config.target_modules=[to_q,to_k,to_v,to_out.0]"]


@pytest.mark.parametrize("name, steps", [("sfd_sd_tiny", 2), ("dmd2_sd_tiny", 1)])
def test_lora_students_teach_with_adapters_disabled(bases, captions, tmp_path, name, steps):
    """A LoRA student's teacher is its own UNet with the adapters off (one copy
    of the weights); the export is an adapter that the base pipeline loads."""
    from diffusers import DiffusionPipeline
    base, work = bases["sd"], tmp_path / name
    paths = options(base, captions)
    mim_train(f"tests/configs/{name}.py", work, "--cfg-options",
              *(paths if name.startswith("dmd") else paths[:3]), *LORA)
    cfg = Config.fromfile(f"tests/configs/{name}.py")
    cfg.model.unet.path = cfg.model.scheduler.path = cfg.model.data_preprocessor.model = base
    cfg.model.lora_config = dict(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                 target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    model = MODELS.build(cfg.model)
    sd = torch.load(work / "iter_4.pth", map_location="cpu", weights_only=True)["state_dict"]
    assert not any(k.startswith("teacher_unet.") for k in sd)
    model.load_state_dict(sd)
    model.eval()
    pipe = DiffusionPipeline.from_pretrained(base)
    assert torch.equal(unet_out(model.teacher_unet, "sd"), unet_out(pipe.unet, "sd"))
    assert not torch.equal(unet_out(model.unet, "sd"), unet_out(pipe.unet, "sd"))
    pipe.load_lora_weights(work / "step4")
    pipe.scheduler = type(model.export_scheduler()).from_pretrained(work / "step4",
                                                                    subfolder="scheduler")
    prompt = "a seven"
    latents = pipe(prompt, num_inference_steps=steps, guidance_scale=1.0, output_type="latent",
                   generator=torch.Generator().manual_seed(0)).images
    noise = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    cond = model.data_preprocessor.encode_text([prompt])
    with torch.no_grad():
        trained = model.student_sample(noise, cond) if name.startswith("sfd") else \
            model.generator_x0(model.unet, noise, model.timesteps[0], cond)
    assert (latents - trained).abs().max() < 1e-4
