"""Several processes train exactly like one with the same global batch:
per-sample noise is keyed by the dataset index, the sampler shards indices
and DDP averages gradients. Launched as users do: ``mim train --launcher
pytorch`` and ``--launcher slurm`` (through a stand-in ``srun`` that starts
the tasks with the SLURM_* variables the real one sets)."""
import json
import os
import sys

import pytest

from conftest import BIN, assert_same_training, mim_train

ENV = dict(OMP_NUM_THREADS="1")

FAKE_SRUN = """#!{python}
import json, os, subprocess, sys
args = sys.argv[1:]
with open(os.environ["FAKE_SRUN_LOG"], "w") as f:
    json.dump(args, f)
ntasks = int(next(a.split("=", 1)[1] for a in args if a.startswith("--ntasks=")))
i = 0
while args[i].startswith("-"):  # srun's options, then the command
    i += 2 if args[i] == "-p" else 1
procs = [subprocess.Popen(args[i:], env=dict(os.environ, SLURM_PROCID=str(r),
                                             SLURM_NTASKS=str(ntasks), SLURM_LOCALID=str(r),
                                             SLURM_NODELIST="node001"))
         for r in range(ntasks)]
sys.exit(max(p.wait() for p in procs))
"""


@pytest.mark.parametrize("config, options", [
    ("pd_tiny", []),
    ("sfd_tiny", ["model.use_step_condition=True"]),  # SFD-v: a shared step-count draw
])
def test_two_processes_match_one(tiny_teacher, tmp_path, config, options):
    """2 CPU processes (gloo) with batch 8 each = 1 process with batch 16."""
    teacher = [f"model.unet.path={tiny_teacher}", f"model.scheduler.path={tiny_teacher}",
               "train_cfg.max_iters=2", *options]
    cfg = f"tests/configs/{config}.py"
    mim_train(cfg, tmp_path / "one", "--cfg-options", *teacher,
              "train_dataloader.batch_size=16", env=ENV)
    proc = mim_train(cfg, tmp_path / "two", "--gpus", "2", "--launcher", "pytorch",
                     "--cfg-options", *teacher, "train_dataloader.batch_size=8", env=ENV)
    assert "Training finished" in proc.stdout
    log = next((tmp_path / "two").glob("*/*.log")).read_text()
    assert "Distributed training: True" in log and "GPU number: 2" in log
    assert_same_training(tmp_path / "one" / "iter_2.pth", tmp_path / "two" / "iter_2.pth")


@pytest.mark.skipif(sys.platform == "win32", reason="shell stand-ins")
def test_slurm_launch_matches_one_process(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text(FAKE_SRUN.format(python=sys.executable))
    (fake / "scontrol").write_text("#!/bin/sh\necho 127.0.0.1\n")
    for tool in ("srun", "scontrol"):
        (fake / tool).chmod(0o755)
    env = dict(ENV, PATH=os.pathsep.join([str(fake), BIN, os.environ["PATH"]]),
               FAKE_SRUN_LOG=str(tmp_path / "srun.json"))
    cfg, iters = "tests/configs/teacher_tiny.py", "train_cfg.max_iters=2"
    mim_train(cfg, tmp_path / "one", "--cfg-options", iters, "train_dataloader.batch_size=16",
              env=ENV)
    proc = mim_train(cfg, tmp_path / "two", "--launcher", "slurm", "--gpus", "2",
                     "--gpus-per-node", "2", "--partition", "cpu", "--srun-args", "",
                     "--cfg-options", iters,
                     "train_dataloader.batch_size=8", env=env)
    assert "Training finished" in proc.stdout
    srun = json.loads((tmp_path / "srun.json").read_text())
    # The command line mim gives srun (README: "For SLURM: ..."). openmim 0.3.9
    # crashes on a missing --srun-args (a click sentinel), so the README passes it.
    assert srun[:7] == ["-p", "cpu", "--gres=gpu:2", "--ntasks=2", "--ntasks-per-node=2",
                        "--cpus-per-task=2", "--kill-on-bad-exit=1"]
    assert "--job-name=teacher_tiny_train" in srun and "--launcher" in srun
    assert srun[srun.index("--launcher") + 1] == "slurm"
    log = next((tmp_path / "two").glob("*/*.log")).read_text()
    assert "Distributed training: True" in log and "GPU number: 2" in log
    assert_same_training(tmp_path / "one" / "iter_2.pth", tmp_path / "two" / "iter_2.pth")


def test_per_sample_draws_depend_on_index_and_iteration_only():
    import torch

    from diffengine_distill.models.editors.sample_rng import SampleRNG
    whole = SampleRNG([5, 9, 2, 7], seed=0, device="cpu", iteration=3)
    half = SampleRNG([2, 5], seed=0, device="cpu", iteration=3)
    a, b = whole.randn(1, 4, 4), half.randn(1, 4, 4)
    assert torch.equal(a[2], b[0]) and torch.equal(a[0], b[1])
    later = SampleRNG([5], seed=0, device="cpu", iteration=4).randn(1, 4, 4)
    other = SampleRNG([5], seed=1, device="cpu", iteration=3).randn(1, 4, 4)
    assert not torch.equal(a[0], later[0]) and not torch.equal(a[0], other[0])
    t = SampleRNG([5, 9], seed=0, device="cpu", iteration=3).randint(0, 1000)
    assert t.shape == (2,) and t.dtype == torch.long


def test_dmd_draws_are_keyed_per_sample_not_by_the_process_rng():
    """DMD's noise and timesteps come from (seed, dataset index, iteration):
    a sample's DM gradient does not depend on its batch-mates (how DDP shards
    the batch), and a training step does not depend on the process's RNG
    state, which checkpoints hold for rank 0 only."""
    import copy

    import torch

    from diffengine_distill.models.editors.sample_rng import GlobalRNG, SampleRNG
    from test_dmd import batch, build, optim_wrappers
    model = build(num_generator_steps=4)
    x, labels = torch.randn(4, 1, 8, 8), torch.tensor([1, 2, 3, 4])

    def dm_grad(rows, rng):
        xs = x[rows].clone().requires_grad_(True)
        model.distribution_matching_loss(xs, labels[rows], rng)[0].backward()
        return xs.grad * xs.numel()  # undo the mean over the batch
    whole = dm_grad([0, 1, 2, 3], SampleRNG([5, 9, 2, 7], seed=0, device="cpu", iteration=3))
    half = dm_grad([2, 3], SampleRNG([2, 7], seed=0, device="cpu", iteration=3))
    torch.testing.assert_close(whole[2:], half, rtol=1e-5, atol=1e-6)
    torch.manual_seed(0)  # the process RNG, as before: a sample's draw depends on its slot
    whole = dm_grad([0, 1, 2, 3], GlobalRNG(4, "cpu"))
    torch.manual_seed(0)
    assert not torch.allclose(whole[2:], dm_grad([2, 3], GlobalRNG(2, "cpu")), atol=1e-3)

    data = batch()
    data["data_samples"]["index"] = [5, 9, 2, 7]
    steps = []
    for rng_seed in (1, 2):  # e.g. two ranks, or a resumed rank > 0
        trained = copy.deepcopy(model)
        torch.manual_seed(rng_seed)
        out = trained.train_step(copy.deepcopy(data), optim_wrappers(trained))
        steps.append((out, trained.state_dict()))
    (out_a, sd_a), (out_b, sd_b) = steps
    assert out_a.keys() == out_b.keys() and all(torch.equal(out_a[k], out_b[k]) for k in out_a)
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
