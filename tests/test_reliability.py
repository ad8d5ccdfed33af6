"""Faults at the worst moments (docs/reliability.md): resume picks an intact
checkpoint of the same model or says why not, a full disk and kills inside a
checkpoint or export write lose nothing, unreadable images are named before
training starts."""
import errno
import os
import os.path as osp
import shutil
import zipfile

import pytest
import torch

from diffengine_distill.utils.safe_load import allow_mmengine_checkpoints
from diffengine_distill.apis.train import (atomic_runner, build_config, check_model_matches,
                                           checkpoint_intact, parse_args, resume_checkpoint)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TEACHER_CFG = osp.join(ROOT, "configs", "teachers", "ddpm_v_digits.py")


def save_ckpt(path, value=0.0):
    torch.save({"state_dict": {"w": torch.full((64,), value)}}, path)
    return path


def flip_a_bit(path):
    """Flip one bit inside the first tensor's bytes (the zip stays well-formed)."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if "/data/" in i.filename)
    # Local header: 30 bytes + name + extra, then the stored (uncompressed) bytes.
    name_len = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little")
    extra_len = int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
    data[info.header_offset + 30 + name_len + extra_len + 5] ^= 0x04
    path.write_bytes(bytes(data))


# -- which checkpoint --resume takes ---------------------------------------------------
def test_bit_flip_is_caught_although_torch_loads_it(tmp_path):
    ckpt = save_ckpt(tmp_path / "iter_2.pth", 1.0)
    assert checkpoint_intact(str(ckpt))
    flip_a_bit(ckpt)
    loaded = torch.load(ckpt, weights_only=True)["state_dict"]["w"]
    assert not torch.equal(loaded, torch.full((64,), 1.0))  # silently wrong weights
    assert not checkpoint_intact(str(ckpt))
    truncated = tmp_path / "iter_4.pth"
    truncated.write_bytes(save_ckpt(tmp_path / "x.pth").read_bytes()[:-40])
    assert not checkpoint_intact(str(truncated))


@pytest.mark.parametrize("last", ["", "dangling", None])
def test_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path, last):
    """An empty last_checkpoint (killed while mmengine rewrote it), one naming a
    deleted file, or none yet (killed between the save and it): the newest
    intact iter_*.pth, by iteration count, not by name order."""
    for n in (2, 4, 10):
        save_ckpt(tmp_path / f"iter_{n}.pth")
    flip_a_bit(tmp_path / "iter_10.pth")  # newest, but corrupt
    if last is not None:
        named = str(tmp_path / "iter_12.pth") if last == "dangling" else last
        (tmp_path / "last_checkpoint").write_text(named)
    path, note = resume_checkpoint(str(tmp_path), "auto")
    assert path == str(tmp_path / "iter_4.pth")
    why = {"": "is empty", "dangling": "iter_12.pth', which does not exist",
           None: "there is no"}[last]
    assert why in note and f"resuming from the newest intact checkpoint {path}" in note


def test_resume_with_nothing_to_resume_starts_from_scratch_and_says_so(tmp_path):
    notes = []
    cfg = build_config(parse_args([TEACHER_CFG, "--work-dir", str(tmp_path / "w"),
                                   "--resume"]), notes)
    assert not cfg.resume and cfg.load_from is None
    assert notes == [f"--resume: no checkpoint in {tmp_path / 'w'}; starting from scratch."]
    # last_checkpoint is followed when it names an intact file.
    work = tmp_path / "w2"
    work.mkdir()
    for n in (2, 4):
        save_ckpt(work / f"iter_{n}.pth")
    (work / "last_checkpoint").write_text(str(work / "iter_2.pth"))
    notes = []
    cfg = build_config(parse_args([TEACHER_CFG, "--work-dir", str(work), "--resume"]), notes)
    assert cfg.resume and cfg.load_from == str(work / "iter_2.pth") and notes == []


def test_resume_refuses_when_nothing_is_intact(tmp_path):
    save_ckpt(tmp_path / "iter_2.pth")
    flip_a_bit(tmp_path / "iter_2.pth")
    with pytest.raises(RuntimeError, match=r"iter_2\.pth' is missing, truncated or corrupt.*"
                                           r"No intact checkpoint"):
        resume_checkpoint(str(tmp_path), "auto")
    with pytest.raises(FileNotFoundError, match="--resume: checkpoint '/no/such.pth' not found"):
        resume_checkpoint(str(tmp_path), "/no/such.pth")


def test_resume_refuses_a_checkpoint_of_another_model(tmp_path):
    from test_bad_input import SCHEDULER, UNET

    from diffengine_distill.models import DiffusionModel
    narrow = DiffusionModel(unet=UNET, scheduler=SCHEDULER)
    wide = DiffusionModel(unet=dict(UNET, block_out_channels=(16, 16)), scheduler=SCHEDULER)
    ckpt = tmp_path / "iter_2.pth"
    torch.save({"state_dict": narrow.state_dict()}, ckpt)
    check_model_matches(narrow, str(ckpt))  # its own checkpoint passes
    a, b = narrow.state_dict(), wide.state_dict()
    first = next(k for k in b if k in a and a[k].shape != b[k].shape)
    with pytest.raises(RuntimeError) as err:
        check_model_matches(wide, str(ckpt))
    assert (f"{first} is {tuple(a[first].shape)} in the checkpoint but "
            f"{tuple(b[first].shape)} in the model") in str(err.value)
    conditional = DiffusionModel(unet=dict(UNET, num_class_embeds=3), scheduler=SCHEDULER)
    with pytest.raises(RuntimeError, match="model's unet.class_embedding.weight is not in the "
                                           "checkpoint"):
        check_model_matches(conditional, str(ckpt))


# -- a full disk ---------------------------------------------------------------------------
def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    from mmengine.fileio.backends import LocalBackend
    from mmengine.model import BaseModel

    class Toy(BaseModel):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 1)

        def forward(self, *args, **kwargs):
            raise NotImplementedError  # only saved here

    runner = atomic_runner()(
        # default_scope: a Runner built in-process sets mmengine's global scope,
        # which later tests' MODELS.build would inherit.
        model=Toy(), work_dir=str(tmp_path), default_scope="diffengine_distill",
        train_dataloader=torch.utils.data.DataLoader([0]),
        train_cfg=dict(by_epoch=False, max_iters=1),
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.1)))
    save = dict(save_optimizer=False, save_param_scheduler=False)
    runner.save_checkpoint(str(tmp_path), "iter_2.pth", **save)
    before = (tmp_path / "iter_2.pth").read_bytes()
    put = LocalBackend.put

    def half_then_full(self, obj, filepath):  # the disk fills up midway
        put(self, obj[:len(obj) // 2], filepath)
        enospc()
    monkeypatch.setattr(LocalBackend, "put", half_then_full)
    with pytest.raises(OSError, match=r"Could not write checkpoint .*iter_4\.pth \(No space "
                                      r"left on device\).*untouched \(iter_2\.pth\).*--resume"):
        runner.save_checkpoint(str(tmp_path), "iter_4.pth", **save)
    assert sorted(p.name for p in tmp_path.glob("iter_*")) == ["iter_2.pth"]
    assert (tmp_path / "iter_2.pth").read_bytes() == before


def test_disk_full_while_exporting_keeps_the_previous_export(tmp_path):
    from diffengine_distill.engine.hooks.export_hook import write_atomically

    def save(folder, weights):
        with open(osp.join(folder, "weights.bin"), "wb") as f:
            f.write(weights)
    write_atomically(lambda tmp: save(tmp, b"old"), str(tmp_path / "step3"))

    def save_then_full(tmp):
        save(tmp, b"new, half")
        enospc()
    with pytest.raises(OSError, match=r"export .*step3 \(No space left on device\).*earlier "
                                      "exports are untouched"):
        write_atomically(save_then_full, str(tmp_path / "step3"))
    assert os.listdir(tmp_path) == ["step3"]  # no temp folder left either
    assert (tmp_path / "step3" / "weights.bin").read_bytes() == b"old"


# -- unreadable images, before training --------------------------------------------------
def image_folder(root):
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    (root / "cats").mkdir(parents=True)
    for i, ext in enumerate(("png", "jpg", "bmp", "webp")):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(
            root / "cats" / f"ok{i}.{ext}")
    good_png = (root / "cats" / "ok0.png").read_bytes()
    good_jpg = (root / "cats" / "ok1.jpg").read_bytes()
    (root / "cats" / "trailer.jpg").write_bytes(good_jpg + b"camera data")  # still decodes
    bad = {"cut.png": good_png[:len(good_png) // 2], "cut.jpg": good_jpg[:len(good_jpg) - 30],
           "text.png": b"not an image", "empty.webp": b""}
    for name, data in bad.items():
        (root / "cats" / name).write_bytes(data)
    return sorted(str(root / "cats" / n) for n in bad)


def test_truncated_images_are_named_before_training(tmp_path):
    from PIL import Image

    from diffengine_distill.datasets import CaptionImageFolderDataset, ImageFolderDataset
    bad = image_folder(tmp_path)
    for path in bad:  # independent check: PIL cannot decode them
        with pytest.raises(Exception):  # noqa: B017
            with Image.open(path) as img:
                img.load()
    with pytest.raises(ValueError) as err:
        ImageFolderDataset(data_root=str(tmp_path))
    named = [line.strip() for line in str(err.value).splitlines()[1:]]
    assert sorted(named) == bad and "4 of 9 image files" in str(err.value)
    names = [osp.basename(p) for p in bad] + ["ok0.png", "trailer.jpg"]
    (tmp_path / "cats" / "metadata.jsonl").write_text(
        "".join(f'{{"file_name": "{n}", "text": "a cat"}}\n' for n in names))
    with pytest.raises(ValueError, match="4 of 6 image files"):
        CaptionImageFolderDataset(data_root=str(tmp_path / "cats"))
    for path in bad:
        os.remove(path)
    assert len(ImageFolderDataset(data_root=str(tmp_path))) == 5
    assert len(ImageFolderDataset(data_root=str(tmp_path), check_images=False)) == 5


# -- kills inside a checkpoint write and inside an export, then --resume --------------------
# Loaded by the training process through the config's custom_imports; FAULT
# says where to die: "kill_checkpoint:<file>" writes half of that checkpoint
# then SIGKILLs itself, "kill_export:<folder>" writes that export (pipeline
# files, model_index.json included), cuts its largest file in half and dies.
FAULT_PLUGIN = '''
import os, signal
from diffusers import DiffusionPipeline
from mmengine.fileio.backends import LocalBackend

kind, _, target = os.environ.get("FAULT", "").partition(":")
put, save_pretrained = LocalBackend.put, DiffusionPipeline.save_pretrained


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def faulty_put(self, obj, filepath):
    if kind == "kill_checkpoint" and os.path.basename(str(filepath)).startswith(target):
        put(self, obj[:len(obj) // 2], filepath)
        die()
    return put(self, obj, filepath)


def faulty_save_pretrained(self, save_directory, *args, **kwargs):
    save_pretrained(self, save_directory, *args, **kwargs)
    if kind == "kill_export" and target in str(save_directory):
        weights = max((os.path.join(d, f) for d, _, files in os.walk(save_directory)
                       for f in files), key=os.path.getsize)
        os.truncate(weights, os.path.getsize(weights) // 2)
        die()


LocalBackend.put, DiffusionPipeline.save_pretrained = faulty_put, faulty_save_pretrained
'''


def folder_bytes(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_kills_inside_checkpoint_and_export_writes_lose_nothing(tmp_path):
    """teacher_tiny for 8 iterations (checkpoints every 2, exports every 3),
    killed while writing iter_4.pth, resumed and killed while exporting step6,
    resumed to the end: the same weights as the uninterrupted run."""
    from conftest import mim_train

    from diffengine_distill.apis.inference import find_export
    (tmp_path / "fault_plugin.py").write_text(FAULT_PLUGIN)
    cfg = tmp_path / "teacher_faults.py"
    cfg.write_text(f"_base_ = [{ROOT + '/tests/configs/teacher_tiny.py'!r}]\n"
                   "custom_imports = dict(imports=['fault_plugin'], allow_failed_imports=False)\n")
    work = tmp_path / "work"
    PYTHONPATH = os.environ.get("PYTHONPATH", "")

    def train(fault=""):
        proc = mim_train(str(cfg), work, "--resume", "--cfg-options", "train_cfg.max_iters=8",
                         env=dict(PYTHONPATH=os.pathsep.join([str(tmp_path), PYTHONPATH]),
                                  FAULT=fault), check=not fault)
        assert proc.returncode != 0 or not fault, "the fault did not fire"
        return proc.stdout + proc.stderr

    # 1. A requeued job's --resume with nothing to resume says so; killed mid-save.
    log = train("kill_checkpoint:iter_4.pth")
    assert f"--resume: no checkpoint in {work}; starting from scratch." in log
    assert sorted(p.name for p in work.glob("iter_*")) == ["iter_2.pth", "iter_4.pth.tmp"]
    assert (work / "last_checkpoint").read_text() == str(work / "iter_2.pth")
    step3 = folder_bytes(work / "step3")
    # 2. Resumed from iter_2; killed while exporting step6 (iter_4 was saved).
    log = train("kill_export:step6")
    assert "Advance dataloader 2 steps" in log
    assert folder_bytes(work / "step3") == step3 and not (work / "step6").exists()
    assert find_export(str(work)) == str(work / "step3")  # what tools/sample.py would load
    assert (work / ".step6.tmp").is_dir()  # the partial export, hidden
    assert resume_checkpoint(str(work), "auto") == (str(work / "iter_4.pth"), None)
    # 3. Resumed from iter_4 to the end.
    log = train()
    assert "Advance dataloader 4 steps" in log
    ref = tmp_path / "uninterrupted"  # the plain config: the plugin changes nothing else
    mim_train(ROOT + "/tests/configs/teacher_tiny.py", ref, "--cfg-options",
              "train_cfg.max_iters=8")
    allow_mmengine_checkpoints()  # the Runner's allow-list, in this process too
    a = torch.load(ref / "iter_8.pth", map_location="cpu", weights_only=True)
    b = torch.load(work / "iter_8.pth", map_location="cpu", weights_only=True)
    for part in ("state_dict", "ema_state_dict"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)
    for k, state in a["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg"], b["optimizer"]["state"][k]["exp_avg"]), k
    assert not list(work.glob(".*.tmp")) and not list(work.glob("*.tmp"))
    assert folder_bytes(work / "step8") == folder_bytes(ref / "step8") | {
        "diffengine_distill.json": (work / "step8" / "diffengine_distill.json").read_bytes()}
    # 4. Resuming it with another UNet width is refused before any training.
    from diffengine_distill.apis.train import main
    with pytest.raises(RuntimeError, match=r"does not match the config's model: unet\.\S+ is "
                                           r"\(\d+, .*\) in the checkpoint but \(\d+, .*\)"):
        main([str(ROOT + "/tests/configs/teacher_tiny.py"), "--work-dir", str(work),
              "--resume", "--cfg-options", "train_cfg.max_iters=10",
              "model.unet.block_out_channels=(16,16)"])
