"""Bad input fails early with a message that names the problem and the fix."""
import os.path as osp

import pytest
import torch

from diffengine_distill.apis.train import build_config, parse_args
from diffengine_distill.datasets import ImageFolderDataset, LoadImage
from diffengine_distill.models import DiffusionModel
from diffengine_distill.models.builders import build_scheduler, pretrained_unet
from diffengine_distill.registry import MODELS

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TEACHER_CFG = osp.join(ROOT, "configs", "teachers", "ddpm_v_digits.py")

UNET = dict(type="UNet2DModel", sample_size=8, in_channels=1, out_channels=1,
            block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4,
            layers_per_block=1)
SCHEDULER = dict(type="DDPMScheduler", num_train_timesteps=16)


def test_unknown_model_type():
    with pytest.raises(KeyError, match="NoSuchModel is not in the .*registry"):
        MODELS.build(dict(type="NoSuchModel"))


def test_unknown_prediction_type():
    with pytest.raises(ValueError) as err:
        DiffusionModel(unet=UNET, scheduler=SCHEDULER, prediction_type="eps")
    msg = str(err.value)
    assert "'eps'" in msg
    for name in ("epsilon", "v_prediction", "sample"):
        assert name in msg


def test_scheduler_option_typo():
    with pytest.raises(ValueError) as err:
        build_scheduler(dict(type="DDPMScheduler", num_train_timestep=10))
    msg = str(err.value)
    assert "['num_train_timestep']" in msg  # the bad key
    assert "'num_train_timesteps'" in msg  # among the valid ones


def test_image_folder_missing_root(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(FileNotFoundError) as err:
        ImageFolderDataset(data_root=missing)
    assert missing in str(err.value) and "data_root" in str(err.value)


def test_image_folder_non_image_png(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match=f"1 of 1 image files .*\n  {bad}$"):
        ImageFolderDataset(data_root=str(tmp_path), pipeline=[LoadImage()])
    # Without the pre-scan, loading it still fails with its name.
    dataset = ImageFolderDataset(data_root=str(tmp_path), pipeline=[LoadImage()],
                                 check_images=False)
    assert dataset.get_data_info(0)["img_path"] == str(bad)
    with pytest.raises(ValueError) as err:
        LoadImage()(dict(img_path=str(bad)))
    assert str(bad) in str(err.value) and "remove it" in str(err.value)


def test_missing_local_teacher_weights():
    with pytest.raises(FileNotFoundError) as err:
        pretrained_unet(path="/nonexistent/teacher")
    assert "/nonexistent/teacher" in str(err.value)
    assert "hub id" in str(err.value)


def test_hub_id_offline(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub
    cache = str(tmp_path / "hf" / "hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    # huggingface_hub reads these at import: patch its constants too, or the
    # env change is ignored and the hub is contacted.
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", cache)
    with pytest.raises(OSError) as err:
        pretrained_unet(path="google/ddpm-cifar10-32")
    msg = str(err.value)
    assert "google/ddpm-cifar10-32" in msg
    assert "HF_HUB_OFFLINE" in msg and "local copy" in msg
    from diffengine_distill.apis.pairs import make_pairs  # a hub teacher for text pairs
    with pytest.raises(OSError, match="stable-diffusion-v1-5/stable-diffusion-v1-5(.|\n)*HF_HUB_OFFLINE"):
        make_pairs("stable-diffusion-v1-5/stable-diffusion-v1-5", str(tmp_path / "pairs"), range(2), 2,
                   prompts=["a"], guidance_scale=3.0, progress=False)


def test_class_conditional_without_labels():
    model = DiffusionModel(unet=dict(UNET, num_class_embeds=11), scheduler=SCHEDULER)
    with pytest.raises(ValueError, match="no labels.*labelled dataset"):
        model(torch.zeros(2, 1, 8, 8), mode="loss")
    with pytest.raises(ValueError, match="labels"):
        model(torch.zeros(2, 1, 8, 8), dict(labels=None), mode="loss")


def test_channel_mismatch_with_teacher():
    model = DiffusionModel(unet=UNET, scheduler=SCHEDULER)  # one-channel UNet
    with pytest.raises(ValueError, match=r"3 channel\(s\) but the UNet takes 1.*grayscale"):
        model(torch.zeros(2, 3, 8, 8), dict(labels=None), mode="loss")


# -- tools/train.py config checks ----------------------------------------------


def test_config_top_level_typo(tmp_path):
    cfg = tmp_path / "typo.py"
    cfg.write_text(f"_base_ = [{TEACHER_CFG!r}]\ntrian_cfg = dict(max_iters=1)\n")
    args = parse_args([str(cfg), "--work-dir", str(tmp_path / "work")])
    with pytest.raises(KeyError) as err:
        build_config(args)
    msg = str(err.value)
    assert "'trian_cfg'" in msg and "'train_cfg'" in msg


def test_config_without_typo_builds(tmp_path):
    args = parse_args([TEACHER_CFG, "--work-dir", str(tmp_path / "work")])
    cfg = build_config(args)
    assert cfg.work_dir == str(tmp_path / "work")


def test_work_dir_is_a_file(tmp_path):
    work = tmp_path / "work"
    work.write_text("")
    with pytest.raises(NotADirectoryError, match="is a file; pass --work-dir"):
        build_config(parse_args([TEACHER_CFG, "--work-dir", str(work)]))


def test_missing_config(tmp_path):
    missing = str(tmp_path / "no_such_config.py")
    with pytest.raises(FileNotFoundError) as err:
        build_config(parse_args([missing]))
    assert missing in str(err.value)


def test_resume_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        build_config(parse_args([TEACHER_CFG, "--work-dir", str(tmp_path / "w"),
                                 "--resume", "/no/such.pth"]))
    assert "/no/such.pth" in str(err.value) and "--resume" in str(err.value)


def test_8bit_optimizer_without_bitsandbytes(tmp_path, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if not installed
    with pytest.raises(ImportError, match="'AdamW8bit' is a bitsandbytes optimizer: pip install"):
        build_config(parse_args([TEACHER_CFG, "--work-dir", str(tmp_path / "w"),
                                 "--cfg-options", "optim_wrapper.optimizer.type=AdamW8bit"]))


@pytest.mark.parametrize("option", ["train_cfg.max_iters=0", "train_cfg.max_iters=-5",
                                    "train_cfg.max_iters=1.5", "train_cfg.max_iters=abc",
                                    "train_dataloader.batch_size=0"])
def test_bad_counts_and_types(tmp_path, option):
    with pytest.raises(ValueError, match="must be a positive integer, got"):
        build_config(parse_args([TEACHER_CFG, "--work-dir", str(tmp_path / "w"),
                                 "--cfg-options", option]))


def test_truncated_checkpoint_names_intact_ones_and_changes_nothing(tmp_path):
    import zipfile
    work = tmp_path / "w"
    work.mkdir()
    good, bad = work / "iter_2.pth", work / "iter_4.pth"
    with zipfile.ZipFile(good, "w") as z:
        z.writestr("archive/data.pkl", b"x" * 100)
    bad.write_bytes(good.read_bytes()[:60])  # a save killed midway
    (work / "last_checkpoint").write_text(str(bad))
    before = {p.name: p.read_bytes() for p in work.iterdir()}
    for resume in (["--resume"], ["--resume", str(bad)]):
        with pytest.raises(RuntimeError, match=r"truncated.*iter_2\.pth.*--resume .*iter_2\.pth"):
            build_config(parse_args([TEACHER_CFG, "--work-dir", str(work), *resume]))
    assert {p.name: p.read_bytes() for p in work.iterdir()} == before


def test_export_without_model_index(tmp_path):
    from diffengine_distill.apis.inference import load_pipeline
    export = tmp_path / "step10"
    (export / "unet").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="No export in .*model_index.json"):
        load_pipeline(str(export))


def test_config_asking_for_amp_trains_in_fp32_without_cuda(tmp_path):
    """A GPU recipe (fp16 AmpOptimWrapper) tried on a CPU: plain fp32 wrapper
    of the same kind, AMP-only keys dropped, and a line for the run's log."""
    notes = []
    cfg = build_config(parse_args([
        TEACHER_CFG, "--work-dir", str(tmp_path / "w"), "--cfg-options",
        "optim_wrapper.type=GuardedAmpOptimWrapper", "optim_wrapper.dtype=float16"]), notes)
    assert cfg.optim_wrapper["type"] == "GuardedOptimWrapper"
    assert "dtype" not in cfg.optim_wrapper
    assert cfg.optim_wrapper["optimizer"]["type"] == "AdamW"
    assert any("no CUDA GPU" in note for note in notes)
