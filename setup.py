"""Packaging, including what ``mim train diffengine_distill CFG`` needs.

openmim looks for ``<site-packages>/diffengine_distill/.mim/tools/train.py``
and searches that folder for a bare config name. A wheel install copies
``tools/`` and ``configs/`` there. A PEP 660 editable install puts nothing in
site-packages, so its wheel gets a thin ``.mim`` shim instead: a train.py that
runs this checkout's tools/train.py and one stub per config that inherits the
checkout's file (edits stay live; re-install after adding a config).
"""
import os.path as osp
import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

ROOT = Path(__file__).resolve().parent
PKG = "diffengine_distill"
MIM_DIRS = ("tools", "configs")


# Ranges of what the code needs (the oldest release with each API it uses);
# requirements/*.txt pin the exact versions CI and the README commands use.
INSTALL_REQUIRES = [
    "torch>=2.6",  # torch.load(weights_only=True) by default, add_safe_globals
    "diffusers>=0.34",  # save_lora_weights(..., unet_lora_adapter_metadata=...)
    "peft>=0.18",  # BaseTunerLayer.set_adapter(..., inference_mode=True)
    "transformers>=4.41",  # CLIP text encoders of SD 1.5 / SDXL teachers
    "accelerate>=0.31",  # diffusers' low-memory loading
    "mmengine>=0.10.7,<0.11",  # its Runner, hooks and checkpoint layout
    "mmcv-lite>=2.0,<3",  # mmcv.transforms (Resize, CenterCrop, RandomFlip)
    "openmim>=0.3.9",  # mim train with the package's .mim folder
    "setuptools<81",  # mmengine and openmim import pkg_resources (gone in 81)
    "tensorboard",  # the configs' TensorboardVisBackend
    "scikit-learn>=1.0",  # the digits data set
    "matplotlib>=3.5",  # benchmark plots
    "datasets>=2.14",  # HFDataset by hub id (diffengine's configs)
    "tqdm",
]
EXTRAS_REQUIRE = {
    "tests": ["pytest>=8", "bitsandbytes>=0.50"],
    "8bit": ["bitsandbytes>=0.50"],  # AdamW8bit and other 8-bit optimizers
}


class BuildPyWithMim(build_py):
    """Copy tools/ and configs/ into the package's .mim folder of a wheel."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for name in MIM_DIRS:
            dst = osp.join(self.build_lib, PKG, ".mim", name)
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(ROOT / name, dst,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


class _MimShims:
    """Wraps setuptools' editable strategy and adds the .mim shim files."""

    def __init__(self, strategy):
        self.strategy = strategy

    def __enter__(self):
        self.strategy.__enter__()
        return self

    def __exit__(self, *exc):
        return self.strategy.__exit__(*exc)

    def __call__(self, wheel, files, mapping):
        self.strategy(wheel, files, mapping)
        train = ROOT / "tools" / "train.py"
        wheel.writestr(f"{PKG}/.mim/tools/train.py", (
            "import runpy, sys\n"
            f"sys.argv[0] = {str(train)!r}\n"
            f"runpy.run_path({str(train)!r}, run_name='__main__')\n"))
        for cfg in sorted((ROOT / "configs").rglob("*.py")):
            rel = cfg.relative_to(ROOT).as_posix()
            wheel.writestr(f"{PKG}/.mim/{rel}", f"_base_ = {str(cfg)!r}\n")


class EditableWheelWithMim(editable_wheel):
    def _select_strategy(self, name, tag, build_lib):
        # A plain .pth path entry: a meta-path finder would lose the import of
        # the package to the (namespace) shim folder in site-packages.
        self.mode = "compat"
        return _MimShims(super()._select_strategy(name, tag, build_lib))


setup(
    name=PKG,
    version=(ROOT / PKG / "version.py").read_text().split('"')[1],
    description="Distil slow diffusers models into 1-8 step samplers "
                "(v-prediction, progressive distillation, SFD, DMD) with MMEngine.",
    long_description=(ROOT / "README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=[PKG, f"{PKG}.*"]),
    include_package_data=False,
    python_requires=">=3.9",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    cmdclass={"build_py": BuildPyWithMim, "editable_wheel": EditableWheelWithMim},
    license="Apache-2.0",
)
