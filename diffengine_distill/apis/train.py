"""The logic of ``tools/train.py`` (kept in the package so every install,
editable or wheel, and ``mim train`` run the same code)."""
from __future__ import annotations

import argparse
import difflib
import inspect
import os
import os.path as osp
import sys

# Keys mmengine reads from a config besides Runner's arguments.
# Set by tools/train.py, which hides bitsandbytes unless a config needs it.
BITSANDBYTES_HIDDEN = False
EXTRA_KEYS = {"model_wrapper_cfg", "compile", "custom_imports", "default_scope",
              "filename", "work_dir", "launcher", "strategy"}


def _count(least: int):
    """An argparse type: an integer >= ``least``."""
    def count(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < least:
            raise argparse.ArgumentTypeError(f"expected an integer >= {least}, got {text!r}")
        return value
    return count


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Train / distil a diffusion model.")
    p.add_argument("config", help="config file path")
    p.add_argument("--work-dir", help="where logs, checkpoints and exports go "
                   "(default: ./work_dirs/<config name>)")
    p.add_argument("--resume", nargs="?", type=str, const="auto",
                   help="resume from the latest checkpoint in the work dir, or "
                   "from the given checkpoint path")
    p.add_argument("--amp", action="store_true",
                   help="bf16 (fp16 where bf16 is unsupported) mixed precision; needs CUDA")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override config entries, e.g. train_cfg.max_iters=100")
    p.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"],
                   default="none")
    p.add_argument("--local-rank", "--local_rank", type=_count(0), default=0)
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto",
                   help="mim passes --device cpu when no --gpus is given")
    p.add_argument("--gpus", type=_count(1), default=None, help="accepted from mim; "
                   "use --launcher pytorch for several processes")
    return p.parse_args(argv)


def check_top_level_keys(cfg) -> None:
    """mmengine ignores unknown top-level keys: flag the ones that look like typos."""
    from mmengine.runner import Runner
    known = set(inspect.signature(Runner.__init__).parameters) | EXTRA_KEYS
    for key in cfg.keys():
        if key in known:
            continue
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
        if close:
            raise KeyError(f"Config key {key!r} is not used by anything; did you mean "
                           f"{close[0]!r}? Rename it in {cfg.filename}.")


def build_config(args, notes: list | None = None):
    """The Runner config; lines for the run's log (what ``--resume`` chose) go to ``notes``."""
    from mmengine.config import Config, DictAction
    if not osp.isfile(args.config):
        raise FileNotFoundError(f"Config file {args.config!r} does not exist.")
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        parser = argparse.ArgumentParser()
        parser.add_argument("--o", nargs="+", action=DictAction)
        cfg.merge_from_dict(parser.parse_args(["--o", *args.cfg_options]).o)
    check_top_level_keys(cfg)
    cfg.launcher = args.launcher
    cfg.work_dir = args.work_dir or cfg.get("work_dir") or osp.join(
        "work_dirs", osp.splitext(osp.basename(args.config))[0])
    if osp.isfile(cfg.work_dir):
        raise NotADirectoryError(f"work dir {cfg.work_dir!r} is a file; pass "
                                 "--work-dir with a directory path.")
    check_train_cfg(cfg)
    check_optimizers(cfg)
    if args.resume:
        path, note = resume_checkpoint(cfg.work_dir, args.resume)
        if path is not None:  # else the config's own load_from (if any) still applies
            cfg.resume, cfg.load_from = True, path
        if notes is not None and note:
            notes.append(note)
    if args.amp:
        import torch
        if not torch.cuda.is_available():
            raise RuntimeError("--amp needs a CUDA GPU (mmengine's AmpOptimWrapper); "
                               "drop --amp to train in fp32 on CPU.")
        cfg.optim_wrapper = _amp(cfg.optim_wrapper, torch.cuda.is_bf16_supported())
    elif _uses_amp(cfg.get("optim_wrapper") or {}):
        import torch
        if not torch.cuda.is_available():  # e.g. a GPU recipe tried on a laptop
            cfg.optim_wrapper = _without_amp(cfg.optim_wrapper)
            if notes is not None:
                notes.append("The config asks for mixed precision (AmpOptimWrapper) but no "
                             "CUDA GPU is available: training in fp32.")
    return cfg


def _wrappers(optim_wrapper) -> list:
    """The OptimWrapper configs of a single wrapper or an OptimWrapperDict."""
    if "optimizer" in optim_wrapper:
        return [optim_wrapper]
    return [v for v in optim_wrapper.values() if isinstance(v, dict) and "optimizer" in v]


def _uses_amp(optim_wrapper) -> bool:
    return any("Amp" in str(w.get("type", "")) for w in _wrappers(optim_wrapper))


def _map_wrappers(optim_wrapper, change):
    """``change`` applied to each OptimWrapper config (a single wrapper, or
    the per-network wrappers of an OptimWrapperDict)."""
    if "optimizer" in optim_wrapper:
        return change(optim_wrapper)
    return {k: (change(v) if isinstance(v, dict) and "optimizer" in v else v)
            for k, v in optim_wrapper.items()}


def _without_amp(optim_wrapper):
    def fp32(wrapper):
        if "Amp" not in str(wrapper.get("type", "")):
            return wrapper
        amp_only = ("dtype", "loss_scale", "use_fsdp")
        return dict({k: v for k, v in wrapper.items() if k not in amp_only},
                    type=str(wrapper["type"]).replace("Amp", ""))
    return _map_wrappers(optim_wrapper, fp32)


def check_train_cfg(cfg) -> None:
    """Counts must be positive integers (mmengine would loop oddly or fail deep inside)."""
    train_cfg = cfg.get("train_cfg") or {}
    loader = cfg.get("train_dataloader") or {}
    for key, value in [(f"train_cfg.{k}", train_cfg.get(k)) for k in
                       ("max_iters", "max_epochs", "val_interval")] + \
            [("train_dataloader.batch_size", loader.get("batch_size"))]:
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r} "
                             f"(check {cfg.filename} and --cfg-options).")


def check_optimizers(cfg) -> None:
    """bitsandbytes' 8-bit optimizers (e.g. ``AdamW8bit``) exist only when it is
    installed; say so instead of mmengine's bare "not in the registry"."""
    for wrapper in _wrappers(cfg.get("optim_wrapper") or {}):
        name = str((wrapper.get("optimizer") or {}).get("type", ""))
        if name.endswith("8bit"):
            if BITSANDBYTES_HIDDEN and sys.modules.get("bitsandbytes", 0) is None:
                del sys.modules["bitsandbytes"]
            try:
                import bitsandbytes  # noqa: F401
            except ImportError as err:
                raise ImportError(
                    f"optimizer type={name!r} is a bitsandbytes optimizer: pip install "
                    "bitsandbytes (or use type='AdamW').") from err
            from mmengine.optim.optimizer.builder import register_bitsandbytes_optimizers
            from mmengine.registry import OPTIMIZERS
            if name not in OPTIMIZERS:  # mmengine was imported while it was hidden
                register_bitsandbytes_optimizers()


def checkpoint_intact(path: str) -> bool:
    """A complete torch zip whose every record matches its CRC: catches a
    truncated save and a flipped bit, both of which torch.load may miss."""
    import zipfile
    try:
        with zipfile.ZipFile(path) as z:
            return z.testzip() is None
    except (OSError, zipfile.BadZipFile):
        return False


def checkpoints_in(work_dir: str) -> list[str]:
    """``iter_*.pth`` / ``epoch_*.pth`` in ``work_dir``, newest (highest count) first."""
    import glob
    import re
    found = glob.glob(osp.join(work_dir, "iter_*.pth")) + \
        glob.glob(osp.join(work_dir, "epoch_*.pth"))
    return sorted(found, key=lambda p: int(re.findall(r"\d+", osp.basename(p))[0]),
                  reverse=True)


def check_checkpoint(path: str, work_dir: str | None = None) -> None:
    """A truncated or corrupt checkpoint fails here, not deep in torch.load."""
    if osp.isfile(path) and checkpoint_intact(path):
        return
    others = [p for p in checkpoints_in(work_dir or osp.dirname(path))
              if osp.abspath(p) != osp.abspath(path) and checkpoint_intact(p)]
    hint = (f" Intact checkpoints there: {', '.join(osp.basename(p) for p in others)}; "
            f"resume from one with --resume {others[0]}." if others else
            " No intact checkpoint is there.")
    raise RuntimeError(f"Checkpoint {path!r} is missing, truncated or corrupt (was its "
                       f"save interrupted?).{hint}")


def resume_checkpoint(work_dir: str, resume: str) -> tuple[str | None, str | None]:
    """(checkpoint to resume, a line for the log) for ``--resume [PATH]``.

    An explicit PATH must exist and be intact. Plain ``--resume`` takes the
    work dir's ``last_checkpoint``; when that is missing, empty or names a
    missing file (a run killed around a save), the newest intact
    ``iter_*.pth``; with none, training starts from scratch (mmengine's
    auto-resume convention, so requeued jobs can always pass ``--resume``).
    """
    if resume != "auto":
        if not osp.isfile(resume):
            raise FileNotFoundError(f"--resume: checkpoint {resume!r} not found.")
        check_checkpoint(resume)
        return resume, None
    latest, named = osp.join(work_dir, "last_checkpoint"), ""
    if osp.isfile(latest):
        with open(latest) as f:
            named = f.read().strip()
        if named and osp.isfile(named):
            check_checkpoint(named, work_dir)
            return named, None
    candidates = checkpoints_in(work_dir)
    newest = next((p for p in candidates if checkpoint_intact(p)), None)
    if newest is None and candidates:
        check_checkpoint(candidates[0], work_dir)  # raises: nothing intact to resume
    why = (f"{latest} names {named!r}, which does not exist" if named else
           f"{latest} is empty" if osp.isfile(latest) else f"there is no {latest}")
    if newest is None:
        return None, f"--resume: no checkpoint in {work_dir}; starting from scratch."
    return newest, f"--resume: {why}; resuming from the newest intact checkpoint {newest}."


def check_model_matches(model, path: str) -> None:
    """Resume loads weights with strict=False (mmengine): a checkpoint of another
    model (say another UNet width) would load partially and train on. Refuse it."""
    import torch
    from mmengine.model import is_model_wrapper
    saved = torch.load(path, map_location="cpu", mmap=True, weights_only=True)["state_dict"]
    # The keys mmengine saves (state_dict hooks drop frozen parts and DDP prefixes).
    own = (model.module if is_model_wrapper(model) else model).state_dict()
    for key, value in own.items():
        if key in saved and tuple(saved[key].shape) != tuple(value.shape):
            raise RuntimeError(
                f"--resume: {path} does not match the config's model: {key} is "
                f"{tuple(saved[key].shape)} in the checkpoint but {tuple(value.shape)} in "
                "the model. Resume with the config that wrote it, or start a new work dir.")
    missing = [k for k in own if k not in saved]
    extra = [k for k in saved if k not in own]
    if missing or extra:
        first = (f"the model's {missing[0]} is not in the checkpoint" if missing else
                 f"the checkpoint's {extra[0]} is not in the model")
        raise RuntimeError(
            f"--resume: {path} does not match the config's model: {first} "
            f"({len(missing)} missing, {len(extra)} unexpected). Resume with the config that "
            "wrote it, or start a new work dir.")


def _amp(optim_wrapper, bf16: bool):
    dtype = "bfloat16" if bf16 else "float16"

    def amp(wrapper):  # keeps the NaN/Inf guard of a GuardedOptimWrapper
        guarded = str(wrapper.get("type", "OptimWrapper")).startswith("Guarded")
        return dict(wrapper, type="GuardedAmpOptimWrapper" if guarded else "AmpOptimWrapper",
                    dtype=dtype)
    return _map_wrappers(optim_wrapper, amp)


def setup_cpu_distributed(cfg) -> None:
    """mmengine's pytorch launcher calls torch.cuda.set_device; on CPU start
    gloo ourselves first (the Runner then skips its own init) and wrap the
    model without device ids."""
    import torch
    import torch.distributed as dist
    if cfg.launcher == "none" or torch.cuda.is_available() or dist.is_initialized():
        return
    if cfg.launcher == "slurm":
        slurm_environment()
    dist.init_process_group(backend="gloo")
    cfg.env_cfg = dict(cfg.get("env_cfg", {}), dist_cfg=dict(backend="gloo"))
    wrapper = dict(cfg.get("model_wrapper_cfg") or dict(type="MMDistributedDataParallel"))
    cfg.model_wrapper_cfg = dict(wrapper, device_ids=None)


def slurm_environment() -> None:
    """torch.distributed's variables from srun's, as mmengine's slurm launcher
    sets them (it also picks a CUDA device, which a CPU run has none of)."""
    import subprocess
    nodes = os.environ["SLURM_NODELIST"]
    addr = subprocess.getoutput(f"scontrol show hostname {nodes} | head -n1").strip()
    os.environ.setdefault("MASTER_ADDR", addr or "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")
    os.environ["WORLD_SIZE"] = os.environ["SLURM_NTASKS"]
    os.environ["RANK"] = os.environ["SLURM_PROCID"]
    os.environ["LOCAL_RANK"] = os.environ.get("SLURM_LOCALID", "0")


def atomic_runner():
    """mmengine's Runner, with checkpoints written to ``<name>.tmp`` then renamed:
    a run killed mid-save never leaves a half-written ``iter_*.pth``, and a
    failed write (disk full) says so and leaves the previous checkpoints as they were."""
    from mmengine.dist import is_main_process
    from mmengine.runner import Runner

    class AtomicCheckpointRunner(Runner):
        def save_checkpoint(self, out_dir, filename, *args, **kwargs):
            if not is_main_process() or "://" in str(out_dir):  # object stores: as is
                return super().save_checkpoint(out_dir, filename, *args, **kwargs)
            final = osp.join(out_dir, filename)
            tmp = final + ".tmp"
            try:
                super().save_checkpoint(out_dir, filename + ".tmp", *args, **kwargs)
                with open(tmp, "rb") as f:
                    os.fsync(f.fileno())  # on disk before the rename makes it visible
            except OSError as err:
                if osp.exists(tmp):
                    os.remove(tmp)
                kept = [osp.basename(p) for p in checkpoints_in(out_dir)]
                raise OSError(err.errno, f"Could not write checkpoint {final} "
                              f"({err.strerror or err}); the previous checkpoints are "
                              f"untouched ({', '.join(kept) or 'none yet'}). Free disk "
                              "space, then --resume.") from err
            os.replace(tmp, final)

    return AtomicCheckpointRunner


def sharded_runner(cfg):
    """mmengine's FlexibleRunner for a config with a ``strategy`` (e.g.
    ``dict(type="FullyShardStrategy")``): the strategy builds, wraps, saves
    and resumes the model."""
    from mmengine.registry import DefaultScope
    from mmengine.runner import FlexibleRunner
    hooks = [str(h.get("type", "")) for h in cfg.get("custom_hooks") or []]
    if any(h.endswith("EMAHook") for h in hooks):
        raise ValueError("EMAHook cannot average sharded weights: drop the EMAHook from "
                         "custom_hooks or the strategy from the config.")
    # FlexibleRunner builds the strategy before it enters the config's scope:
    # enter it first, so type="FullyShardStrategy" resolves in our registry.
    DefaultScope.get_instance("diffengine_distill.train",
                              scope_name=cfg.get("default_scope") or "mmengine")
    return FlexibleRunner.from_cfg(cfg)


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch touches CUDA
    import diffengine_distill.registry  # noqa: F401  (safe-globals for --resume)
    notes = []
    cfg = build_config(args, notes)
    setup_cpu_distributed(cfg)
    if cfg.get("strategy"):  # sharded training; the strategy checks what it resumes
        runner = sharded_runner(cfg)
    else:
        runner = atomic_runner().from_cfg(cfg)
        if cfg.resume and cfg.load_from:
            check_model_matches(runner.model, cfg.load_from)
    for note in notes:
        runner.logger.info(note)
    from mmengine.model import is_model_wrapper
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    if hasattr(model, "compile_networks") and model.compile_networks():
        runner.logger.info(f"torch.compile {model.compile_options}: the first iterations "
                           "compile the UNets")
    runner.train()
    return runner


if __name__ == "__main__":
    sys.exit(main() and 0)
