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
EXTRA_KEYS = {"model_wrapper_cfg", "compile", "custom_imports", "default_scope",
              "filename", "work_dir", "launcher"}


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
    p.add_argument("--local-rank", "--local_rank", type=int, default=0)
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto",
                   help="mim passes --device cpu when no --gpus is given")
    p.add_argument("--gpus", type=int, default=None, help="accepted from mim; "
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


def build_config(args):
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
    if args.resume == "auto":
        cfg.resume, cfg.load_from = True, None
        latest = osp.join(cfg.work_dir, "last_checkpoint")
        if osp.isfile(latest):
            with open(latest) as f:
                check_checkpoint(f.read().strip())
    elif args.resume:
        if not osp.isfile(args.resume):
            raise FileNotFoundError(f"--resume: checkpoint {args.resume!r} not found.")
        check_checkpoint(args.resume)
        cfg.resume, cfg.load_from = True, args.resume
    if args.amp:
        import torch
        if not torch.cuda.is_available():
            raise RuntimeError("--amp needs a CUDA GPU (mmengine's AmpOptimWrapper); "
                               "drop --amp to train in fp32 on CPU.")
        cfg.optim_wrapper = _amp(cfg.optim_wrapper, torch.cuda.is_bf16_supported())
    return cfg


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
    wrappers = cfg.get("optim_wrapper") or {}
    wrappers = [wrappers] if "optimizer" in wrappers else \
        [w for w in wrappers.values() if isinstance(w, dict)]
    for wrapper in wrappers:
        name = str((wrapper.get("optimizer") or {}).get("type", ""))
        if name.endswith("8bit"):
            try:
                import bitsandbytes  # noqa: F401
            except ImportError as err:
                raise ImportError(
                    f"optimizer type={name!r} is a bitsandbytes optimizer: pip install "
                    "bitsandbytes (or use type='AdamW').") from err


def check_checkpoint(path: str) -> None:
    """A truncated checkpoint (a save killed midway) fails here, not deep in torch.load."""
    import glob
    import zipfile
    if osp.isfile(path) and zipfile.is_zipfile(path):
        return
    others = sorted(glob.glob(osp.join(osp.dirname(path), "iter_*.pth")) +
                    glob.glob(osp.join(osp.dirname(path), "epoch_*.pth")))
    others = [p for p in others if p != path and zipfile.is_zipfile(p)]
    hint = (f" Intact checkpoints there: {', '.join(osp.basename(p) for p in others)}; "
            f"resume from one with --resume {others[-1]}." if others else "")
    raise RuntimeError(f"Checkpoint {path!r} is missing, truncated or not a torch "
                       f"checkpoint (was its save interrupted?).{hint}")


def _amp(optim_wrapper, bf16: bool):
    dtype = "bfloat16" if bf16 else "float16"

    def amp(wrapper):  # keeps the NaN/Inf guard of a GuardedOptimWrapper
        guarded = str(wrapper.get("type", "OptimWrapper")).startswith("Guarded")
        return dict(wrapper, type="GuardedAmpOptimWrapper" if guarded else "AmpOptimWrapper",
                    dtype=dtype)
    if "optimizer" in optim_wrapper:  # a single OptimWrapper
        return amp(optim_wrapper)
    # OptimWrapperDict: one wrapper per network.
    return {k: (amp(v) if isinstance(v, dict) and "optimizer" in v else v)
            for k, v in optim_wrapper.items()}


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


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch touches CUDA
    import diffengine_distill  # noqa: F401  (safe-globals for --resume)
    from mmengine.runner import Runner
    cfg = build_config(args)
    setup_cpu_distributed(cfg)
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


if __name__ == "__main__":
    sys.exit(main() and 0)
