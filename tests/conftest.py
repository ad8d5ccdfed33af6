import os
import os.path as osp
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
BIN = osp.dirname(sys.executable)


def run(cmd, cwd=ROOT, env=None, check=True):
    """Run a command with this interpreter's environment; show its output on failure."""
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ["PATH"], **(env or {}))
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def mim_train(config, work_dir, *args, **kw):
    return run([osp.join(BIN, "mim"), "train", "diffengine_distill", config,
                "--work-dir", str(work_dir), *args], **kw)


@pytest.fixture(scope="session")
def root():
    return ROOT


@pytest.fixture(scope="session")
def teacher_runs(tmp_path_factory):
    """The tiny teacher trained for 30 iterations straight, and for 20 then
    resumed to 30 (shared by the teacher and distillation tests)."""
    base = tmp_path_factory.mktemp("teacher")
    full, part = base / "full", base / "part"
    cfg, iters = "tests/configs/teacher_tiny.py", "train_cfg.max_iters={}"
    mim_train(cfg, full, "--cfg-options", iters.format(30))
    mim_train(cfg, part, "--cfg-options", iters.format(20))
    proc = mim_train(cfg, part, "--resume", "--cfg-options", iters.format(30))
    return full, part, proc.stdout + proc.stderr


@pytest.fixture(scope="session")
def tiny_teacher(teacher_runs):
    """Export folder of the tiny teacher (v-prediction, T = 1024, 8x8 digits)."""
    return teacher_runs[0] / "step30"
