"""Training and sampling speed of every method on full-size UNets (random
weights, built from config; nothing is downloaded).

    python tools/benchmark/throughput.py --unet cifar --device cuda
    python tools/benchmark/throughput.py --unet sd15 --device cuda --batch 16

Each method's own ``train_step`` runs on synthetic batches: the teacher's
diffusion loss, one PD step (two teacher DDIM steps + a student step), one SFD
batch (teacher DPM-Solver++ trajectory + its student updates) and one DMD
iteration (generator + critic updates). The SD1.5-shaped UNet sees fixed text
embeddings (the cached-embedding setting: no text encoder or VAE in the step).
Writes ``<out>.json`` and ``<out>.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import platform
import statistics
import time

CIFAR_UNET = dict(  # google/ddpm-cifar10-32's architecture (35.7M parameters)
    sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
    block_out_channels=(128, 256, 256, 256),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"))
SD15_UNET = dict(  # stable-diffusion-v1-5/stable-diffusion-v1-5's UNet (859.5M parameters)
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768,
    attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
SCHEDULERS = dict(
    cifar=dict(type="DDPMScheduler", num_train_timesteps=1000, beta_schedule="linear"),
    sd15=dict(type="DDPMScheduler", num_train_timesteps=1000, beta_schedule="scaled_linear",
              beta_start=0.00085, beta_end=0.012))


def build_unet(kind: str):
    import torch  # here, not at the top: --help must not load torch
    from diffusers import UNet2DConditionModel, UNet2DModel
    from torch import nn

    class TextConditioned(nn.Module):
        """An SD UNet that takes ``unet(z, t)``: fixed (cached) text embeddings."""

        def __init__(self, unet, tokens: int = 77):
            super().__init__()
            self.unet = unet
            self.config = unet.config
            self.register_buffer(
                "context", torch.randn(1, tokens, unet.config.cross_attention_dim),
                persistent=False)

        @property
        def dtype(self):
            return self.unet.dtype

        def forward(self, z, t, **kwargs):
            return self.unet(z, t, encoder_hidden_states=self.context.expand(z.shape[0], -1, -1)
                             .to(z.dtype), **kwargs)

    torch.manual_seed(0)
    if kind == "cifar":
        return UNet2DModel(**CIFAR_UNET)
    return TextConditioned(UNet2DConditionModel(**SD15_UNET))


METHODS = {
    "teacher": dict(type="DiffusionModel", prediction_type="epsilon"),
    "pd": dict(type="ProgressiveDistillation", prediction_type="epsilon", teacher_steps=8),
    "sfd": dict(type="SFD", prediction_type="epsilon", num_steps=4, M=3, thresholding=False),
    "dmd": dict(type="DMD", prediction_type="epsilon", regression_weight=0.0,
                critic_updates_per_generator=1),
}


def build_model(method: str, kind: str, device):
    from diffengine_distill.registry import MODELS
    import diffengine_distill.models  # noqa: F401  (registers the models)
    cfg = dict(METHODS[method], unet=build_unet(kind), scheduler=SCHEDULERS[kind])
    return MODELS.build(cfg).to(device)


def optim_wrapper(model, method: str, amp: bool):
    from diffengine_distill.engine.optimizers import PerModuleOptimWrapperConstructor
    wrapper = dict(type="AmpOptimWrapper", dtype="bfloat16") if amp else dict(type="OptimWrapper")
    one = dict(wrapper, optimizer=dict(type="AdamW", lr=1e-5))
    if method == "dmd":
        return PerModuleOptimWrapperConstructor(dict(generator=one, critic=one))(model)
    from mmengine.optim import build_optim_wrapper
    return build_optim_wrapper(model, one)


def unets(model):
    return [m for m in model.modules() if type(m).__name__ in ("UNet2DModel",
                                                                "UNet2DConditionModel")]


def batch(kind: str, method: str, n: int, device):
    import torch
    cfg = CIFAR_UNET if kind == "cifar" else SD15_UNET
    shape = (n, cfg["in_channels"], cfg["sample_size"], cfg["sample_size"])
    inputs = torch.randn(shape, device=device).clamp(-1, 1)
    return dict(inputs=inputs, data_samples=dict(label=[None] * n))


def sync(device):
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(step, device, warmup: int, iters: int) -> list[float]:
    for _ in range(warmup):
        step()
    sync(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def measure_training(method, kind, mode, n, device, warmup, iters) -> dict:
    import torch
    amp, compile_, channels_last = "bf16" in mode, "compile" in mode, "channels_last" in mode
    model = build_model(method, kind, device).train()
    if "checkpointing" in mode:
        unets(model)[0].enable_gradient_checkpointing()  # the trained UNet (built first)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile_:
        for unet in unets(model):
            unet.compile()
    wrapper = optim_wrapper(model, method, amp)
    data = batch(kind, method, n, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = time_steps(lambda: model.train_step(data, wrapper), device, warmup, iters)
    med = statistics.median(times)
    row = dict(method=method, unet=kind, mode=mode, batch=n, s_per_it=med,
               it_per_s=1 / med, img_per_s=n / med, warmup=warmup, iters=iters)
    if device.type == "cuda":
        row["peak_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    del model, wrapper
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def measure_sampling(kind, n, device, warmup, iters) -> list[dict]:
    import torch
    """Images/s of exported samplers vs the UNet forward floor (bf16 weights)."""
    from diffusers import DDIMScheduler, LCMScheduler
    from diffengine_distill import SamplerPipeline
    from diffengine_distill.schedulers import SFDScheduler
    unet = build_unet(kind).to(device, torch.bfloat16).eval()
    base = dict(num_train_timesteps=1000, beta_schedule="linear")
    z = torch.randn(n, 3, 32, 32, device=device, dtype=torch.bfloat16)
    t = torch.full((n,), 500, device=device)
    with torch.no_grad():
        fwd = statistics.median(time_steps(lambda: unet(z, t), device, warmup, iters))
    samplers = [
        ("teacher DDIM", 50, DDIMScheduler(**base, timestep_spacing="trailing")),
        ("PD / DMD one step (DDIM trailing)", 1, DDIMScheduler(**base, timestep_spacing="trailing")),
        ("PD 4 steps (DDIM trailing)", 4, DDIMScheduler(**base, timestep_spacing="trailing")),
        ("DMD2 4 steps (LCM)", 4, LCMScheduler(**base, original_inference_steps=4)),
        ("SFD 2 NFE (AFS)", 2, SFDScheduler(**base, num_steps=4, afs=True, sigma_min=0.01,
                                            sigma_max=80.0)),
    ]
    rows = [dict(sampler="UNet forward alone", nfe=1, batch=n, s_per_batch=fwd,
                 img_per_s=n / fwd, floor_ratio=1.0)]
    for name, steps, scheduler in samplers:
        pipe = SamplerPipeline(unet=unet, scheduler=scheduler)
        pipe.set_progress_bar_config(disable=True)

        def call():
            with torch.no_grad():
                pipe(batch_size=n, num_inference_steps=steps, output_type="pt")
        med = statistics.median(time_steps(call, device, 1, max(3, iters // 4)))
        nfe = steps
        rows.append(dict(sampler=name, nfe=nfe, batch=n, s_per_batch=med, img_per_s=n / med,
                         floor_ratio=med / (nfe * fwd)))
    return rows


def markdown(result: dict) -> str:
    lines = [f"# Throughput ({result['hardware']})", "",
             f"torch {result['torch']}, median of {result['iters']} iterations after "
             f"{result['warmup']} warm-up; `{result['command']}`", "",
             "| UNet | method | mode | batch | s/it | it/s | img/s | peak GiB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["training"]:
        if "error" in r:
            lines.append(f"| {r['unet']} | {r['method']} | {r['mode']} | {r['batch']} | "
                         f"failed: {r['error'][:60]} | | | |")
            continue
        lines.append(f"| {r['unet']} | {r['method']} | {r['mode']} | {r['batch']} | "
                     f"{r['s_per_it']:.4f} | {r['it_per_s']:.2f} | {r['img_per_s']:.0f} | "
                     f"{r.get('peak_gib', float('nan')):.1f} |")
    if result.get("sampling"):
        lines += ["", "Sampling (bf16 weights, CIFAR-shaped UNet):", "",
                  "| sampler | NFE | batch | s/batch | img/s | time / (NFE x forward) |",
                  "|---|---|---|---|---|---|"]
        for r in result["sampling"]:
            lines.append(f"| {r['sampler']} | {r['nfe']} | {r['batch']} | {r['s_per_batch']:.4f}"
                         f" | {r['img_per_s']:.0f} | {r['floor_ratio']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--unet", choices=("cifar", "sd15"), default="cifar")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--batch", type=int, default=None, help="default: 128 cifar, 16 sd15")
    p.add_argument("--methods", default="teacher,pd,sfd,dmd")
    p.add_argument("--modes", default=None,
                   help="comma list of fp32, bf16, bf16+channels_last, bf16+compile, "
                   "bf16+checkpointing "
                   "(default: all on CUDA, fp32 on CPU)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--sampling", action="store_true", help="also time exported samplers")
    p.add_argument("--out", default=None,
                   help="output stem (default tools/benchmark/results/throughput_<unet>_<device>)")
    args = p.parse_args(argv)
    import torch
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    n = args.batch or (128 if args.unet == "cifar" else 16)
    modes = (args.modes.split(",") if args.modes else
             ["fp32", "bf16", "bf16+channels_last", "bf16+compile"] if device.type == "cuda"
             else ["fp32"])
    hardware = (torch.cuda.get_device_name(device) if device.type == "cuda"
                else f"CPU {platform.processor() or platform.machine()}, "
                     f"{torch.get_num_threads()} threads")
    result = dict(hardware=hardware, torch=torch.__version__, warmup=args.warmup,
                  iters=args.iters, command="python tools/benchmark/throughput.py "
                  + " ".join(argv if argv is not None else os.sys.argv[1:]),
                  training=[], sampling=[])
    out = args.out or osp.join("tools/benchmark/results",
                               f"throughput_{args.unet}_{device.type}")
    os.makedirs(osp.dirname(out) or ".", exist_ok=True)
    for method in args.methods.split(","):
        for mode in modes:
            try:
                row = measure_training(method, args.unet, mode, n, device, args.warmup,
                                       args.iters)
            except Exception as err:  # noqa: BLE001 (an OOM or compile failure is a result)
                row = dict(method=method, unet=args.unet, mode=mode, batch=n,
                           error=f"{type(err).__name__}: {err}")
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            print(json.dumps(row), flush=True)
            result["training"].append(row)
            _write(result, out)
    if args.sampling and args.unet == "cifar":
        result["sampling"] = measure_sampling(args.unet, n, device, args.warmup, args.iters)
        for row in result["sampling"]:
            print(json.dumps(row), flush=True)
    _write(result, out)
    print(markdown(result))


def _write(result, out):
    with open(out + ".json", "w") as f:
        json.dump(result, f, indent=2)
    with open(out + ".md", "w") as f:
        f.write(markdown(result))


if __name__ == "__main__":
    main()
