"""A quiet start: every mmengine registry has a child in the package's scope,
bitsandbytes is imported only for 8-bit optimizers, and PackInputs takes
read-only images without torch's warning. (The 2-iteration ``mim train`` whose
output must be free of warnings is in test_mim_install.py.)"""
import importlib
import sys
import warnings

import numpy as np
import pytest
import torch
from mmengine.registry import Registry, root

from conftest import ROOT, run

SCOPE = "diffengine_distill"


def test_every_mmengine_root_registry_has_a_child_in_our_scope():
    from diffengine_distill import registry as ours
    roots = {name: reg for name, reg in vars(root).items() if isinstance(reg, Registry)}
    assert len(roots) >= 22  # RUNNERS ... FUNCTIONS, as mmengine 0.10 defines them
    for name, parent in roots.items():
        child = getattr(ours, name, None)
        assert child is not None and child.parent is parent and child.scope == SCOPE, name
        # What mmengine does for a config with default_scope = our scope; a
        # missing child is its "Failed to search registry with scope" warning.
        with parent.switch_scope_and_registry(SCOPE) as found:
            assert found is child, name
        for location in child._locations:  # lazily imported on first lookup
            importlib.import_module(location)


def test_pack_inputs_copies_read_only_grayscale_images_quietly():
    from diffengine_distill.datasets.transforms import PackInputs
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 1), dtype=np.uint8)
    img.setflags(write=False)  # as np.asarray(PIL.Image) returns it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        inputs = PackInputs().transform(dict(img=img))["inputs"]
    assert torch.equal(inputs, torch.tensor(img[..., 0])[None])
    before = img.copy()
    inputs += 1  # its own memory: the read-only image stays as it was
    assert np.array_equal(img, before)


HIDDEN_THEN_8BIT = """
import runpy, sys
runpy.run_path("tools/train.py", run_name="not_main")  # its preamble and imports only
from mmengine.registry import OPTIMIZERS
from diffengine_distill.apis import train
print("hidden", sys.modules.get("bitsandbytes", "absent") is None,
      "AdamW8bit" in OPTIMIZERS)
train.BITSANDBYTES_HIDDEN = True
train.check_optimizers(dict(optim_wrapper=dict(optimizer=dict(type="AdamW8bit"))))
import bitsandbytes
print("configured", OPTIMIZERS.get("AdamW8bit") is bitsandbytes.optim.AdamW8bit)
"""


def test_bitsandbytes_is_imported_only_for_an_8bit_optimizer():
    pytest.importorskip("bitsandbytes")
    out = run([sys.executable, "-c", HIDDEN_THEN_8BIT], cwd=ROOT).stdout.split("\n")
    # diffusers, mmengine and peft would import it (mmengine then registers AdamW8bit).
    assert "hidden True False" in out
    assert "configured True" in out
