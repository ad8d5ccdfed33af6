"""Every shipped config, as a user runs it: ``mim train diffengine_distill
<bare name>`` for two iterations against tiny models saved under the real hub
ids (tests/hub_cache.py, offline), with nothing but data paths, sizes and
intervals overridden; then each export reloads with stock diffusers and
samples.

The overrides are derived from each config itself (its dataset type, hooks
and loop), so a new config is covered without editing this file. Runs go two
at a time (each single-threaded) in dependency order: teachers, then the
students of their exports, then the DMD configs on ODE pairs made by
tools/make_pairs.py from the teachers.
"""
from __future__ import annotations

import glob
import json
import os
import os.path as osp
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from conftest import BIN, ROOT
from hub_cache import CIFAR10, SD15, SDXL, TERMINUS, build_hub_cache, hub_env

CONFIGS = sorted(p for p in glob.glob(osp.join(ROOT, "configs", "*", "*.py"))
                 if "_base_" not in p)
NAMES = [osp.splitext(osp.basename(p))[0] for p in CONFIGS]
PROMPTS = ["a red pokemon", "a blue dragon"]


def _load(path):
    from mmengine.config import Config
    return Config.fromfile(path)


def _base_model(cfg):
    """The teacher / base model a config names (hub id or folder)."""
    model = cfg.model
    return model.get("base_model") or (model.get("unet") or {}).get("path")


def _teacher_export(name: str, runs: str) -> str:
    exports = sorted(glob.glob(osp.join(runs, name, "step*")),
                     key=lambda p: int(p.rsplit("step", 1)[1]))
    assert exports, f"{name} wrote no export in {runs}"
    return exports[-1]


def overrides(cfg, data: dict, runs: str) -> list[str]:
    """--cfg-options that make ``cfg`` a two-iteration run on the fixture."""
    opts = {"default_hooks.logger.interval": 1, "default_hooks.checkpoint.interval": 2,
            "train_dataloader.batch_size": 2, "train_dataloader.num_workers": 0,
            "train_dataloader.persistent_workers": False}
    if cfg.train_cfg.get("by_epoch") or cfg.train_cfg.get("type") == "EpochBasedTrainLoop":
        opts["train_cfg.max_epochs"] = 1  # 4 images at batch 2: two iterations
        opts["default_hooks.checkpoint.interval"] = 1
    else:
        opts["train_cfg.max_iters"] = 2
    for i, hook in enumerate(cfg.get("custom_hooks") or []):
        for key, value in (("interval", 1 if hook.get("by_epoch") else 2),
                           ("iters_per_stage", 1), ("num_images", 2),
                           ("num_inference_steps", 2)):
            if key in hook:
                opts[f"custom_hooks.{i}.{key}"] = value
    if cfg.model.get("global_batch"):  # SFD counts trajectories in global batches
        opts["model.global_batch"] = 2
    # The teacher: a digits config reads an earlier run's export.
    base = _base_model(cfg) or ""
    if base.startswith("work_dirs/"):
        source = base.split("/")[1]
        export = _teacher_export(source, runs)
        if cfg.model.get("base_model"):
            opts["model.base_model"] = export
        else:
            opts["model.unet.path"] = export
            opts["model.scheduler.path"] = export
    dataset = cfg.train_dataloader.dataset
    kind = dataset.get("type")
    if kind in ("CaptionImageFolderDataset", "ImageFolderDataset"):
        captions = kind == "CaptionImageFolderDataset"
        opts["train_dataloader.dataset.data_root"] = data["captions" if captions else "images"]
        for i, step in enumerate(dataset.get("pipeline") or []):
            for key in ("size", "scale", "crop_size"):
                if key in step and captions:  # latent models: 16 px images, 8 px latents
                    opts[f"train_dataloader.dataset.pipeline.{i}.{key}"] = 16
    elif kind == "NoiseDataset":
        if dataset.get("prompts"):
            opts["train_dataloader.dataset.prompts"] = data["prompts"]
            opts["train_dataloader.dataset.shape"] = (4, 8, 8)
    elif kind == "PairsDataset":
        key = _pairs_key(cfg)
        if key not in data["pairs"]:
            raise RuntimeError(f"make_pairs for {key} failed (see its log)")
        opts["train_dataloader.dataset.path"] = data["pairs"][key]
    model = cfg.model
    if model.get("regression_loss", "lpips") == "lpips" and model.get("regression_weight", 0):
        # LPIPS needs torchvision's ImageNet backbones: not downloadable here.
        opts["model.regression_loss"] = "l2"
    return [f"{k}={_literal(v)}" for k, v in opts.items()]


def _literal(value) -> str:
    if isinstance(value, tuple):
        return "(" + ",".join(str(v) for v in value) + ")"
    return str(value)


def _pairs_key(cfg) -> str:
    base = _base_model(cfg) or ""
    if base.startswith("work_dirs/"):
        return "digits_cond"
    return {CIFAR10: "cifar10", SD15: "sd15", SDXL: "sdxl"}[base]


def _run(cmd, env, log):
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    with open(log, "w") as f:
        f.write(" ".join(map(str, cmd)) + "\n" + proc.stdout + proc.stderr)
    return proc.returncode


def _source_run(name: str) -> str | None:
    """The earlier run whose export ``name`` reads (digits teachers, SFD-v)."""
    base = _base_model(_load(CONFIGS[NAMES.index(name)])) or ""
    return base.split("/")[1] if base.startswith("work_dirs/") else None


def _reads_pairs(name: str) -> bool:
    cfg = _load(CONFIGS[NAMES.index(name)])
    return cfg.train_dataloader.dataset.get("type") == "PairsDataset"


@pytest.fixture(scope="module")
def smoke(request, tmp_path_factory):
    """Run the selected configs (and the runs they read); returns
    {name: (returncode, work_dir, log)} with the hub cache and environment."""
    root = tmp_path_factory.mktemp("smoke")
    cache = build_hub_cache(str(root / "hub"), str(root / "hub_work"))
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ["PATH"], OMP_NUM_THREADS="1",
               **hub_env(cache))
    data = _make_data(root)
    runs = str(root / "runs")
    results = {}
    wanted = {item.callspec.params["name"] for item in request.session.items
              if getattr(item, "callspec", None) and item.module.__name__ == __name__}
    pairs_wanted = {_pairs_key(_load(CONFIGS[NAMES.index(n)])) for n in wanted
                    if _reads_pairs(n)}
    if "digits_cond" in pairs_wanted:
        wanted.add("ddpm_v_digits_cond")
    while True:  # add the runs that wanted ones read, transitively
        sources = {_source_run(n) for n in wanted} - {None} - wanted
        if not sources:
            break
        wanted |= sources

    def train(name):
        work = osp.join(runs, name)
        try:
            cfg = _load(CONFIGS[NAMES.index(name)])
            cmd = [osp.join(BIN, "mim"), "train", "diffengine_distill", name + ".py",
                   "--work-dir", work, "--cfg-options", *overrides(cfg, data, runs)]
            code = _run(cmd, env, work + ".log")
        except Exception as err:  # e.g. the run it reads failed: reported per config
            os.makedirs(runs, exist_ok=True)
            with open(work + ".log", "w") as f:
                f.write(repr(err))
            code = 1
        results[name] = (code, work, work + ".log")

    def pairs(key, teacher, *extra):
        out = osp.join(root, "pairs", key)
        os.makedirs(osp.dirname(out), exist_ok=True)
        cmd = [sys.executable, "tools/make_pairs.py", teacher, "--out", out,
               "--seeds", "0-3", "--steps", "2", "--batch-size", "4", *extra]
        if _run(cmd, env, out + ".log") == 0:
            data["pairs"][key] = out

    # Waves in dependency order, two runs at a time.
    data["pairs"] = {}
    done: set[str] = set()
    with ThreadPoolExecutor(2) as pool:
        while wanted - done:
            ready = sorted(n for n in wanted - done
                           if _source_run(n) in done | {None}
                           and not (_reads_pairs(n) and not data.get("pairs_made")))
            jobs = []
            if not ready and not data.get("pairs_made"):  # only pair readers are left
                jobs = [("digits_cond", "ddpm_v_digits_cond"), ("cifar10", CIFAR10),
                        ("sd15", SD15, "--prompts", data["prompts"], "--guidance-scale",
                         "3", "--solver", "pndm"),
                        ("sdxl", SDXL, "--prompts", data["prompts"], "--guidance-scale", "8")]
                jobs = [job for job in jobs if job[0] in pairs_wanted]
                jobs = [(k, _teacher_export(t, runs) if t in NAMES else t, *rest)
                        for k, t, *rest in jobs]
                list(pool.map(lambda job: pairs(*job), jobs))
                data["pairs_made"] = True
                continue
            list(pool.map(train, ready))
            done |= set(ready)
    return dict(results=results, cache=cache, env=env, runs=runs)


def _make_data(root):
    """4 captioned RGB images, 4 RGB 32 px images, a prompts file."""
    from PIL import Image
    rng = np.random.default_rng(0)
    data = {}
    for key, size in (("captions", 24), ("images", 32)):
        folder = root / key
        folder.mkdir()
        with open(folder / "metadata.jsonl", "w") as f:
            for i in range(4):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
                f.write(json.dumps({"file_name": f"{i}.png", "text": PROMPTS[i % 2]}) + "\n")
        if key == "images":
            os.remove(folder / "metadata.jsonl")
        data[key] = str(folder)
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    data["prompts"] = str(root / "prompts.txt")
    return data


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_config_trains_exports_and_reloads(smoke, name, monkeypatch):
    code, work, log = smoke["results"][name]
    text = open(log).read()
    assert code == 0, f"{name} failed:\n{text[-6000:]}"
    exports = [osp.dirname(p) for p in glob.glob(osp.join(work, "**", "diffengine_distill.json"),
                                                 recursive=True)]
    assert exports, f"{name} wrote no export"
    for key, value in hub_env(smoke["cache"]).items():
        monkeypatch.setenv(key, value)
    import huggingface_hub.constants as constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", smoke["cache"])
    for export in exports:
        images = _sample_export(export, _load(CONFIGS[NAMES.index(name)]))
        assert np.isfinite(images).all() and images.std() > 0, export


def _sample_export(export: str, cfg) -> np.ndarray:
    """Load ``export`` as a user would and sample two steps (one image)."""
    import diffusers
    from diffusers import DiffusionPipeline
    with open(osp.join(export, "diffengine_distill.json")) as f:
        meta = json.load(f)
    steps = int(meta.get("num_inference_steps") or 2)
    if osp.isfile(osp.join(export, "model_index.json")):
        with open(osp.join(export, "model_index.json")) as f:
            index = json.load(f)
        class_name = index["_class_name"]
        if any(isinstance(v, list) and str(v[0]).startswith("diffengine_distill")
               for v in index.values()):
            import diffengine_distill  # noqa: F401 (its schedulers, as the docs say)
        if hasattr(diffusers, class_name):
            pipe = DiffusionPipeline.from_pretrained(export)
        else:  # class-conditional and fractional-grid exports: the docs' loader
            import diffengine_distill
            pipe = getattr(diffengine_distill, class_name).from_pretrained(export)
    else:  # LoRA adapters for the config's base model
        pipe = DiffusionPipeline.from_pretrained(_base_model(cfg))
        pipe.load_lora_weights(export)
        pipe.scheduler = type(pipe.scheduler).from_pretrained(export, subfolder="scheduler") \
            if osp.isdir(osp.join(export, "scheduler")) else pipe.scheduler
    kwargs = dict(num_inference_steps=steps, generator=torch.Generator().manual_seed(0),
                  output_type="np")
    if hasattr(pipe, "text_encoder"):
        kwargs.update(prompt=PROMPTS[0], height=16, width=16, guidance_scale=1.0)
    elif getattr(pipe, "num_classes", None):
        kwargs.update(class_labels=[0])
    else:
        kwargs.update(batch_size=1)
    return np.asarray(pipe(**kwargs).images)
