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
