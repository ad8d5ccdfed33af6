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
DIGITS_UNET = dict(  # configs/_base_/models/unet_digits_16px.py (1.1M parameters)
    sample_size=16, in_channels=1, out_channels=1, layers_per_block=1,
    block_out_channels=(32, 64, 64), norm_num_groups=8, attention_head_dim=32,
    down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"))
UNETS = dict(cifar=CIFAR_UNET, sd15=SD15_UNET, digits=DIGITS_UNET)
SCHEDULERS = dict(
    digits=dict(type="DDPMScheduler", num_train_timesteps=1000, beta_schedule="linear"),
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
    if kind != "sd15":
        return UNet2DModel(**UNETS[kind])
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
    cfg = UNETS[kind]
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


class PartsRecorder:
    """Records one ``train_step``: every UNet call (its inputs, autocast state,
    whether a gradient came back through it) and every optimizer step. Their
    costs measured alone sum to what the iteration cannot be faster than."""

    def __init__(self, model, wrapper):
        import collections
        self.calls = collections.Counter()  # key -> UNet calls
        self.backwards = collections.Counter()  # key -> calls a gradient reached
        self.inputs = {}  # key -> (module, args, kwargs, trains_weights)
        self.steps = collections.Counter()  # optimizer -> steps
        self.optimizers = [w.optimizer for w in _wrappers(wrapper)]
        self._handles = [m.register_forward_hook(self._on_call, with_kwargs=True)
                         for m in unets(model)]
        self._originals = {}
        for optimizer in self.optimizers:
            self._originals[optimizer] = optimizer.step
            optimizer.step = self._counting(optimizer)

    def _counting(self, optimizer):
        original = self._originals[optimizer]

        def step(*args, **kwargs):
            self.steps[optimizer] += 1
            return original(*args, **kwargs)
        return step

    def _on_call(self, module, args, kwargs, output):
        import torch
        device = next(module.parameters()).device.type
        autocast = (torch.get_autocast_dtype(device)
                    if torch.is_autocast_enabled(device) else None)
        shapes = tuple((tuple(a.shape), a.dtype) for a in (*args, *kwargs.values())
                       if isinstance(a, torch.Tensor))
        trains = torch.is_grad_enabled() and any(p.requires_grad for p in module.parameters())
        key = (id(module), shapes, autocast, trains)
        self.calls[key] += 1
        if key not in self.inputs:
            detach = (lambda a: a.detach().clone() if isinstance(a, torch.Tensor) else a)
            self.inputs[key] = (module, [detach(a) for a in args],
                                {k: detach(v) for k, v in kwargs.items()}, trains)
        sample = output.sample if hasattr(output, "sample") else output[0]
        if sample.requires_grad:
            sample.register_hook(lambda grad: self.backwards.update([key]))

    def close(self):
        for handle in self._handles:
            handle.remove()
        for optimizer, original in self._originals.items():
            optimizer.step = original

    def parts(self):
        """(name, count, callable) of each part, the callable timing one of it."""
        import torch
        parts = []
        for key, (module, args, kwargs, trains) in self.inputs.items():
            device = next(module.parameters()).device.type
            autocast = key[2]
            forward_only = self.calls[key] - self.backwards[key]
            name = f"{type(module).__name__}@{id(module) % 997} batch {args[0].shape[0]}"

            def forward(module=module, args=args, kwargs=kwargs, device=device,
                        autocast=autocast):
                with torch.no_grad(), torch.autocast(device, dtype=autocast,
                                                     enabled=autocast is not None):
                    module(*args, **kwargs)

            def forward_backward(module=module, args=args, kwargs=kwargs, device=device,
                                 autocast=autocast, trains=trains):
                flags = [p.requires_grad for p in module.parameters()]
                if not trains:  # the gradient only passes through to the input
                    module.requires_grad_(False)
                x = args[0].detach().requires_grad_(not trains)
                try:
                    with torch.autocast(device, dtype=autocast, enabled=autocast is not None):
                        out = module(x, *args[1:], **kwargs)
                    sample = out.sample if hasattr(out, "sample") else out[0]
                    sample.backward(torch.ones_like(sample))
                finally:
                    for p, flag in zip(module.parameters(), flags):
                        p.requires_grad_(flag)
                        p.grad = None
            if forward_only:
                parts.append((f"{name} forward", forward_only, forward))
            if self.backwards[key]:
                what = "forward+backward" if trains else "forward+backward to input"
                parts.append((f"{name} {what}", self.backwards[key], forward_backward))
        for optimizer, count in self.steps.items():
            params = [p for g in optimizer.param_groups for p in g["params"]
                      if p.requires_grad]  # AdamW skips the frozen ones (no grad)

            def step(optimizer=optimizer, params=params):
                for p in params:
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                optimizer.step()
                for p in params:
                    p.grad = None
            parts.append((f"{type(optimizer).__name__} step ({len(params)} tensors)", count,
                          step))
        return parts


def _wrappers(wrapper) -> list:
    from mmengine.optim import OptimWrapperDict
    return list(wrapper.values()) if isinstance(wrapper, OptimWrapperDict) else [wrapper]


def measure_training(method, kind, mode, n, device, warmup, iters) -> dict:
    """Median s/it of the method's ``train_step`` and of each of its parts,
    timed in turn (an iteration, then each part once) so that a busy machine
    slows both alike."""
    import torch
    amp, compile_, channels_last = "bf16" in mode, "compile" in mode, "channels_last" in mode
    model = build_model(method, kind, device).train()
    if "checkpointing" in mode:
        unets(model)[0].enable_gradient_checkpointing()  # the trained UNet (built first)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    wrapper = optim_wrapper(model, method, amp)
    data = batch(kind, method, n, device)
    recorder = PartsRecorder(model, wrapper)
    model.train_step(data, wrapper)  # recorded in eager mode (hooks would break a graph)
    recorder.close()
    if compile_:
        from diffengine_distill.models.editors.compile import compile_unets
        compile_unets(model, {})
    parts = recorder.parts()

    def iteration():
        model.train_step(data, wrapper)
    for _ in range(warmup):
        iteration()
        for _, _, part in parts:
            part()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, part_times = [], [[] for _ in parts]
    for _ in range(iters):
        times += time_steps(iteration, device, 0, 1)
        for i, (_, _, part) in enumerate(parts):
            part_times[i] += time_steps(part, device, 0, 1)
    med = statistics.median(times)
    part_rows = [dict(part=name, count=count, s_each=statistics.median(t))
                 for (name, count, _), t in zip(parts, part_times)]
    parts_s = sum(r["count"] * r["s_each"] for r in part_rows)
    row = dict(method=method, unet=kind, mode=mode, batch=n, s_per_it=med,
               it_per_s=1 / med, img_per_s=n / med, warmup=warmup, iters=iters,
               parts_s=parts_s, parts_ratio=med / parts_s, parts=part_rows)
    if device.type == "cuda":
        row["peak_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    del model, wrapper
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def measure_sampling(kind, n, device, warmup, iters) -> list[dict]:
    """Images/s of exported samplers against NFE x the UNet forward (bf16
    weights on CUDA, fp32 on the CPU), both timed in turn."""
    import torch
    from diffusers import DDIMScheduler, LCMScheduler
    from diffengine_distill import SamplerPipeline
    from diffengine_distill.schedulers import SFDScheduler
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    unet = build_unet(kind).to(device, dtype).eval()
    cfg = UNETS[kind]
    z = torch.randn(n, cfg["in_channels"], cfg["sample_size"], cfg["sample_size"],
                    device=device, dtype=dtype)
    t = torch.full((n,), 500, device=device)

    def forward():
        with torch.no_grad():
            unet(z, t)
    base = dict(num_train_timesteps=1000, beta_schedule="linear")
    samplers = [
        ("teacher DDIM", 50, DDIMScheduler(**base, timestep_spacing="trailing")),
        ("PD / DMD one step (DDIM trailing)", 1, DDIMScheduler(**base, timestep_spacing="trailing")),
        ("PD 4 steps (DDIM trailing)", 4, DDIMScheduler(**base, timestep_spacing="trailing")),
        ("DMD2 4 steps (LCM)", 4, LCMScheduler(**base, original_inference_steps=4)),
        ("SFD 2 NFE (AFS)", 2, SFDScheduler(**base, num_steps=4, afs=True, sigma_min=0.01,
                                            sigma_max=80.0)),
    ]
    inside = [0.0]  # seconds spent inside UNet forwards, accumulated by the hooks below

    def enter(module, args):
        sync(device)
        module._entered = time.perf_counter()

    def leave(module, args, output):
        sync(device)
        inside[0] += time.perf_counter() - module._entered
    unet.register_forward_pre_hook(enter)
    unet.register_forward_hook(leave)
    calls = []
    for name, steps, scheduler in samplers:
        pipe = SamplerPipeline(unet=unet, scheduler=scheduler)
        pipe.set_progress_bar_config(disable=True)

        def call(pipe=pipe, steps=steps):
            with torch.no_grad():
                pipe(batch_size=n, num_inference_steps=steps, output_type="pt")
        calls.append((name, steps, call))
    times = {name: [] for name, _, _ in calls}
    in_call = {name: [] for name, _, _ in calls}  # call time / its own UNet time
    forwards = []
    for _ in range(warmup):
        forward()
        for _, _, call in calls:
            call()
    for _ in range(max(3, iters)):
        forwards += time_steps(forward, device, 0, 1)
        for name, _, call in calls:
            inside[0] = 0.0
            times[name] += time_steps(call, device, 0, 1)
            in_call[name].append(times[name][-1] / inside[0])
    fwd = statistics.median(forwards)
    rows = [dict(sampler="UNet forward alone", nfe=1, batch=n, s_per_batch=fwd,
                 img_per_s=n / fwd, floor_ratio=1.0, in_call_ratio=1.0)]
    for name, nfe, _ in calls:
        med = statistics.median(times[name])
        rows.append(dict(sampler=name, nfe=nfe, batch=n, s_per_batch=med, img_per_s=n / med,
                         floor_ratio=med / (nfe * fwd),
                         in_call_ratio=statistics.median(in_call[name])))
    return rows


def markdown(result: dict) -> str:
    lines = [f"# Throughput ({result['hardware']})", "",
             f"torch {result['torch']}, median of {result['iters']} iterations after "
             f"{result['warmup']} warm-up; `{result['command']}`", "",
             "Parts: every UNet call of one iteration (forward, or forward+backward where "
             "a gradient came back) and every optimizer step, each timed alone; "
             "iteration / parts is the overhead (target <= 1.1).", "",
             "| UNet | method | mode | batch | s/it | sum of parts (s) | iteration / parts "
             "| img/s | peak GiB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["training"]:
        if "error" in r:
            lines.append(f"| {r['unet']} | {r['method']} | {r['mode']} | {r['batch']} | "
                         f"failed: {r['error'][:60]} | | | | |")
            continue
        lines.append(f"| {r['unet']} | {r['method']} | {r['mode']} | {r['batch']} | "
                     f"{r['s_per_it']:.4f} | {r['parts_s']:.4f} | {r['parts_ratio']:.2f} | "
                     f"{r['img_per_s']:.0f} | "
                     f"{r.get('peak_gib', float('nan')):.1f} |")
    detailed = [r for r in result["training"] if r.get("parts")]
    if detailed:
        lines += ["", "Parts of each iteration (median seconds each):", "",
                  "| method | mode | part | count | s each |", "|---|---|---|---|---|"]
        for r in detailed:
            for part in r["parts"]:
                lines.append(f"| {r['method']} | {r['mode']} | {part['part']} | "
                             f"{part['count']} | {part['s_each']:.5f} |")
    if result.get("sampling"):
        lines += ["", f"Sampling ({result['sampling_dtype']} weights, "
                  f"{result['unet']} UNet; target at 1-4 NFE <= 1.1). Time / (NFE x "
                  "forward) divides by forwards timed alone; time / UNet time in the call "
                  "divides each call by the time its own UNet forwards took (hooks), so "
                  "it holds the sampler's overhead alone, whatever the machine's load:", "",
                  "| sampler | NFE | batch | s/batch | img/s | time / (NFE x forward) | "
                  "time / UNet time in the call |",
                  "|---|---|---|---|---|---|---|"]
        for r in result["sampling"]:
            lines.append(f"| {r['sampler']} | {r['nfe']} | {r['batch']} | {r['s_per_batch']:.4f}"
                         f" | {r['img_per_s']:.0f} | {r['floor_ratio']:.2f} | "
                         f"{r.get('in_call_ratio', float('nan')):.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--unet", choices=tuple(UNETS), default="cifar")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--batch", type=int, default=None, help="default: 128 cifar, 16 sd15, 64 digits")
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
    n = args.batch or dict(cifar=128, sd15=16, digits=64)[args.unet]
    modes = (args.modes.split(",") if args.modes else
             ["fp32", "bf16", "bf16+channels_last", "bf16+compile"] if device.type == "cuda"
             else ["fp32"])
    hardware = (torch.cuda.get_device_name(device) if device.type == "cuda"
                else f"CPU {platform.processor() or platform.machine()}, "
                     f"{torch.get_num_threads()} threads")
    result = dict(hardware=hardware, unet=args.unet, torch=torch.__version__, warmup=args.warmup,
                  iters=args.iters, command="python tools/benchmark/throughput.py "
                  + " ".join(argv if argv is not None else os.sys.argv[1:]),
                  training=[], sampling=[])
    out = args.out or osp.join("tools/benchmark/results",
                               f"throughput_{args.unet}_{device.type}")
    os.makedirs(osp.dirname(out) or ".", exist_ok=True)
    for method in [m for m in args.methods.split(",") if m]:  # "": sampling only
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
            write_results(result, out)
    if args.sampling and args.unet != "sd15":
        result["sampling_dtype"] = "bf16" if device.type == "cuda" else "fp32"
        result["sampling"] = measure_sampling(args.unet, n, device, args.warmup, args.iters)
        for row in result["sampling"]:
            print(json.dumps(row), flush=True)
    write_results(result, out)
    print(markdown(result))


def write_results(result, out, to_markdown=None):
    """``<out>.json`` and ``<out>.md`` (``to_markdown``: this script's table by default)."""
    with open(out + ".json", "w") as f:
        json.dump(result, f, indent=2)
    with open(out + ".md", "w") as f:
        f.write((to_markdown or markdown)(result))


if __name__ == "__main__":
    main()
