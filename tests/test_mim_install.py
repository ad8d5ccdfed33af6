"""``mim train diffengine_distill CFG`` after an editable and after a wheel install,
with a repo-relative config path and with a bare config file name."""
import os
import re
import shutil
import sys

import pytest

from conftest import ROOT, mim_train, run

TWO_ITERS = ["--cfg-options", "train_cfg.max_iters=2", "custom_hooks.2.num_images=2",
             "model.sampler.num_inference_steps=2"]


def test_editable_install_bare_config_name(tmp_path):
    # The test environment is the README's editable install; run from elsewhere.
    proc = mim_train("ddpm_v_digits.py", tmp_path / "w", *TWO_ITERS, cwd=tmp_path)
    assert "we find the config file in codebase" in proc.stdout
    assert (tmp_path / "w" / "step2" / "model_index.json").is_file()
    assert_quiet_start(proc)


def assert_quiet_start(proc):
    """No mmengine WARNING but the two about its own CheckpointHook's FileClient
    (none from our registries: "Failed to search registry with scope"), and no
    third-party noise on stderr (pkg_resources, bitsandbytes, torch on numpy)."""
    warnings = [line for line in proc.stdout.splitlines() if "WARNING" in line]
    assert all('"FileClient"' in line or '"HardDiskBackend"' in line
               for line in warnings), "\n".join(warnings)
    noise = re.findall(r"(?im)^.*(?:warn|pkg_resources|bitsandbytes|kernels-community).*$",
                       proc.stderr)
    assert not noise, "\n".join(noise)


def test_editable_install_repo_relative_path(tmp_path):
    mim_train("configs/teachers/ddpm_v_digits.py", tmp_path / "w", *TWO_ITERS)
    assert (tmp_path / "w" / "iter_2.pth").is_file()


@pytest.mark.skipif(sys.platform != "linux", reason="uses a --target install")
def test_wheel_install(tmp_path):
    # Build from a copy of the source files: no stale build/ in the checkout.
    src = tmp_path / "src"
    files = run(["git", "ls-files", "--cached", "--others", "--exclude-standard"]).stdout
    for name in files.split():
        if os.path.isfile(os.path.join(ROOT, name)):
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.join(ROOT, name), src / name)
    target = tmp_path / "site"
    run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(src)])
    pkg = target / "diffengine_distill" / ".mim"
    assert (pkg / "tools" / "train.py").is_file()
    assert (pkg / "configs" / "teachers" / "ddpm_v_digits.py").is_file()
    # The wheel copy must win over the editable checkout for both mim and Python.
    env = dict(PYTHONPATH=str(target))
    proc = mim_train("ddpm_v_digits.py", tmp_path / "w", *TWO_ITERS, cwd=tmp_path, env=env)
    assert str(pkg / "tools" / "train.py") in proc.stdout
    assert str(pkg / "configs") in proc.stdout
    assert (tmp_path / "w" / "step2" / "model_index.json").is_file()


def test_every_shipped_config_loads_and_passes_the_checks(root):
    """Configs for hub teachers cannot train here; they must at least parse,
    inherit and pass the start-up checks."""
    import glob

    from mmengine.config import Config

    from diffengine_distill.apis.train import check_top_level_keys, check_train_cfg
    configs = [f for f in glob.glob(f"{root}/configs/**/*.py", recursive=True)
               if "/_base_/" not in f]
    assert len(configs) >= 20
    for path in configs:
        cfg = Config.fromfile(path)
        check_top_level_keys(cfg)
        check_train_cfg(cfg)
        length = cfg.train_cfg.get("max_iters") or cfg.train_cfg.get("max_epochs")
        assert cfg.model.type and length > 0, path  # iteration- or epoch-based
