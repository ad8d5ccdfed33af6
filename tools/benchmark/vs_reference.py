"""This project's training steps against the reference implementations, on the
same UNet, batch, precision and optimizer (random weights; nothing is downloaded).

    python tools/benchmark/vs_reference.py --sfd-main /refs/diff-sampler/sfd-main \\
        --dmd2 /refs/DMD2 --unet cifar --device cuda --precision bf16 --batch 128

Each reference runs from its own unmodified checkout, passed by path and put on
``sys.path`` only while it is measured (nothing of it is copied here):

- ``--sfd-main``: a checkout of zju-pi/diff-sampler's ``sfd-main`` folder. Its
  training step lives inside ``training_loop()``; the benchmark calls its loss
  class (``training/loss.py``: ``get_teacher_traj`` and ``__call__``) with the
  UNet wrapped in sfd-main's own ``CFGPrecond`` (its wrapper of discrete-time
  epsilon models), and runs the loop body around it: zero_grad, the per-step
  loss, ``loss.sum() / batch`` backward (none on the AFS step), nan_to_num of
  the gradients, optimizer step. Left out: its per-step loss print (a
  ``.item()`` host sync) and DDP. Compared with the project's ``SFD.train_step``.
- ``--dmd2``: a checkout of tianweiy/DMD2. ``Trainer.train_one_step`` of
  ``main/edm/train_edm.py`` runs unmodified on a Trainer whose ``__init__`` is
  skipped (it loads an EDM pickle, a dataset and wandb): the benchmark sets the
  attributes that method reads (``EDMUniModel`` / ``EDMGuidance`` built the same
  way around this project's UNet, AdamW and constant schedulers as in
  ``__init__``, an ``accelerate.Accelerator``, a real-image iterator of one
  fixed batch). No GAN head, one critic update per generator update, on both
  sides. The UNet is seen through a sigma-space denoiser built from this
  project's diffusion math (DMD2's EDM networks are x0 denoisers of sigma).
  Pixel UNets only: ``train_one_step`` draws 3-channel noise. Compared with the
  project's ``DMD.train_step`` (one-step generator, DM + critic updates).
- ``--diffusers-examples``: diffusers' ``examples/`` folder. Its LCM step exists
  only inside ``main()`` of ``consistency_distillation/train_lcm_distill_sd_wds.py``
  (webdataset, text encoder, VAE, accelerate), with no unit that holds the UNet
  calls, so it is not timed: the path is checked and the result says so.

Reference imports that are missing here and never called by the timed code
(``piq`` for sfd-main's second-stage LPIPS; ``wandb``, ``lmdb``, ``imageio``
imported at the top of DMD2's training script) are stubbed in ``sys.modules``.
The first iteration of both sides starts from the same weights (and, for SFD,
the same noise); its losses and their difference are reported. Writes
``<out>.json`` and ``<out>.md``.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import os.path as osp
import platform
import statistics
import sys
import time
import types

# A UNet small enough for a CPU run (UNet2DModel, 16x16 RGB, 0.7M parameters).
TINY_UNET = dict(
    sample_size=16, in_channels=3, out_channels=3, layers_per_block=1,
    block_out_channels=(32, 64), norm_num_groups=8,
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"))

# What a reference checkout must hold, and what it is.
REFERENCES = {
    "sfd": ("sfd_main", "training/loss.py", "the sfd-main folder of zju-pi/diff-sampler"),
    "dmd2": ("dmd2", "main/edm/train_edm.py", "a checkout of tianweiy/DMD2"),
    "lcm": ("diffusers_examples", "consistency_distillation/train_lcm_distill_sd_wds.py",
            "the examples/ folder of huggingface/diffusers"),
}
LR = 1e-5


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sfd-main", metavar="DIR", help="sfd-main checkout (SFD)")
    p.add_argument("--dmd2", metavar="DIR", help="DMD2 checkout (EDM training step)")
    p.add_argument("--diffusers-examples", metavar="DIR",
                   help="diffusers' examples/ folder (LCM distillation)")
    p.add_argument("--unet", choices=("tiny", "cifar", "sd15"), default="cifar")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--batch", type=int, default=None, help="default: 128 cifar, 16 sd15, 8 tiny")
    p.add_argument("--warmup", type=int, default=2,
                   help="untimed iterations first (the first one gives the losses)")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--out", default=None,
                   help="output stem (default tools/benchmark/results/vs_reference_<unet>_<device>)")
    args = p.parse_args(argv)
    given = {}
    for name, (attr, marker, what) in REFERENCES.items():
        path = getattr(args, attr)
        if path is None:
            continue
        if not osp.isfile(osp.join(path, marker)):
            p.error(f"--{attr.replace('_', '-')} {path}: no {marker} there; expected {what}.")
        given[name] = osp.abspath(path)
    if not given:
        p.error("no reference given: pass at least one of --sfd-main, --dmd2, "
                "--diffusers-examples.")
    if args.warmup < 1 or args.iters < 1:
        p.error("--warmup and --iters must be >= 1 (the first warm-up gives the losses).")
    args.references = given
    return args


# -- shared set-up ---------------------------------------------------------------
def fresh_unet(kind: str):
    """The same random weights on every call (seeded build)."""
    import torch
    from diffusers import UNet2DModel
    from throughput import build_unet
    if kind != "tiny":
        return build_unet(kind)
    torch.manual_seed(0)
    return UNet2DModel(**TINY_UNET)


def unet_channels_and_size(kind: str) -> tuple[int, int]:
    from throughput import CIFAR_UNET, SD15_UNET
    cfg = dict(tiny=TINY_UNET, cifar=CIFAR_UNET, sd15=SD15_UNET)[kind]
    return cfg["in_channels"], cfg["sample_size"]


def scheduler_cfg(kind: str) -> dict:
    from throughput import SCHEDULERS
    return SCHEDULERS["sd15" if kind == "sd15" else "cifar"]


def build_ours(method: str, kind: str, device, **overrides):
    import diffengine_distill.models  # noqa: F401  (registers the models)
    from diffengine_distill.registry import MODELS
    from throughput import METHODS
    cfg = dict(METHODS[method], **overrides, unet=fresh_unet(kind),
               scheduler=scheduler_cfg(kind))
    return MODELS.build(cfg).to(device).train()


def autocast(device, precision: str):
    import torch
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def reference_on_path(root: str, stubs: tuple[str, ...] = ()):
    """Import a reference from its checkout; afterwards drop its modules and the
    stubs again (sfd-main and DMD2 both ship top-level dnnlib / torch_utils)."""
    created = [name for stub in stubs for name in _stub_if_missing(stub)]
    sys.path.insert(0, root)
    try:
        yield
    finally:
        sys.path.remove(root)
        for name, module in list(sys.modules.items()):
            path = getattr(module, "__file__", None) or ""
            if name in created or osp.abspath(path).startswith(root + os.sep):
                del sys.modules[name]


def _stub_if_missing(name: str) -> list[str]:
    """Put an empty module (and its parents) in sys.modules when ``name`` does
    not import; any attribute of it is a function that raises. Returns the
    names it created."""
    try:
        __import__(name)
        return []
    except ImportError:
        pass

    def unavailable(attr):
        if attr.startswith("__"):
            raise AttributeError(attr)

        def call(*args, **kwargs):
            raise RuntimeError(f"{name}.{attr} is a stub of vs_reference.py ({name} is not "
                               "installed); the timed code must not call it.")
        return call
    parts, created = name.split("."), []
    for i in range(1, len(parts) + 1):
        full = ".".join(parts[:i])
        if full in sys.modules:
            continue
        module = types.ModuleType(full)
        module.__getattr__ = unavailable
        module.__path__ = []
        sys.modules[full] = module
        created.append(full)
        if i > 1:
            setattr(sys.modules[".".join(parts[:i - 1])], parts[i - 1], module)
    return created


def sync(device):
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize()


def compare(ours_step, ref_step, device, warmup: int, iters: int):
    """Both sides' first-call outputs (from fresh weights) and median seconds.
    Timed iterations alternate between the sides, so a change of machine load
    hits both alike."""
    firsts = ours_step(), ref_step()
    for _ in range(warmup - 1):
        ours_step()
        ref_step()
    times = ([], [])
    for _ in range(iters):
        for step, seconds in zip((ours_step, ref_step), times):
            sync(device)
            start = time.perf_counter()
            step()
            sync(device)
            seconds.append(time.perf_counter() - start)
    return firsts, tuple(statistics.median(t) for t in times)


def optim_wrapper(model, method: str, precision: str):
    from throughput import optim_wrapper as build
    return build(model, method, precision == "bf16")


def as_float(value) -> float:
    return float(value.detach().float().mean()) if hasattr(value, "detach") else float(value)


# -- SFD ----------------------------------------------------------------------------
def sfd_pair(root: str, kind: str, n: int, device, precision: str, warmup: int, iters: int):
    import torch
    from diffusers import DDPMScheduler
    from torch import nn

    # sfd-main always thresholds the teacher's DPM-Solver++ x0 (dynamic thresholding).
    ours = build_ours("sfd", kind, device, thresholding=True)
    channels, size = unet_channels_and_size(kind)
    gen = torch.Generator().manual_seed(1)
    noise = torch.randn(n, channels, size, size, generator=gen).to(device)
    data = dict(inputs=noise, data_samples=dict(label=[None] * n))
    wrapper = optim_wrapper(ours, "sfd", precision)
    settings = dict(num_steps=ours.num_steps, M=ours.M, afs=ours.afs,
                    sampler_tea=ours.solver["solver"], max_order=ours.solver["max_order"],
                    schedule_type=ours.schedule_type, schedule_rho=ours.schedule_rho,
                    sigma_min=ours.sigma_min, sigma_max=ours.sigma_max)

    alphas_cumprod = DDPMScheduler(**{k: v for k, v in scheduler_cfg(kind).items()
                                      if k != "type"}).alphas_cumprod

    class EpsilonModel(nn.Module):
        """The LDM-model interface sfd-main's CFGPrecond wraps: ``alphas_cumprod``
        and ``apply_model(x, t, cond)`` -> epsilon."""

        def __init__(self, unet):
            super().__init__()
            self.unet = unet
            self.register_buffer("alphas_cumprod", alphas_cumprod.clone(), persistent=False)

        def apply_model(self, x, t, cond=None, step_condition=None):
            return self.unet(x, t).sample

    with reference_on_path(root, stubs=("piq",)):
        from models.networks_edm import CFGPrecond
        from training.loss import loss as SFDLoss

        def wrap(unet):
            return CFGPrecond(EpsilonModel(unet), guidance_type="uncond", guidance_rate=1.0,
                              img_resolution=size, img_channels=channels, label_dim=0).to(device)
        student = wrap(fresh_unet(kind)).train().requires_grad_(True)
        teacher = copy.deepcopy(student).eval()
        loss_fn = SFDLoss(**settings, predict_x0=True, lower_order_final=True,
                          use_step_condition=False, model_source="ldm", is_second_stage=False)
        optimizer = torch.optim.AdamW(student.parameters(), lr=LR)

        def reference_step():
            # training_loop()'s body for one process and one accumulation round.
            latents = loss_fn.sigma_max * noise
            with torch.no_grad(), autocast(device, precision):
                trajectory = loss_fn.get_teacher_traj(net=teacher, tensor_in=latents)
            losses = []
            for step_idx in range(loss_fn.num_steps - 1):
                optimizer.zero_grad(set_to_none=True)
                with autocast(device, precision):
                    loss, latents = loss_fn(net=student, tensor_in=latents, step_idx=step_idx,
                                            teacher_out=trajectory[step_idx])
                if not (loss_fn.afs and step_idx == 0):
                    loss.sum().mul(1 / n).backward()
                    losses.append(loss.detach().float().sum() / n)
                    for param in student.parameters():
                        if param.grad is not None:
                            torch.nan_to_num(param.grad, nan=0, posinf=1e5, neginf=-1e5,
                                             out=param.grad)
                    optimizer.step()
            return torch.stack(losses).mean()
        (first, ref_first), (ours_s, ref_s) = compare(
            lambda: ours.train_step(data, wrapper), reference_step, device, warmup, iters)
    return dict(reference="sfd-main", ours_step="SFD.train_step",
                setting=(f"num_steps={settings['num_steps']} (AFS {settings['afs']}), "
                         f"M={settings['M']}, teacher {settings['sampler_tea']}"),
                ours_s_per_it=ours_s, ref_s_per_it=ref_s,
                losses=dict(loss=(as_float(first["loss"]), as_float(ref_first))))


# -- DMD2 (EDM) ---------------------------------------------------------------------
def dmd2_pair(root: str, kind: str, n: int, device, precision: str, warmup: int, iters: int):
    import torch
    from torch import nn
    channels, size = unet_channels_and_size(kind)
    if channels != 3:
        return dict(reference="DMD2 (EDM)", skipped="DMD2's EDM train_one_step draws 3-channel "
                    "noise (pixel UNets only); use --unet tiny or cifar.")

    ours = build_ours("dmd", kind, device)
    images = torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(1))
    data = dict(inputs=(images * 2 - 1).to(device), data_samples=dict(label=[None] * n))
    wrapper = optim_wrapper(ours, "dmd", precision)
    schedule = ours.noise_schedule
    prediction_type = ours.prediction_type
    sigma_lo, sigma_hi = schedule.sigma_range()

    from diffengine_distill.diffusion import denoised, model_input

    class SigmaDenoiser(nn.Module):
        """D(x; sigma, labels) of the UNet, the call of DMD2's EDM networks
        (class labels ignored: the UNet is unconditional)."""

        def __init__(self, unet):
            super().__init__()
            self.unet = unet

        def forward(self, x, sigma, labels=None, return_bottleneck=False):
            sigma = sigma.reshape(-1).expand(x.shape[0])
            t = schedule.timestep(sigma).float().to(x.device)
            return denoised(self.unet(model_input(x, sigma), t).sample, x, sigma,
                            prediction_type)

    stubs = ("wandb", "lmdb", "imageio", "imageio.v2")
    with reference_on_path(root, stubs=stubs):
        from accelerate import Accelerator
        from diffusers.optimization import get_scheduler
        from main.edm.edm_guidance import EDMGuidance, get_sigmas_karras
        from main.edm.edm_unified_model import EDMUniModel
        from main.edm.train_edm import Trainer

        # DMD2's defaults, with the sigma interval inside this UNet's schedule.
        # (sigma_min a hair above the UNet's lowest sigma: the float32 Karras grid rounds.)
        sigma_min, sigma_max = max(0.002, sigma_lo * (1 + 1e-5)), min(80.0, sigma_hi)
        accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision="no")
        guidance = EDMGuidance.__new__(EDMGuidance)
        nn.Module.__init__(guidance)
        guidance.real_unet = SigmaDenoiser(fresh_unet(kind)).to(device).requires_grad_(False)
        guidance.fake_unet = copy.deepcopy(guidance.real_unet).requires_grad_(True)
        guidance.__dict__.update(
            accelerator=accelerator, sigma_data=0.5, sigma_max=sigma_max, sigma_min=sigma_min,
            rho=7.0, gan_classifier=False, diffusion_gan=False, diffusion_gan_max_timestep=0,
            num_train_timesteps=1000, min_step=int(0.02 * 1000), max_step=int(0.98 * 1000))
        guidance.register_buffer("karras_sigmas", torch.flip(get_sigmas_karras(
            1000, sigma_max=sigma_max, sigma_min=sigma_min, rho=7.0), dims=[0]).to(device))
        model = EDMUniModel.__new__(EDMUniModel)
        nn.Module.__init__(model)
        model.guidance_model = guidance
        model.feedforward_model = copy.deepcopy(guidance.fake_unet).requires_grad_(True)
        model.__dict__.update(guidance_min_step=guidance.min_step,
                              guidance_max_step=guidance.max_step, accelerator=accelerator,
                              num_train_timesteps=1000)

        def adamw(module):
            return torch.optim.AdamW([p for p in module.parameters() if p.requires_grad],
                                     lr=LR, betas=(0.9, 0.999), weight_decay=0.01)
        trainer = Trainer.__new__(Trainer)
        trainer.__dict__.update(
            model=model, accelerator=accelerator, batch_size=n, resolution=size,
            conditioning_sigma=sigma_max, label_dim=1, dfake_gen_update_ratio=1,
            gan_classifier=False, cls_loss_weight=1.0, gen_cls_loss_weight=0.0,
            max_grad_norm=10, step=1, wandb_iters=10 ** 9,  # step % wandb_iters != 0: no logging
            eye_matrix=torch.eye(1, device=device),
            real_image_dataloader=iter(lambda: dict(
                images=images.to(device), class_labels=torch.zeros(n, 1, dtype=torch.long,
                                                                   device=device)), None))
        trainer.optimizer_generator = adamw(model.feedforward_model)
        trainer.optimizer_guidance = adamw(guidance)
        trainer.scheduler_generator = get_scheduler(
            "constant_with_warmup", optimizer=trainer.optimizer_generator, num_warmup_steps=0)
        trainer.scheduler_guidance = get_scheduler(
            "constant_with_warmup", optimizer=trainer.optimizer_guidance, num_warmup_steps=0)

        # train_one_step keeps its losses to itself: read them off the guidance model's calls.
        seen = {}
        hook = guidance.register_forward_hook(
            lambda module, args, output: seen.update(output[0]))

        def reference_step():
            seen.clear()
            with autocast(device, precision):
                Trainer.train_one_step(trainer)
            return dict(seen)
        (first, ref_first), (ours_s, ref_s) = compare(
            lambda: ours.train_step(data, wrapper), reference_step, device, warmup, iters)
        hook.remove()
    ours_losses = {k: as_float(v) for k, v in first.items()}
    return dict(reference="DMD2 (EDM)", ours_step="DMD.train_step",
                setting="one-step generator, DM + critic update per iteration, no GAN",
                ours_s_per_it=ours_s, ref_s_per_it=ref_s,
                losses=dict(loss_dm=(ours_losses["loss_dm"], as_float(ref_first["loss_dm"])),
                            critic=(ours_losses["loss_critic"],
                                    as_float(ref_first["loss_fake_mean"]))),
                different_definitions=["critic"],
                note="critic losses differ by definition: the project's is the teacher's "
                     "epsilon-MSE at DDPM timesteps, DMD2's the Karras-weighted x0-MSE at "
                     "Karras sigmas; the DM loss is 0 on both at the first iteration (fake "
                     "score = teacher).")


def lcm_pair(root: str, *args):
    return dict(reference="diffusers LCM (SD)",
                skipped="not timed: train_lcm_distill_sd_wds.py runs its step only inside "
                        "main() (webdataset, text encoder, VAE, accelerate); no unmodified "
                        "unit of it holds the UNet calls.")


def _free(device):
    import gc

    import torch
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


PAIRS = dict(sfd=sfd_pair, dmd2=dmd2_pair, lcm=lcm_pair)


# -- output ---------------------------------------------------------------------------
def finish_row(row: dict, precision: str) -> dict:
    if "skipped" in row or "error" in row:
        return row
    row["ratio"] = row["ref_s_per_it"] / row["ours_s_per_it"]
    tol = 2e-2 if precision == "bf16" else 1e-4  # relative, or absolute near 0
    for name, (ours, ref) in row["losses"].items():
        diff = abs(ours - ref)
        same = None if name in row.get("different_definitions", ()) else \
            diff <= tol * max(abs(ref), 1.0)
        row["losses"][name] = dict(ours=ours, reference=ref, abs_diff=diff,
                                   rel_diff=diff / max(abs(ref), 1e-12), within_tolerance=same)
    return row


def markdown(result: dict) -> str:
    lines = [f"# This project vs the reference implementations ({result['hardware']})", "",
             f"torch {result['torch']}, UNet `{result['unet']}`, batch {result['batch']}, "
             f"{result['precision']}, median of {result['iters']} iterations after "
             f"{result['warmup']} warm-up; `{result['command']}`", "",
             "| reference | setting | reference s/it | ours s/it | ratio (ref / ours) | "
             "first-iteration losses: ours / reference / abs diff |",
             "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if "skipped" in r or "error" in r:
            lines.append(f"| {r['reference']} | {r.get('skipped') or r['error']} | | | | |")
            continue
        verdict = {True: "equal", False: "DIFFERENT", None: "not comparable"}
        losses = "; ".join(f"{k}: {v['ours']:.6g} / {v['reference']:.6g} / {v['abs_diff']:.2g} "
                           f"({verdict[v['within_tolerance']]})" for k, v in r["losses"].items())
        lines.append(f"| {r['reference']} | {r['setting']} | {r['ref_s_per_it']:.4f} | "
                     f"{r['ours_s_per_it']:.4f} | {r['ratio']:.2f} | {losses} |")
    notes = [r["note"] for r in result["rows"] if r.get("note")]
    if notes:
        lines += [""] + [f"- {r['reference']}: {r['note']}" for r in result["rows"]
                         if r.get("note")]
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    import torch
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.precision == "bf16" and device.type != "cuda":
        sys.exit("vs_reference.py: error: --precision bf16 needs a CUDA device (the project's "
                 "side trains under mmengine's AmpOptimWrapper, which is GPU-only).")
    if device.type == "cuda":  # the same flags for both sides
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    n = args.batch or dict(tiny=8, cifar=128, sd15=16)[args.unet]
    hardware = (torch.cuda.get_device_name(device) if device.type == "cuda"
                else f"CPU {platform.processor() or platform.machine()}, "
                     f"{torch.get_num_threads()} threads")
    result = dict(hardware=hardware, torch=torch.__version__, unet=args.unet, batch=n,
                  precision=args.precision, warmup=args.warmup, iters=args.iters,
                  command="python tools/benchmark/vs_reference.py "
                  + " ".join(argv if argv is not None else sys.argv[1:]), rows=[])
    out = args.out or osp.join("tools/benchmark/results",
                               f"vs_reference_{args.unet}_{device.type}")
    os.makedirs(osp.dirname(out) or ".", exist_ok=True)
    for name, root in args.references.items():
        try:
            row = PAIRS[name](root, args.unet, n, device, args.precision, args.warmup,
                              args.iters)
        except Exception as err:  # noqa: BLE001 (a reference that fails is a result)
            row = dict(reference=name, error=f"{type(err).__name__}: {err}")
        _free(device)  # the pair's models are gone with its frame
        row = finish_row(row, args.precision)
        print(json.dumps(row), flush=True)
        result["rows"].append(row)
        _write(result, out)
    print(markdown(result))


def _write(result, out):
    from throughput import write_results
    write_results(result, out, markdown)


if __name__ == "__main__":
    main()
