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


# -- one base-model key ---------------------------------------------------------------
@pytest.fixture(scope="module")
def other_sd(bases, tmp_path_factory):
    """A second SD folder: a different UNet (conv_in.bias + 0.5) and schedule
    (beta_end 0.02), so where each part came from is visible."""
    import json
    from diffusers import UNet2DConditionModel
    other = tmp_path_factory.mktemp("other") / "sd"
    shutil.copytree(bases["sd"], other)
    unet = UNet2DConditionModel.from_pretrained(other, subfolder="unet")
    with torch.no_grad():
        unet.conv_in.bias += 0.5
    unet.save_pretrained(other / "unet")
    config = other / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps(dict(json.loads(config.read_text()), beta_end=0.02)))
    return str(other)


def conv_in_bias(model):
    return model.bare_unet.conv_in.bias.detach()


def test_one_base_model_key_and_explicit_parts(bases, other_sd):
    from diffusers import UNet2DConditionModel
    other_bias = UNet2DConditionModel.from_pretrained(other_sd, subfolder="unet").conv_in.bias
    base_bias = UNet2DConditionModel.from_pretrained(bases["sd"], subfolder="unet").conv_in.bias
    cfg = Config.fromfile("tests/configs/sd_lora_tiny.py")
    cfg.merge_from_dict({"model.base_model": other_sd})  # = --cfg-options model.base_model=
    model = MODELS.build(cfg.model)
    assert torch.equal(conv_in_bias(model), other_bias)
    assert model.scheduler.config.beta_end == 0.02
    assert model.data_preprocessor.model_path == other_sd
    assert model.scheduler.config.rescale_betas_zero_snr  # the config's own options stay
    # An explicit part wins over the base model.
    cfg = Config.fromfile("tests/configs/sd_lora_tiny.py")
    cfg.merge_from_dict({"model.base_model": bases["sd"], "model.unet.path": other_sd})
    model = MODELS.build(cfg.model)
    assert torch.equal(conv_in_bias(model), other_bias)
    assert model.scheduler.config.beta_end == 0.012
    assert model.data_preprocessor.model_path == bases["sd"]
    assert not torch.equal(other_bias, base_bias)


SD_CONFIGS = [("v_prediction/stable_diffusion_v15_lora_v_prediction_pokemon_blip", "sd"),
              ("v_prediction/stable_diffusion_xl_lora_v_prediction_pokemon_blip", "sdxl"),
              ("progressive_distillation/pd_sd15", "sd"),
              ("progressive_distillation/pd_sdxl", "sdxl"),
              ("sfd/sfd_sd15", "sd"), ("sfd/sfd_sdxl", "sdxl"),
              ("dmd/dmd2_sd15", "sd"), ("dmd/dmd2_sdxl", "sdxl")]


@pytest.mark.parametrize("name,kind", SD_CONFIGS)
def test_shipped_sd_configs_take_the_base_model_from_one_key(bases, name, kind):
    """model.base_model alone moves UNet, schedule, VAE and text encoders."""
    from diffusers import UNet2DConditionModel
    cfg = Config.fromfile(f"configs/{name}.py")
    cfg.merge_from_dict({"model.base_model": bases[kind], "model.data_preprocessor.vae": None,
                         "model.data_preprocessor.dtype": "float32"})
    model = MODELS.build(cfg.model)
    unet = UNet2DConditionModel.from_pretrained(bases[kind], subfolder="unet")
    assert torch.equal(conv_in_bias(model), unet.conv_in.bias)
    assert model.data_preprocessor.model_path == bases[kind]
    assert model.noise_schedule.num_train_timesteps == 1000
    assert float(model.scheduler.betas[-1]) == pytest.approx(0.012, rel=1e-5) or \
        model.scheduler.config.rescale_betas_zero_snr


# -- diffengine keys: accepted as is, or refused with the key to use ---------------------
def sd_model(base, **kw):
    return MODELS.build(dict(type="DiffusionModel", base_model=base, **kw))


def test_diffengine_keys_map_or_fail_with_the_key_to_use(bases):
    import torch.nn.functional as F
    base = bases["sd"]
    model = MODELS.build(dict(type="StableDiffusion", model=base, unet_lora_config=LORA,
                              loss=dict(type="L2Loss", loss_weight=2.0)))
    assert model.lora_config.r == 4 and model.lora_config.lora_alpha == 8
    assert model.data_preprocessor.model_path == base
    pred, target = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    loss = model.loss(pred, target, torch.rand(3), "v_prediction")
    assert torch.allclose(loss, 2 * F.mse_loss(pred, target))  # L2Loss = plain MSE
    errors = [
        (dict(noise_generator=dict(type="OffsetNoise")), ValueError, "noise_generator"),
        (dict(model=bases["sdxl"]), ValueError, "disagree: set only model.base_model"),
        (dict(lora_config=dict(type="LoHa", r=4)), ValueError, "only type='LoRA'"),
        (dict(lora_config=dict(rank=8)), ValueError, "use r=<rank>"),
        (dict(lora_config=dict(r=4, alpha=4)), ValueError, r"unknown option\(s\) \['alpha'\]"),
        (dict(lora_config=LORA, unet_lora_config=LORA), ValueError, "keep one"),
        (dict(finetune_text_encoder=True), ValueError, "text_encoder_lora_config="),
        (dict(text_encoder_lora_config=TEXT_LORA), ValueError, "needs model.lora_config"),
        (dict(loss=dict(type="SNRL2Loss")), ValueError, "weighting='min_snr'"),
        (dict(lorra_config=LORA), TypeError, r"unknown model key\(s\) \['lorra_config'\]"),
    ]
    for kw, error, message in errors:
        with pytest.raises(error, match=message):
            sd_model(base, **kw)
    with pytest.raises(ValueError, match="DiffusionModel .fine-tuning. only"):
        MODELS.build(dict(type="ProgressiveDistillation", base_model=base, teacher_steps=8,
                          text_encoder_lora_config=TEXT_LORA))
    with pytest.raises(ValueError, match="model.unet has no path: set model.base_model"):
        MODELS.build(dict(type="DiffusionModel"))


def test_diffengine_hooks_and_hf_dataset_refuse_what_they_cannot_do(bases, tmp_path):
    import importlib.util
    from types import SimpleNamespace

    import numpy as np
    from PIL import Image

    from diffengine_distill.datasets import HFDataset
    from diffengine_distill.engine.hooks import VisualizationHook
    runner = SimpleNamespace(model=sd_model(bases["sd"]))
    with pytest.raises(ValueError, match="height=1024 is not supported.*size 16"):
        VisualizationHook(prompt=["a"], height=1024, width=1024).before_train(runner)
    with pytest.raises(ValueError, match=r"\['negative_prompt'\] are not supported"):
        VisualizationHook(prompt=["a"], negative_prompt="blurry")
    # A local folder with diffengine's metadata.csv: decoded RGB images and captions.
    image = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    Image.fromarray(image).save(tmp_path / "a.png")
    (tmp_path / "metadata.csv").write_text("image,text\na.png,a pokemon\n")
    item = HFDataset(str(tmp_path)).get_data_info(0)
    assert item["text"] == "a pokemon" and np.array_equal(item["img"], image)
    with pytest.raises(ValueError, match="'torchvision/Resize'.*SDXLResizeCrop"):
        HFDataset(str(tmp_path), pipeline=[dict(type="torchvision/Resize", size=1024)])
    with pytest.raises(KeyError, match="no column 'caption'"):
        HFDataset(str(tmp_path), caption_column="caption")
    if importlib.util.find_spec("datasets") is None:  # hub ids need the datasets package
        with pytest.raises(ImportError, match="pip install datasets"):
            HFDataset("lambdalabs/pokemon-blip-captions")


def test_hf_dataset_by_hub_id_offline(tmp_path, monkeypatch):
    """diffengine's data key, HFDataset(dataset="lambdalabs/pokemon-blip-captions"),
    from a local Hugging Face cache laid out as the hub repo (a parquet shard
    with image and text columns), offline."""
    import datasets
    import numpy as np
    from PIL import Image

    from diffengine_distill.datasets import HFDataset
    from hub_cache import save_to_hub_cache
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (6, 5, 3), dtype=np.uint8) for _ in range(3)]
    repo = tmp_path / "repo" / "data"
    repo.mkdir(parents=True)
    features = datasets.Features(image=datasets.Image(), text=datasets.Value("string"))
    datasets.Dataset.from_dict(
        dict(image=[Image.fromarray(image) for image in images], text=["a", "b", "c"]),
        features=features).to_parquet(str(repo / "train-00000-of-00001.parquet"))
    cache = tmp_path / "hub"
    save_to_hub_cache(str(repo.parent), "lambdalabs/pokemon-blip-captions", str(cache),
                      kind="datasets")
    import huggingface_hub.constants as constants
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    dataset = HFDataset("lambdalabs/pokemon-blip-captions")
    assert len(dataset) == 3
    for i in range(3):
        item = dataset.get_data_info(i)
        assert item["text"] == "abc"[i] and np.array_equal(item["img"], images[i])
    with pytest.raises(OSError, match="not in the local Hugging Face cache.*huggingface-cli"):
        HFDataset("lambdalabs/missing")
