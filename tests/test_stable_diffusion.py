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
from diffengine_distill.models.editors.lora import AdapterTeacher
from diffengine_distill.registry import MODELS
from tiny_sd import make_tiny_sd
from hub_cache import TERMINUS, hub, hub_env, offline_hub  # noqa: F401 (fixtures)

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


# bitsandbytes' 8-bit AdamW for the SD 1.5 run (8-bit states also for tiny tensors).
ADAM_8BIT = ["optim_wrapper.optimizer.type=AdamW8bit", "optim_wrapper.optimizer.min_8bit_size=0"]


@pytest.fixture(scope="module")
def runs(bases, captions, hub, tmp_path_factory):
    root = tmp_path_factory.mktemp("sd_runs")
    mim_train("tests/configs/sd_lora_tiny.py", root / "sd", "--cfg-options",
              *options(bases["sd"], captions), *ADAM_8BIT)
    # The SDXL seed recipe with its own hub ids (terminus, fp16-fix VAE), offline.
    mim_train("tests/configs/sdxl_lora_tiny.py", root / "sdxl", "--cfg-options",
              f"train_dataloader.dataset.data_root={captions}", env=hub_env(hub))
    part = root / "sd_part"
    mim_train("tests/configs/sd_lora_tiny.py", part, "--cfg-options",
              *options(bases["sd"], captions), *ADAM_8BIT, "train_cfg.max_iters=2")
    mim_train("tests/configs/sd_lora_tiny.py", part, "--resume", "--cfg-options",
              *options(bases["sd"], captions), *ADAM_8BIT)
    return root


def trained_model(kind, base, work, checkpoint="iter_4.pth"):
    """The model of ``checkpoint`` (``base=None``: the config's own base model)."""
    cfg = Config.fromfile(f"tests/configs/{kind}_lora_tiny.py")
    if base is not None:
        cfg.model.unet.path = cfg.model.scheduler.path = cfg.model.data_preprocessor.model = base
    model = MODELS.build(cfg.model)
    sd = torch.load(work / checkpoint, map_location="cpu", weights_only=True)["state_dict"]
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


def test_seed_snippet_loads_the_sdxl_adapter(runs, offline_hub):
    """diffengine's inference snippet for the seed config, verbatim but for
    fp32 on CPU, the tiny size and 2 steps: the hub ids are the real ones
    (tiny models in a local cache). Its images equal those of the trained
    model (the checkpoint's UNet put into the same pipeline)."""
    from pathlib import Path

    from diffusers import AutoencoderKL, DiffusionPipeline
    from peft import PeftModel
    work_dir = runs / "sdxl"
    # --- the snippet (epoch 1 of 12 captions at batch 2 = step6) ---
    checkpoint = Path(work_dir / 'step6')
    prompt = 'yoda pokemon'

    vae = AutoencoderKL.from_pretrained(
        'madebyollin/sdxl-vae-fp16-fix',
        torch_dtype=torch.float32,
    )
    pipe = DiffusionPipeline.from_pretrained(
        'ptx0/terminus-xl-gamma-v1', vae=vae, torch_dtype=torch.float32)
    scheduler_args = {"prediction_type": "v_prediction"}
    pipe.scheduler = pipe.scheduler.from_config(
        pipe.scheduler.config, **scheduler_args)
    pipe.to('cpu')
    pipe.unet = PeftModel.from_pretrained(pipe.unet, checkpoint / "unet", adapter_name="default")
    assert not (checkpoint / "text_encoder_one").exists()  # the recipe trains the UNet only

    torch.manual_seed(0)
    image = pipe(
        prompt,
        num_inference_steps=2,
        height=16,
        width=16,
    ).images[0]
    # --- end of the snippet ---
    trained = trained_model("sdxl", None, work_dir, checkpoint="epoch_1.pth")
    reference = DiffusionPipeline.from_pretrained(TERMINUS, vae=vae)
    reference.scheduler = pipe.scheduler
    reference.unet = trained.unet
    torch.manual_seed(0)
    expected = reference(prompt, num_inference_steps=2, height=16, width=16).images[0]
    assert np.array_equal(np.asarray(image), np.asarray(expected))
    base = DiffusionPipeline.from_pretrained(TERMINUS, vae=vae)
    base.scheduler = pipe.scheduler
    torch.manual_seed(0)
    untrained = base(prompt, num_inference_steps=2, height=16, width=16).images[0]
    assert not np.array_equal(np.asarray(image), np.asarray(untrained))
    assert (work_dir / "samples" / "step6.png").is_file()


def flatten(tree, prefix=""):
    """The tensors of a nested checkpoint entry, by path."""
    if torch.is_tensor(tree):
        return {prefix: tree}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) \
        if isinstance(tree, (list, tuple)) else []
    return {k: v for key, sub in items for k, v in flatten(sub, f"{prefix}/{key}").items()}


def test_sd15_lora_weights_zero_snr_and_resume_with_8bit_adam(bases, runs):
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
    a = torch.load(work / "iter_4.pth", map_location="cpu", weights_only=True)
    b = torch.load(runs / "sd_part" / "iter_4.pth", map_location="cpu", weights_only=True)
    # Resumed bit for bit, 8-bit optimizer states included.
    for part in ("state_dict", "optimizer"):
        flat_a, flat_b = flatten(a[part]), flatten(b[part])
        assert flat_a.keys() == flat_b.keys()
        assert all(torch.equal(flat_a[k], flat_b[k]) for k in flat_a), part
    moments = {k: v for k, v in flatten(a["optimizer"]["state"]).items()
               if k.endswith(("/state1", "/state2"))}  # bitsandbytes' quantised moments
    assert len(moments) == 2 * len(a["optimizer"]["state"]) > 0
    assert all(v.dtype == torch.uint8 for v in moments.values())


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
    ("pd_sd_tiny", "stage_1_4steps", "DDIMScheduler", 4),
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
    # A guided PD student takes the scale through its w embedding, not CFG.
    scale = 5.0 if name == "pd_sd_tiny" else 1.0
    prompt, gen = "a seven", torch.Generator().manual_seed(0)
    latents = pipe(prompt, num_inference_steps=steps, guidance_scale=scale, generator=gen,
                   output_type="latent").images
    assert latents.shape == (1, 4, 8, 8) and torch.isfinite(latents).all()
    # The pipeline's text conditioning and sampler are the training-time ones.
    noise = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    cond = model.data_preprocessor.encode_text([prompt])
    with torch.no_grad():
        if name == "pd_sd_tiny":
            from diffengine_distill.models.editors.progressive_distillation.\
                guidance_embedding import guidance_scale_embedding
            assert pipe.unet.config.time_cond_proj_dim == 256
            w = guidance_scale_embedding(torch.tensor([scale]), 256)
            trained = ddim_sample(model, noise, steps, **cond, timestep_cond=w)
        elif name == "sfd_sd_tiny":
            trained = model.student_sample(noise, cond)
        else:
            trained = model.generator_x0(model.unet, noise, model.timesteps[0], cond)
    assert (latents - trained).abs().max() < 1e-4


def ddim_sample(model, noise, steps, **cond):
    """A v student's trailing-DDIM sampler written out (the last step lands on x0)."""
    T, z = model.noise_schedule.num_train_timesteps, noise
    for i in range(steps, 0, -1):
        t = torch.tensor([i * T / steps - 1], dtype=torch.float64)
        (a, s), (a1, s1) = model.noise_schedule.alpha_sigma(t), model.noise_schedule.alpha_sigma(t - T / steps)
        v = model.unet(z, t.float(), **cond).sample.double()
        z = ddim(v, z.double(), a, s, a1, s1, "v_prediction").float()
    return z


def sfd_text_model(base, **kw):
    cfg = Config.fromfile("tests/configs/sfd_sd_tiny.py").model
    cfg.unet.path = cfg.scheduler.path = cfg.data_preprocessor.model = base
    return MODELS.build(dict(cfg, **kw))


def test_text_sfd_v_exports_one_stock_unet_per_nfe(bases, tmp_path):
    """SFD-v of a text teacher: the step count's table row, folded into
    time_embedding.linear_2.bias, makes one stock UNet per NFE that SD's own
    pipeline samples exactly as the step-conditioned student; grids agree too."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from mmengine.dataset import pseudo_collate
    from mmengine.optim import OptimWrapper

    from diffengine_distill.datasets import NoiseDataset
    from diffengine_distill.engine.hooks import export_model
    model = sfd_text_model(bases["sd"], use_step_condition=True, step_range=(4, 5))
    assert model.unet.config.num_class_embeds == 8
    wrapper = OptimWrapper(torch.optim.Adam(model.unet.parameters(), lr=1e-2))
    data = NoiseDataset((4, 8, 8), prompts=PROMPTS)
    for it in range(2):
        model.train_step(pseudo_collate([data[2 * it], data[2 * it + 1]]), wrapper)
    table = model.unet.class_embedding.weight.detach().clone()
    assert table[4:6].abs().sum() > 0  # the trained rows
    export_model(model, str(tmp_path / "export"), {})
    assert torch.equal(model.unet.class_embedding.weight, table)  # unfolded after export
    assert model.unet.config.num_class_embeds == 8
    cond = model.data_preprocessor.encode_text([PROMPTS[1]])
    noise = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(3))
    for nfe, sub in ((2, None), (3, "unet_nfe3")):
        pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "export")
        if sub:
            pipe.unet = UNet2DConditionModel.from_pretrained(tmp_path / "export", subfolder=sub)
        assert pipe.unet.config.num_class_embeds is None
        latents = pipe(PROMPTS[1], num_inference_steps=nfe, guidance_scale=1.0,
                       generator=torch.Generator().manual_seed(3), output_type="latent").images
        model.eval()
        trained = model.student_sample(noise, cond, num_steps=nfe + 2)
        assert (latents - trained).abs().max() < 1e-4, nfe
        grid = model.sample([3], nfe, prompts=[PROMPTS[1]], guidance_scale=1.0)
        pipe.vae.eval()
        image = pipe.vae.decode(trained / pipe.vae.config.scaling_factor).sample.clamp(-1, 1)
        assert (grid - image).abs().max() < 1e-3, nfe


def test_latent_method_limits_fail_early(bases):
    lora = dict(r=4, lora_alpha=4, target_modules=["to_q"])
    with pytest.raises(ValueError, match="LoRA export cannot carry"):
        sfd_text_model(bases["sd"], use_step_condition=True, lora_config=lora)


LORA = ["model.lora_config.r=4", "model.lora_config.lora_alpha=4",
        "model.lora_config.init_lora_weights=gaussian",
        "model.lora_config.target_modules=[to_q,to_k,to_v,to_out.0]"]


@pytest.mark.parametrize("name, steps, export", [
    ("sfd_sd_tiny", 2, "step4"), ("dmd2_sd_tiny", 1, "step4"), ("pd_sd_tiny", 4, "stage_1_4steps")])
def test_lora_students_teach_with_adapters_disabled(bases, captions, tmp_path, name, steps,
                                                    export):
    """A LoRA student's teacher is its own UNet with the adapters off (one copy
    of the weights) or, for PD after a stage, with the previous stage's adapter;
    the export is an adapter that the base pipeline loads."""
    from diffusers import DiffusionPipeline
    base, work = bases["sd"], tmp_path / name
    paths = options(base, captions)
    pd = name.startswith("pd")
    mim_train(f"tests/configs/{name}.py", work, "--cfg-options",
              *(paths[:3] if name.startswith("sfd") else paths), *LORA,
              *(["model.guidance_scale=3.0"] if pd else []))
    cfg = Config.fromfile(f"tests/configs/{name}.py")
    cfg.model.unet.path = cfg.model.scheduler.path = cfg.model.data_preprocessor.model = base
    cfg.model.lora_config = dict(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                 target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    if pd:
        cfg.model.guidance_scale = 3.0
    model = MODELS.build(cfg.model)
    sd = torch.load(work / "iter_4.pth", map_location="cpu", weights_only=True)["state_dict"]
    assert not any(k.startswith("teacher_unet.") for k in sd)
    model.load_state_dict(sd)
    model.eval()
    pipe = DiffusionPipeline.from_pretrained(base)
    if pd:  # stage 1's teacher: the stage-0 export's adapter, not the base
        assert not torch.equal(unet_out(model.teacher_unet, "sd"), unet_out(pipe.unet, "sd"))
        pipe.load_lora_weights(work / "stage_0_8steps")
        assert (unet_out(model.teacher_unet, "sd") - unet_out(pipe.unet, "sd")).abs().max() \
            < 1e-5
        pipe.unload_lora_weights()
    assert torch.equal(unet_out(AdapterTeacher(model), "sd"), unet_out(pipe.unet, "sd"))
    assert not torch.equal(unet_out(model.unet, "sd"), unet_out(pipe.unet, "sd"))
    pipe.load_lora_weights(work / export)
    pipe.scheduler = type(model.export_scheduler()).from_pretrained(work / export,
                                                                    subfolder="scheduler")
    prompt = "a seven"
    latents = pipe(prompt, num_inference_steps=steps, guidance_scale=1.0, output_type="latent",
                   generator=torch.Generator().manual_seed(0)).images
    noise = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    cond = model.data_preprocessor.encode_text([prompt])
    with torch.no_grad():
        if pd:
            trained = ddim_sample(model, noise, steps, **cond)
        elif name.startswith("sfd"):
            trained = model.student_sample(noise, cond)
        else:
            trained = model.generator_x0(model.unet, noise, model.timesteps[0], cond)
    assert (latents - trained).abs().max() < 1e-4


# -- progressive distillation of guided text teachers; LoRA students ----------------------
def pd_model(base, **kw):
    cfg = Config.fromfile("tests/configs/pd_sd_tiny.py").model
    cfg.unet.path = cfg.scheduler.path = cfg.data_preprocessor.model = base
    return MODELS.build(dict(cfg, **kw))


def ddim(out, z, a, s, a_next, s_next, kind):
    """One DDIM step written out: v gives x0 = a z - s v, eps = s z + a v."""
    if kind == "epsilon":
        return a_next * (z - s * out) / a + s_next * out
    return a_next * (a * z - s * out) + s_next * (s * z + a * out)


def test_guidance_embedding_matches_the_pipelines():
    from diffusers import StableDiffusionPipeline

    from diffengine_distill.models.editors.progressive_distillation.guidance_embedding import \
        guidance_scale_embedding
    w = torch.tensor([1.0, 2.5, 7.5, 14.0])
    for dim in (256, 7):
        ours = guidance_scale_embedding(w, dim)
        theirs = StableDiffusionPipeline.get_guidance_scale_embedding(None, w - 1, dim)
        assert torch.equal(ours, theirs)


def test_guided_pd_stage0_then_two_student_steps(bases):
    """Stage 0 (Meng et al.): the target is the CFG-guided teacher's output at a
    per-sample w and any t; stage 1: two DDIM steps of the w-conditioned stage-0
    student (no CFG), as in PD."""
    from diffengine_distill.models.editors.progressive_distillation.guidance_embedding import \
        guidance_scale_embedding
    from diffengine_distill.models.editors.sample_rng import SampleRNG
    model = pd_model(bases["sd"], guidance_scale=(2.0, 8.0))
    unet = model.bare_unet
    assert unet.config.time_cond_proj_dim == 256
    assert (int(model.stage), int(model.student_steps)) == (0, 8)
    with torch.no_grad():  # the zero w projection leaves the teacher's output as it was
        extra = dict(timestep_cond=guidance_scale_embedding(torch.tensor([3.0, 5.0]), 256))
        cond = model.data_preprocessor.encode_text(["a seven", "a two"])
        base_out = unet(Z, T_STEPS, **cond).sample
        assert torch.equal(unet(Z, T_STEPS, **cond, **extra).sample, base_out)
        unet.time_embedding.cond_proj.weight.normal_(std=0.05)  # make w matter
    x0, indices = torch.randn(2, 4, 8, 8), torch.tensor([3, 11])
    captured = []

    def capture(pred, target, *args):
        captured.append(target)
        return pred.mean()
    model.conversion_loss.forward = model.loss.forward = capture  # stage 0 (eps -> v), stage 1
    T, empty = 1000, model.data_preprocessor.encode_text(["", ""])

    def alpha_sigma(t):
        a, s = model.noise_schedule.alpha_sigma(t)
        return a.view(-1, 1, 1, 1), s.view(-1, 1, 1, 1)

    def draws(stage):
        rng = SampleRNG(indices.tolist(), model.noise_seed, "cpu", iteration=0)
        n = int(model.student_steps)
        t = rng.randint(0, T).double() if stage == 0 else \
            rng.randint(1, n + 1).double() * T / n - 1
        noise = rng.randn(4, 8, 8)
        w = 2.0 + 6.0 * rng.rand()
        a, s = alpha_sigma(t)
        return t, n, (a * x0 + s * noise).float(), w

    # stage 0: one guided eps-teacher evaluation, as v
    t, _, z, w = draws(0)
    with torch.no_grad():
        c = model.teacher_unet(z, t.float(), **cond).sample.double()
        u = model.teacher_unet(z, t.float(), **empty).sample.double()
    eps = u + w.view(-1, 1, 1, 1) * (c - u)
    a, s = alpha_sigma(t)
    x_hat = (z.double() - s * eps) / a
    model(x0, dict(cond=cond, indices=indices))
    assert model.teacher_type == "epsilon"  # SD 1.5; the student predicts v
    assert (captured[0] - (a * eps - s * x_hat)).abs().max() < 1e-4

    model.next_stage()
    assert (int(model.stage), int(model.student_steps)) == (1, 4)
    assert model.teacher_type == "v_prediction"  # the teacher is now the stage-0 student
    t, n, z, w = draws(1)
    emb = guidance_scale_embedding(w.float(), 256)
    (a, s), (am, sm), (a_s, s_s) = alpha_sigma(t), alpha_sigma(t - T / n / 2), \
        alpha_sigma(t - T / n)
    zz, tt = z, t
    for a0, s0, a1, s1 in ((a, s, am, sm), (am, sm, a_s, s_s)):
        with torch.no_grad():
            v = unet(zz, tt.float(), **cond, timestep_cond=emb).sample.double()
        zz = ddim(v, zz.double(), a0, s0, a1, s1, "v_prediction").float()
        tt = tt - T / n / 2
    x_t = (zz.double() - s_s / s * z.double()) / (a_s - s_s / s * a)
    eps = (z.double() - a * x_t) / s
    model(x0, dict(cond=cond, indices=indices))
    assert (captured[1] - (a * eps - s * x_t)).abs().max() < 1e-4


def test_pd_lora_teacher_is_a_second_adapter(bases):
    lora = dict(r=4, lora_alpha=4, init_lora_weights=False,  # random B: student != base
                target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    model = pd_model(bases["sd"], lora_config=lora, guidance_scale=3.0)
    unet, cond = model.bare_unet, model.data_preprocessor.encode_text(["a", "b"])
    base = DiffusionPipelineUNet(bases["sd"])
    out = lambda f: f(Z, T_STEPS, **cond).sample  # noqa: E731
    with torch.no_grad():
        assert torch.equal(out(model.teacher_unet), out(base))  # first: zero adapter = base
        assert not torch.equal(out(unet), out(base))
        for name, p in unet.named_parameters():
            if ".default." in name:
                p.add_(0.01)
        model.next_stage()
        assert torch.equal(out(model.teacher_unet), out(unet))
    trainable = {n for n, p in unet.named_parameters() if p.requires_grad}
    assert trainable and all(".default." in n for n in trainable), "teacher stays frozen"
    assert all("lora_" in k for k in model.state_dict() if k.startswith("unet."))
    with pytest.raises(ValueError, match="LoRA export cannot carry"):
        pd_model(bases["sd"], lora_config=lora, guidance_scale=(2.0, 8.0))
    with pytest.raises(ValueError, match="guidance_scale=0.5 must be"):
        pd_model(bases["sd"], guidance_scale=0.5)


def DiffusionPipelineUNet(base):
    from diffusers import UNet2DConditionModel
    return UNet2DConditionModel.from_pretrained(base, subfolder="unet").eval()


# -- DMD with regression pairs of a text-to-image teacher ----------------------------------
PROMPTS = ["a drawing of a one", "a seven", "a red zero"]


@pytest.fixture(scope="module")
def text_pairs(bases, tmp_path_factory):
    from conftest import run
    root = tmp_path_factory.mktemp("text_pairs")
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    run(["python", "tools/make_pairs.py", bases["sd"], "--out", str(root / "pairs"),
         "--prompts", str(root / "prompts.txt"), "--guidance-scale", "3", "--solver", "pndm",
         "--steps", "4", "--seeds", "0-4", "--shard-size", "3", "--batch-size", "2"])
    return root


def test_text_pairs_are_the_guided_teachers_latents(bases, text_pairs):
    """SD's own pipeline (PNDM, CFG 3, seed s, prompt s mod 3) gives pair s."""
    from diffusers import StableDiffusionPipeline

    from diffengine_distill.apis.pairs import make_pairs, ode_scheduler
    from diffengine_distill.datasets import PairsDataset
    data = PairsDataset(str(text_pairs / "pairs"))
    assert len(data) == 5 and [data[i]["data_samples"]["text"] for i in (0, 4)] == \
        [PROMPTS[0], PROMPTS[1]]
    pipe = StableDiffusionPipeline.from_pretrained(bases["sd"])
    pipe.scheduler = ode_scheduler(pipe.scheduler, "pndm")
    latents = pipe(PROMPTS[1], num_inference_steps=4, guidance_scale=3.0, output_type="latent",
                   generator=torch.Generator().manual_seed(4)).images[0]
    assert (latents - data[4]["inputs"]).abs().max() < 1e-4
    noise = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(4))[0]
    assert torch.equal(data[4]["data_samples"]["noise"], noise)
    with pytest.raises(ValueError, match="needs --prompts"):
        make_pairs(bases["sd"], str(text_pairs / "other"), range(2), 2, progress=False)
    with pytest.raises(ValueError, match="other settings"):  # same folder, other guidance
        make_pairs(bases["sd"], str(text_pairs / "pairs"), range(5), 4, solver="pndm",
                   shard_size=3, prompts=PROMPTS, guidance_scale=5.0, progress=False)


def dmd_text_model(base, **kw):
    cfg = Config.fromfile("tests/configs/dmd2_sd_tiny.py").model
    cfg.unet.path = cfg.scheduler.path = cfg.data_preprocessor.model = base
    cfg.update(regression_weight=0.25, critic_updates_per_generator=1, gan_generator_weight=0.0,
               gan_critic_weight=0.0, gan_start_iter=0, **kw)
    return MODELS.build(cfg)


def test_dmd_regression_on_text_pairs(bases, text_pairs):
    """DMD's regression term on SD pairs: 0.25 * MSE(G(pair noise, pair prompt),
    pair latents) with the generator before the update (l2 on latents)."""
    from mmengine.dataset import pseudo_collate

    from diffengine_distill.datasets import PairsDataset
    from test_dmd import optim_wrappers
    data = PairsDataset(str(text_pairs / "pairs"))
    batch = pseudo_collate([data[i] for i in range(4)])
    model, fresh = (dmd_text_model(bases["sd"], regression_loss="l2") for _ in range(2))
    out = model.train_step(batch, optim_wrappers(model))
    cond = fresh.data_preprocessor.encode_text([data[i]["data_samples"]["text"]
                                                for i in range(4)])
    noise = torch.stack([data[i]["data_samples"]["noise"] for i in range(4)])
    with torch.no_grad():
        eps = fresh.unet(noise, torch.full((4,), 999), **cond).sample
    a, s = (c.float() for c in fresh.noise_schedule.alpha_sigma(999))
    expected = 0.25 * torch.nn.functional.mse_loss((noise - s * eps) / a,
                                                   torch.stack([data[i]["inputs"]
                                                                for i in range(4)]))
    torch.testing.assert_close(out["loss_regression"], expected, rtol=1e-5, atol=1e-7)
    assert torch.isfinite(out["loss_dm"]) and torch.isfinite(out["loss_critic"])


def test_dmd_lpips_compares_decoded_text_pairs(bases, monkeypatch):
    """LPIPS of latent pairs runs on the VAE's pixels at their own size, with
    the gradient through the decoder to the generator."""
    import diffengine_distill.models.editors.dmd.dmd as dmd

    class AbsDistance(torch.nn.Module):  # stands in for LPIPS (no weights offline)
        def forward(self, x, y):
            assert x.shape[1:] == (3, 16, 16)
            return (x - y).abs().mean((1, 2, 3))
    monkeypatch.setattr(dmd, "build_lpips", lambda *a: AbsDistance())
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    y = torch.randn(2, 4, 8, 8)
    vae = DiffusionPipelineVAE(bases["sd"])
    with torch.no_grad():
        expected = (vae.decode(x / vae.config.scaling_factor).sample -
                    vae.decode(y / vae.config.scaling_factor).sample).abs().mean()
    for kw in ({}, dict(regression_vae=dict(path=bases["sd"], subfolder="vae"))):
        model = dmd_text_model(bases["sd"], regression_loss="lpips", **kw)
        loss = model.regression(x, y)
        torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
        grad, = torch.autograd.grad(loss, x)
        assert grad.abs().sum() > 0


def DiffusionPipelineVAE(base):
    from diffusers import AutoencoderKL
    return AutoencoderKL.from_pretrained(base, subfolder="vae").eval()


# -- classifier-free guidance: the unconditional input is the pipeline's ----------------
@pytest.mark.parametrize("kind", ["sd", "sdxl"])
def test_guided_teacher_matches_the_diffusers_pipelines_cfg(bases, kind):
    """One CFG step of StableDiffusion(XL)Pipeline (guidance 3): the guided noise
    prediction it hands its scheduler equals ``guided_forward`` on the same
    latent and t. SDXL's unconditional input is zeros (force_zeros_for_empty_prompt),
    SD 1.5's the encoded empty prompt."""
    from diffusers import DiffusionPipeline
    model = pd_model(bases[kind], guidance_scale=3.0)
    pipe = DiffusionPipeline.from_pretrained(bases[kind])
    pipe.set_progress_bar_config(disable=True)
    seen = {}
    step = pipe.scheduler.step

    def spy(model_output, timestep, sample, *a, **kw):
        seen.update(out=model_output, t=timestep)
        return step(model_output, timestep, sample, *a, **kw)
    pipe.scheduler.step = spy
    pipe.unet.register_forward_hook(
        lambda m, args, out: seen.update(z=args[0][:1]), with_kwargs=False)
    pipe("a drawing of the digit 7", num_inference_steps=1, guidance_scale=3.0,
         output_type="latent", generator=torch.Generator().manual_seed(0))
    cond = model.data_preprocessor.encode_text(["a drawing of the digit 7"], size=(16, 16))
    with torch.no_grad():
        ours = model.guided_forward(model.teacher_unet, seen["z"], seen["t"].reshape(1),
                                    cond, 3.0)
        unguided = model.teacher_unet(seen["z"], seen["t"].reshape(1), **cond).sample
    assert model.data_preprocessor.zero_uncond == (kind == "sdxl")
    assert (seen["out"] - unguided).abs().max() > 1e-3  # guidance changes the output
    assert (ours - seen["out"]).abs().max() < 1e-5


def test_latents_are_drawn_per_sample(bases):
    """The VAE posterior draw of each image comes from a generator of its
    dataset index (and iteration), so it does not depend on the batch it is in
    or on the process: 2 processes encode as 1 does."""
    import diffengine_distill.models  # noqa: F401
    pre = MODELS.build(dict(type="StableDiffusionDataPreprocessor", model=bases["sd"]))
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    latents = pre.encode_images(images, dict(indices=torch.tensor([4, 7, 9])))
    alone = pre.encode_images(images[1:2], dict(indices=torch.tensor([7])))
    torch.testing.assert_close(alone, latents[1:2])
    dist = pre.vae.encode(images).latent_dist
    gen = torch.Generator().manual_seed((99991 * 1_000_003 + 9) * 1_000_033 + 0)
    noise = torch.randn(dist.mean.shape[1:], generator=gen)
    expected = (dist.mean[2] + dist.std[2] * noise) * pre.vae.config.scaling_factor
    torch.testing.assert_close(latents[2], expected)
    assert not torch.allclose(latents[0], pre.encode_images(images[:1],
                                                            dict(indices=torch.tensor([5]))))
