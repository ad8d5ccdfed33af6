import os
import os.path as osp
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
BIN = osp.dirname(sys.executable)

# diffusers binds its log handler to the sys.stderr of the moment it first logs.
# Bound inside a capsys test, it writes to that test's closed stream later
# ("--- Logging error ---" in another test's stderr); bind it to the session's.
from diffusers.utils import logging as _diffusers_logging  # noqa: E402

_diffusers_logging.get_logger("diffusers")


def run(cmd, cwd=ROOT, env=None, check=True):
    """Run a command with this interpreter's environment; show its output on failure."""
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"], **(env or {})}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def mim_train(config, work_dir, *args, **kw):
    return run([osp.join(BIN, "mim"), "train", "diffengine_distill", config,
                "--work-dir", str(work_dir), *args], **kw)


def kill_then_resume(config, work_dir, *options, when="iter_2.pth", timeout=600):
    """Start ``mim train``, SIGKILL its whole process tree as soon as ``when``
    appears in the work dir (mid-run, possibly mid-save), then ``--resume`` to
    the end. Returns (whether the kill landed before the run finished, the
    resumed run's log)."""
    import signal
    import time
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ["PATH"])
    cmd = [osp.join(BIN, "mim"), "train", "diffengine_distill", config,
           "--work-dir", str(work_dir), "--cfg-options", *options]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + timeout
    while not (work_dir / when).exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    killed = proc.poll() is None
    if killed:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc = mim_train(config, work_dir, "--resume", "--cfg-options", *options)
    return killed, proc.stdout + proc.stderr


def assert_same_training(one, two, trained_prefix="unet."):
    """Two checkpoints of the same run under different process counts: the
    all-reduced gradients (Adam's first moments) agree to fp32 precision; so
    do the weights, up to Adam's sign-like first steps on gradients within
    rounding of zero (a few entries may step either way)."""
    import torch

    import diffengine_distill.registry  # noqa: F401  (allow-lists mmengine's types for torch.load)
    a = torch.load(one, map_location="cpu", weights_only=True)
    b = torch.load(two, map_location="cpu", weights_only=True)
    assert a["state_dict"].keys() == b["state_dict"].keys()  # no DDP "module." keys

    def flat(tensors):
        return torch.cat([t.float().flatten() for t in tensors])

    def moments(c):  # one optimizer, or one per network (DMD's OptimWrapperDict)
        opts = [c["optimizer"]] if "state" in c["optimizer"] else \
            [o for _, o in sorted(c["optimizer"].items()) if "state" in o]
        return flat(s["exp_avg"] for o in opts for s in o["state"].values())
    m_a, m_b = moments(a), moments(b)
    assert (m_a - m_b).norm() < 1e-5 * m_a.norm()
    keys = [k for k in a["state_dict"] if k.startswith(trained_prefix)]
    diff = flat(a["state_dict"][k] - b["state_dict"][k] for k in keys)
    moved = flat(a["state_dict"][k] - a["state_dict"]["teacher_" + k] for k in keys
                 if "class_embedding" not in k) if "teacher_" + keys[0] in a["state_dict"] \
        else None
    assert (diff.abs() > 1e-5).float().mean() < 0.01
    if moved is not None:
        assert diff.norm() < 0.02 * moved.norm()
    return a, b


@pytest.fixture(scope="session")
def root():
    return ROOT


@pytest.fixture(scope="session")
def teacher_runs(tmp_path_factory):
    """The tiny teacher trained for 30 iterations (shared by the teacher and
    distillation tests; resume is tested by killing a second run)."""
    full = tmp_path_factory.mktemp("teacher") / "full"
    mim_train("tests/configs/teacher_tiny.py", full, "--cfg-options", "train_cfg.max_iters=30")
    return full


@pytest.fixture(scope="session")
def tiny_teacher(teacher_runs):
    """Export folder of the tiny teacher (v-prediction, T = 1024, 8x8 digits)."""
    return teacher_runs / "step30"


# Calls that start a training or tool in a subprocess (``run`` is the helper above).
import inspect  # noqa: E402
import re  # noqa: E402

_SLOW_CALL = re.compile(r"\b(?:mim_train|kill_then_resume|subprocess)\b|(?<![\w.])run\(")


def _calls_a_subprocess(func, depth=2) -> bool:
    """Whether ``func``, or a helper of its own test module that it calls
    (``tool(...)`` say), starts a subprocess."""
    try:
        source = inspect.getsource(func)
    except (OSError, TypeError):  # built-in fixtures have no source
        return False
    if _SLOW_CALL.search(source):
        return True
    module = sys.modules.get(func.__module__)
    helpers = [getattr(module, name, None) for name in
               set(re.findall(r"(?<![\w.])([A-Za-z_]\w*)\(", source))] if depth else []
    return any(inspect.isfunction(h) and h is not func and h.__module__ == func.__module__
               and _calls_a_subprocess(h, depth - 1) for h in helpers)


def pytest_collection_modifyitems(config, items):
    """Mark ``slow`` every test that runs a training or tool in a subprocess,
    itself or through a fixture (``teacher_runs`` ...), so that
    ``pytest -m "not slow"`` runs the unit tests alone."""
    for item in items:
        funcs = [getattr(item, "function", None)]
        for name in getattr(item, "fixturenames", ()):
            funcs += [d.func for d in item._fixtureinfo.name2fixturedefs.get(name, ())]
        if any(f is not None and _calls_a_subprocess(f) for f in funcs):
            item.add_marker(pytest.mark.slow)
