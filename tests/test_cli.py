"""The command-line tools: fast --help, one-line refusals of nonsense, and any
diffusers pixel pipeline (stock DDPMPipeline / DDIMPipeline folders, hub ids)."""
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from hub_cache import save_to_hub_cache

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOLS = ["tools/train.py", "tools/sample.py", "tools/evaluate.py", "tools/make_pairs.py", "tools/strip.py",
         "tools/benchmark/throughput.py", "tools/benchmark/pd_quality.py",
         "tools/benchmark/sfd_quality.py", "tools/benchmark/dmd_quality.py"]
HEAVY = {"torch", "diffusers", "transformers", "peft", "bitsandbytes", "mmengine"}


def tool(*args, env=None):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("path", TOOLS)
def test_help_loads_no_heavy_module(path):
    proc = tool("-X", "importtime", path, "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage:")
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0]
                for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "argparse" in imported  # the -X importtime report is there
    assert not imported & HEAVY, sorted(imported & HEAVY)


def test_train_refuses_nonsense_process_counts():
    for args, message in ((["--gpus", "0"], "--gpus: expected an integer >= 1, got '0'"),
                          (["--local-rank", "-1"], "expected an integer >= 0, got '-1'")):
        proc = tool("tools/train.py", "x.py", *args)
        assert proc.returncode == 2 and message in proc.stderr.splitlines()[-1], proc.stderr


BAD = [  # (tool, arguments, what the one line must say)
    ("sample", ["x", "--steps", "0"], "--steps: must be a positive integer, got 0"),
    ("sample", ["x", "--steps", "-3"], "--steps: must be a positive integer, got -3"),
    ("sample", ["x", "--steps", "2.5"], "--steps: expected a positive integer, got '2.5'"),
    ("sample", ["x", "--num-images", "0"], "--num-images: must be a positive integer"),
    ("sample", ["x", "--seeds", "5-2"], "seed range '5-2' is empty"),
    ("sample", ["x", "--seeds", "1,1"], "repeats seeds"),
    ("sample", ["x", "--seeds", "-1"], "is not a seed list"),
    ("sample", ["x", "--labels", "3-0"], "label range '3-0' is empty"),
    ("sample", ["x", "--batch-size", "0"], "--batch-size: must be a positive integer"),
    ("sample", ["x", "--eta", "1.5"], "DDIM eta must be in [0, 1], got 1.5"),
    ("sample", ["x", "--eta", "nan"], "must be a finite number"),
    ("sample", ["x", "--scale", "0"], "--scale: must be a positive integer"),
    ("evaluate", ["x", "--steps", "-1"], "--steps: must be a positive integer, got -1"),
    ("evaluate", ["x", "--steps", "0"], "--steps: must be a positive integer, got 0"),
    ("evaluate", ["x", "--seeds", "9-0"], "seed range '9-0' is empty"),
    ("evaluate", ["x", "--batch-size", "0"], "--batch-size: must be a positive integer"),
    ("evaluate", ["x", "--reference-steps", "0"], "--reference-steps: must be a positive"),
    ("make_pairs", ["x", "--out", "y", "--steps", "0"], "--steps: must be a positive"),
    ("make_pairs", ["x", "--out", "y", "--shard-size", "0"], "--shard-size: must be a"),
    ("make_pairs", ["x", "--out", "y", "--batch-size", "-2"], "--batch-size: must be a"),
    ("make_pairs", ["x", "--out", "y", "--num-classes", "0"], "--num-classes: must be a"),
    ("make_pairs", ["x", "--out", "y", "--seeds", "3-1"], "seed range '3-1' is empty"),
    ("make_pairs", ["x", "--out", "y", "--guidance-scale", "inf"], "must be a finite number"),
    ("strip", ["a=b@4", "--out", "s.png", "--seeds", "4-1"], "seed range '4-1' is empty"),
    ("strip", ["a=b@4", "--out", "s.png", "--scale", "-1"], "--scale: must be a positive"),
]


@pytest.mark.parametrize("name,args,message", BAD, ids=[" ".join(b[1]) for b in BAD])
def test_nonsense_numbers_are_refused_in_one_line(name, args, message):
    proc = tool(f"tools/{name}.py", *args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{name}.py: error: "), proc.stderr
    assert message in lines[0]


def test_python_entry_points_use_the_same_checks(capsys):
    from diffengine_distill.apis.evaluate import main as evaluate_main
    from diffengine_distill.apis.sample import main as sample_main
    for main, args in ((sample_main, ["x", "--steps", "0"]),
                       (evaluate_main, ["x", "--steps", "-1"])):
        with pytest.raises(SystemExit) as exc:
            main(args)
        assert exc.value.code == 2
        assert "must be a positive integer" in capsys.readouterr().err


# -- stock diffusers pipelines -------------------------------------------------------------

def tiny_unet(channels: int, size: int):
    from diffusers import UNet2DModel
    torch.manual_seed(0)
    return UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels,
                       block_out_channels=(8, 16), norm_num_groups=4, layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"))


def cifar_scheduler():
    """google/ddpm-cifar10-32's scheduler."""
    from diffusers import DDPMScheduler
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True,
                         variance_type="fixed_large", prediction_type="epsilon")


@pytest.fixture(scope="module")
def stock(tmp_path_factory):
    """Tiny stock pipelines saved the hub's way: RGB DDPM, RGB DDIM, 1-channel DDPM."""
    from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline
    root = tmp_path_factory.mktemp("stock")
    pipes = dict(ddpm=DDPMPipeline(unet=tiny_unet(3, 8), scheduler=cifar_scheduler()),
                 ddim=DDIMPipeline(unet=tiny_unet(3, 8), scheduler=DDIMScheduler.from_config(
                     cifar_scheduler().config)),
                 gray=DDPMPipeline(unet=tiny_unet(1, 8), scheduler=cifar_scheduler()))
    for name, pipe in pipes.items():
        pipe.save_pretrained(root / name)
        pipe.set_progress_bar_config(disable=True)
    return root, pipes


def reference(pipe, seeds, steps, **kwargs):
    """diffusers' own pipeline with one CPU generator per seed, in [-1, 1]."""
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    out = pipe(batch_size=len(seeds), generator=gens, num_inference_steps=steps,
               output_type="np", **kwargs).images
    return torch.from_numpy(out).permute(0, 3, 1, 2) * 2 - 1


def png(path):
    return np.asarray(Image.open(path))


def as_uint8(images):
    return ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def test_sample_stock_ddpm_folder_matches_diffusers(stock, tmp_path):
    from diffengine_distill.apis.sample import main
    root, pipes = stock
    images = main([str(root / "ddpm"), "--steps", "5", "--seeds", "3,7,8", "--batch-size", "2",
                   "--out", str(tmp_path)])
    expected = reference(pipes["ddpm"], [3, 7, 8], 5)  # one batch of 3: fp32 round-off
    torch.testing.assert_close(images, expected, rtol=0, atol=1e-5)
    saved = png(tmp_path / "000007.png").astype(int)
    assert saved.shape == (8, 8, 3) and np.abs(saved - as_uint8(expected)[1]).max() <= 1


def test_sample_stock_ddim_folder_with_eta(stock, tmp_path):
    from diffengine_distill.apis.sample import main
    root, pipes = stock
    images = main([str(root / "ddim"), "--steps", "4", "--seeds", "0-1", "--eta", "0.5",
                   "--out", str(tmp_path)])
    expected = reference(pipes["ddim"], [0, 1], 4, eta=0.5)
    torch.testing.assert_close(images, expected, rtol=0, atol=1e-6)
    deterministic = reference(pipes["ddim"], [0, 1], 4, eta=0.0)
    assert (images - deterministic).abs().max() > 0.01  # eta reached the sampler


def test_sample_any_channel_count(tmp_path):
    """Grayscale, 2 and 4 channels go to PNG (L, LA, RGBA); more to images.npy."""
    from diffusers import DDPMPipeline

    from diffengine_distill.apis.sample import main
    for channels in (2, 5):
        pipe = DDPMPipeline(unet=tiny_unet(channels, 8), scheduler=cifar_scheduler())
        pipe.save_pretrained(tmp_path / f"c{channels}")
        out = tmp_path / f"out{channels}"
        main([str(tmp_path / f"c{channels}"), "--steps", "2", "--seeds", "0-1",
              "--out", str(out)])
        expected = reference(pipe, [0, 1], 2)
        if channels == 2:
            saved = np.stack([png(out / f"00000{i}.png") for i in (0, 1)]).astype(int)
            assert np.abs(saved - as_uint8(expected)).max() <= 1
        else:
            np.testing.assert_allclose(np.load(out / "images.npy"), expected.numpy(),
                                       atol=1e-5)


def test_sample_labels_may_repeat(tmp_path, capsys):
    from diffusers import DDIMScheduler, UNet2DModel

    from diffengine_distill import SamplerPipeline
    from diffengine_distill.apis.sample import main
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                       norm_num_groups=4, layers_per_block=1, num_class_embeds=6,
                       down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"))
    pipe = SamplerPipeline(unet=unet, scheduler=DDIMScheduler.from_config(
        cifar_scheduler().config))
    pipe.save_pretrained(tmp_path / "cond")
    images = main([str(tmp_path / "cond"), "--steps", "2", "--seeds", "0-3", "--labels", "2,2,5",
                   "--out", str(tmp_path / "o")])
    gens = [torch.Generator().manual_seed(s) for s in range(4)]
    expected = pipe(class_labels=[2, 2, 5, 2], generator=gens, num_inference_steps=2,
                    output_type="pt").images * 2 - 1
    torch.testing.assert_close(images, expected, rtol=0, atol=1e-5)
    line = run_main(main, [str(tmp_path / "cond"), "--steps", "2", "--labels", "6",
                           "--out", str(tmp_path / "o")], capsys)
    assert "below the model's 6 classes, got 6" in line


def run_main(main, args, capsys):
    """The one stderr line of ``main(args)``'s refusal (earlier output dropped)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(args)
    err = capsys.readouterr().err + (exc.value.code if isinstance(exc.value.code, str) else "")
    assert exc.value.code not in (0, None)
    lines = [line for line in err.splitlines()  # less diffusers' loading progress bar
             if line.strip() and "Loading pipeline components" not in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_user_errors_found_after_loading_are_one_line(stock, tmp_path, capsys, monkeypatch):
    from diffengine_distill.apis.evaluate import main as evaluate
    from diffengine_distill.apis.pairs import main as make_pairs
    from diffengine_distill.apis.sample import main as sample
    from diffengine_distill.apis.sample import strip_main as strip
    root, _ = stock
    ddpm, gray, out = str(root / "ddpm"), str(root / "gray"), str(tmp_path / "o")
    line = run_main(sample, [ddpm, "--steps", "1001", "--out", out], capsys)
    assert line.startswith("sample.py: error: 1001 steps:") and "1000" in line
    line = run_main(sample, [ddpm, "--eta", "0.3", "--out", out], capsys)
    assert "DDPMPipeline takes no eta" in line
    line = run_main(sample, [ddpm, "--labels", "0-3", "--steps", "2", "--out", out], capsys)
    assert "not class-conditional" in line
    line = run_main(sample, [str(tmp_path / "missing"), "--out", out], capsys)
    assert str(tmp_path / "missing") in line
    monkeypatch.chdir(tmp_path)
    (tmp_path / "work_dirs").mkdir()  # a typo under a local folder is not a hub id
    line = run_main(sample, ["work_dirs/ddpm_v_digts", "--out", out], capsys)
    assert "'work_dirs/ddpm_v_digts' is neither an exported pipeline folder" in line
    line = run_main(sample, [ddpm, "--device", "cuda:0", "--out", out], capsys) \
        if not torch.cuda.is_available() else "CUDA is not available"
    assert "CUDA is not available" in line
    line = run_main(evaluate, [ddpm, "--seeds", "4", "--steps", "2", "--out", out], capsys)
    assert "at least 2 images" in line
    line = run_main(evaluate, [ddpm, gray, "--seeds", "0-1", "--steps", "2", "--out", out],
                    capsys)
    assert "(1, 8, 8)" in line and "(3, 8, 8)" in line
    line = run_main(evaluate, [f"{ddpm}@2,0", "--seeds", "0-1", "--out", out], capsys)
    assert "must be a positive integer, got 0" in line
    line = run_main(evaluate, [ddpm, f"{ddpm}@4", "--seeds", "0-1", "--out", out], capsys)
    assert "two pipelines are named 'ddpm'" in line
    line = run_main(make_pairs, [ddpm, "--out", out, "--seeds", "0-1", "--steps", "1001",
                                 "--solver", "ddim"], capsys)
    assert line.startswith("make_pairs.py: error: 1001 steps:")
    line = run_main(strip, [f"a={ddpm}@x", "--out", str(tmp_path / "s.png")], capsys)
    assert "is not LABEL=PATH@STEPS" in line
    assert not (tmp_path / "o").exists() and not (tmp_path / "s.png").exists()


def psnr(a, b):
    mse = ((a.double() - b.double()) ** 2).flatten(1).mean(1)
    return (10 * torch.log10(4 / mse)).mean().item()


def fake_inception(path):
    """A TorchScript stand-in with the NVlabs file's call signature: per-channel
    mean and std of the uint8 RGB input as 'features'."""
    class Net(torch.nn.Module):
        def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            x = x.float()
            return torch.cat([x.mean((2, 3)), x.std((2, 3))], 1)
    torch.jit.save(torch.jit.script(Net()), str(path))
    import hashlib
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_evaluate_rgb_ddpm_folder(stock, tmp_path):
    from diffengine_distill.apis.evaluate import evaluate, main, markdown_table
    from diffengine_distill.evaluation import frechet_distance
    root, pipes = stock
    seeds = list(range(6))
    out = tmp_path / "ev"
    rows = main([f"{root / 'ddpm'}@2,3", "--reference-steps", "6", "--seeds", "0-5",
                 "--batch-size", "4", "--out", str(out)])
    ref = reference(pipes["ddpm"], seeds, 6)
    assert [(r["model"], r["steps"]) for r in rows] == [("ddpm", 2), ("ddpm", 3)]
    for row in rows:
        assert row["psnr_vs_reference"] == pytest.approx(
            psnr(reference(pipes["ddpm"], seeds, row["steps"]), ref), abs=1e-6)
        assert "fd" not in row and "class_acc" not in row  # not digits-shaped
        assert row["reference"] == "ddpm@6"
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["rows"] == rows
    assert "PSNR vs ddpm@6" in out.with_suffix(".md").read_text()

    weights = tmp_path / "inception-2015-12-05.pt"
    sha = fake_inception(weights)
    rows = evaluate([f"{root / 'ddpm'}@2"], seeds=seeds, reference_steps=6,
                    inception_weights=str(weights), inception_sha256=sha)

    def feats(images):  # the stand-in's features of the uint8 RGB images, by hand
        x = torch.from_numpy(as_uint8(images)).permute(0, 3, 1, 2).double()
        return torch.cat([x.mean((2, 3)), x.std((2, 3))], 1).numpy()
    expected = frechet_distance(feats(reference(pipes["ddpm"], seeds, 2)), feats(ref))
    assert rows[0]["inception_fd"] == pytest.approx(expected, rel=1e-6)
    assert rows[0]["inception_fd_against"] == "ddpm@6"
    assert "Inception FID vs ddpm@6" in markdown_table(rows)


def test_evaluate_refuses_unknown_inception_file(stock, tmp_path, capsys):
    from diffengine_distill.apis.evaluate import main
    from diffengine_distill.evaluation import INCEPTION_SHA256
    root, _ = stock
    weights = tmp_path / "inception-2015-12-05.pt"
    sha = fake_inception(weights)
    line = run_main(main, [str(root / "ddpm"), "--steps", "2", "--seeds", "0-1",
                           "--inception-weights", str(weights), "--out",
                           str(tmp_path / "ev")], capsys)
    assert sha in line and INCEPTION_SHA256 in line and str(weights) in line
    assert not (tmp_path / "ev.json").exists()


def test_evaluate_digits_shaped_gets_digits_metrics(stock, tmp_path, monkeypatch):
    from diffengine_distill.apis.evaluate import evaluate
    from diffengine_distill.datasets.digits import load_digits_uint8
    from diffengine_distill.evaluation import (classifier_features, frechet_distance,
                                               get_digits_classifier)
    monkeypatch.setenv("DIFFENGINE_DISTILL_CACHE", str(tmp_path / "cache"))
    root, pipes = stock
    seeds = list(range(4))
    rows = evaluate([f"{root / 'gray'}@2"], seeds=seeds, reference_steps=3)
    classifier, acc = get_digits_classifier(8)
    real = torch.from_numpy(load_digits_uint8(8)[0]).float()[:, None] / 127.5 - 1
    expected = frechet_distance(classifier_features(reference(pipes["gray"], seeds, 2),
                                                    classifier),
                                classifier_features(real, classifier))
    assert rows[0]["fd"] == pytest.approx(expected, rel=1e-6)
    assert rows[0]["classifier_test_acc"] == acc
    assert rows[0]["psnr_vs_reference"] == pytest.approx(
        psnr(reference(pipes["gray"], seeds, 2), reference(pipes["gray"], seeds, 3)), abs=1e-6)


def test_hub_id_from_the_local_cache(stock, tmp_path, monkeypatch, capsys):
    """`google/ddpm-cifar10-32` (its scheduler; a tiny UNet) from an offline HF cache,
    through the real command line, then evaluated in this process."""
    import huggingface_hub.constants as constants

    from diffengine_distill.apis.evaluate import evaluate
    from diffengine_distill.apis.sample import main as sample
    root, pipes = stock
    cache = tmp_path / "hub"
    save_to_hub_cache(str(root / "ddpm"), "google/ddpm-cifar10-32", str(cache))
    env = dict(HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    out = tmp_path / "samples"
    proc = tool("tools/sample.py", "google/ddpm-cifar10-32", "--steps", "3", "--seeds", "0-1",
                "--out", str(out), env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = as_uint8(reference(pipes["ddpm"], [0, 1], 3))
    assert np.array_equal(np.stack([png(out / f"00000{i}.png") for i in (0, 1)]), expected)

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read at import: patch too
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    rows = evaluate(["google/ddpm-cifar10-32@2"], seeds=[0, 1], reference_steps=3)
    assert (rows[0]["model"], rows[0]["reference"]) == ("ddpm-cifar10-32", "ddpm-cifar10-32@3")
    assert rows[0]["psnr_vs_reference"] == pytest.approx(psnr(
        reference(pipes["ddpm"], [0, 1], 2), reference(pipes["ddpm"], [0, 1], 3)), abs=1e-6)
    line = run_main(sample, ["google/ddpm-cifar10-64", "--steps", "3", "--out", str(out)],
                    capsys)
    assert line.startswith("sample.py: error: ") and "google/ddpm-cifar10-64" in line
    assert "HF_HUB_OFFLINE" in line
