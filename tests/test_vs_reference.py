"""tools/benchmark/vs_reference.py: fast --help, clear refusals of missing or
wrong reference paths, and the import isolation of a reference checkout.
(Timing itself is only in the benchmark and its result files.)"""
import os.path as osp
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(ROOT, "tools", "benchmark"))
import vs_reference  # noqa: E402


def test_help_is_fast_and_loads_no_torch():
    proc = subprocess.run([sys.executable, "-X", "importtime", "tools/benchmark/vs_reference.py",
                           "--help"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage:") and "--sfd-main DIR" in proc.stdout
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0]
                for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "argparse" in imported and "torch" not in imported


@pytest.mark.parametrize("flag, marker, what", [
    ("--sfd-main", "training/loss.py", "the sfd-main folder of zju-pi/diff-sampler"),
    ("--dmd2", "main/edm/train_edm.py", "a checkout of tianweiy/DMD2"),
    ("--diffusers-examples", "consistency_distillation/train_lcm_distill_sd_wds.py",
     "the examples/ folder of huggingface/diffusers")])
def test_missing_reference_path_is_a_clear_error(tmp_path, capsys, flag, marker, what):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(SystemExit) as exit_info:
        vs_reference.parse_args([flag, missing])
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.endswith(f"error: {flag} {missing}: no {marker} there; expected {what}.")


def test_no_reference_at_all_is_refused(capsys):
    with pytest.raises(SystemExit):
        vs_reference.parse_args(["--unet", "tiny"])
    assert "no reference given" in capsys.readouterr().err


def test_a_given_checkout_is_accepted(tmp_path):
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "loss.py").write_text("")
    args = vs_reference.parse_args(["--sfd-main", str(tmp_path), "--unet", "tiny"])
    assert args.references == {"sfd": str(tmp_path)}


def test_reference_modules_and_stubs_leave_with_the_checkout(tmp_path):
    # Two references both ship a top-level 'dnnlib': each must import its own.
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "dnnlib.py").write_text(f"WHO = {name!r}\n")
    stub = "surely_not_installed_pkg.sub"
    for name in ("one", "two"):
        root = str(tmp_path / name)
        with vs_reference.reference_on_path(root, stubs=(stub,)):
            import dnnlib
            import surely_not_installed_pkg.sub as stubbed
            assert dnnlib.WHO == name
            with pytest.raises(RuntimeError, match="stub of vs_reference.py"):
                stubbed.anything()
        assert "dnnlib" not in sys.modules and root not in sys.path
        assert "surely_not_installed_pkg" not in sys.modules
        assert stub not in sys.modules
