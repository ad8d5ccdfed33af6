"""The teacher workflow end to end through ``mim train``: train, resume, export,
reload with plain diffusers, sample."""
import glob
import re
import json
import os.path as osp

import torch
from diffusers import DDIMPipeline
from mmengine.config import Config

from diffengine_distill.apis.inference import generate
from diffengine_distill.registry import MODELS

CFG = "tests/configs/teacher_tiny.py"


def losses(work_dir):
    logs = sorted(glob.glob(osp.join(work_dir, "*", "vis_data", "scalars.json")))
    rows = [json.loads(line) for p in logs for line in open(p)]
    return {r["iter"]: r["loss"] for r in rows if "loss" in r}


def state(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_loss_goes_down(teacher_runs):
    full = teacher_runs
    loss = losses(full)
    assert len(loss) == 30
    first = sum(loss[i] for i in range(1, 6)) / 5
    last = sum(loss[i] for i in range(26, 31)) / 5
    assert last < 0.9 * first, (first, last)


def test_export_reloads_bit_identically_and_samples_like_training(teacher_runs, root):
    full = teacher_runs
    pipe = DDIMPipeline.from_pretrained(full / "step30")
    ckpt = state(full / "iter_30.pth")
    # mmengine's EMAHook stores the averaged weights as the checkpoint's
    # state_dict (and the raw ones as ema_state_dict).
    ema = {k[len("unet."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("unet.")}
    raw = {k[len("module.unet."):]: v for k, v in ckpt["ema_state_dict"].items()
           if k.startswith("module.unet.")}
    assert not torch.equal(ema["conv_in.weight"], raw["conv_in.weight"])
    exported = pipe.unet.state_dict()
    assert exported.keys() == ema.keys()
    for k in ema:
        assert torch.equal(exported[k], ema[k]), k
    sched = pipe.scheduler.config
    assert (sched.prediction_type, sched.timestep_spacing, sched.set_alpha_to_one) == \
        ("v_prediction", "trailing", True)

    # The in-training sampler (model.sample) with the same weights, same seeds.
    cfg = Config.fromfile(osp.join(root, CFG))
    model = MODELS.build(cfg.model)
    model.unet.load_state_dict(ema)
    seeds = range(8)
    ours = model.sample(seeds, 4)
    theirs = generate(pipe, seeds, 4, progress=False)
    assert (ours - theirs).abs().max() < 1e-5
    assert ours.std() > 0.05  # not a constant image


def test_exports_and_grids_written(teacher_runs):
    full = teacher_runs
    assert {p.name for p in full.glob("step*")} >= {"step3", "step30"}
    assert not list(full.glob("*.tmp"))
    assert (full / "samples" / "step0.png").is_file()
    assert (full / "samples" / "step30.png").is_file()
    assert list(full.glob("*/vis_data/events.out.tfevents.*"))


def test_sigkill_mid_run_then_resume_matches(teacher_runs, tmp_path):
    from conftest import kill_then_resume
    full = teacher_runs
    killed, log = kill_then_resume("tests/configs/teacher_tiny.py", tmp_path,
                                   "train_cfg.max_iters=30", when="last_checkpoint")
    assert killed and re.search(r"Advance dataloader \d+ steps", log), log[-2000:]
    a, b = state(full / "iter_30.pth"), state(tmp_path / "iter_30.pth")
    assert a["meta"]["iter"] == b["meta"]["iter"] == 30
    for part in ("state_dict", "ema_state_dict"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)
    # Adam moments restored, not re-initialised.
    ma, mb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert ma.keys() == mb.keys()
    for k in ma:
        assert torch.equal(ma[k]["exp_avg_sq"], mb[k]["exp_avg_sq"]), k
