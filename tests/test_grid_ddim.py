"""Exports of fractional DDIM grids (N does not divide T) reproduce the
in-training sampler; where N divides T the scheduler is diffusers' DDIM."""
import torch
from diffusers import DDIMPipeline, DDIMScheduler

from diffengine_distill import GridDDIMScheduler, SamplerPipeline
from diffengine_distill.apis.inference import generate, load_pipeline
from diffengine_distill.models import DiffusionModel


class StudentModel(DiffusionModel):
    exact_grid = True  # as distilled students

UNET = dict(type="UNet2DModel", sample_size=8, in_channels=1, out_channels=1,
            layers_per_block=1, block_out_channels=(8, 16), norm_num_groups=4,
            down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"))


def model(T, steps, cls=StudentModel, **unet):
    torch.manual_seed(0)
    return cls(unet=dict(UNET, **unet), scheduler=dict(
        type="DDPMScheduler", num_train_timesteps=T), prediction_type="v_prediction",
        sampler=dict(num_inference_steps=steps))


def log_linear_alpha_bar(alphas_cumprod):
    """alpha_bar(t) for t in [-1, T - 1]: log-linear between integer timesteps,
    alpha_bar(-1) = 1 (set_alpha_to_one)."""
    ab = torch.cat([torch.ones(1), alphas_cumprod.double()])
    T = len(alphas_cumprod)

    def alpha_bar(t):
        lo = int(t + 1)
        frac, hi = t + 1 - lo, min(lo + 1, T)
        return (ab[lo].log() * (1 - frac) + ab[hi].log() * frac).exp()
    return alpha_bar


def seed_noise(seeds):
    """The pipelines' initial noise: one CPU generator per seed, (1, 8, 8) each."""
    return torch.stack([torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(s))
                        for s in seeds]).double()


def test_teacher_exports_stock_ddim_at_any_steps():
    pipe = model(1024, 50, cls=DiffusionModel).build_pipeline()
    assert type(pipe) is DDIMPipeline and type(pipe.scheduler) is DDIMScheduler


def test_integer_grid_is_stock_ddim():
    m = model(1024, 4)
    pipe = m.build_pipeline()
    assert type(pipe) is DDIMPipeline and type(pipe.scheduler) is DDIMScheduler
    grid = GridDDIMScheduler.from_config(pipe.scheduler.config)
    grid.set_timesteps(4)
    assert grid.timesteps.tolist() == [1023, 767, 511, 255]


def test_fractional_grid_export_reproduces_training_sampler(tmp_path):
    m = model(1000, 16).eval()
    pipe = m.build_pipeline()
    assert type(pipe) is SamplerPipeline and type(pipe.scheduler) is GridDDIMScheduler
    pipe.scheduler.set_timesteps(16)
    assert torch.allclose(pipe.scheduler.timesteps[:2], torch.tensor([999.0, 936.5]))
    pipe.save_pretrained(tmp_path)
    reloaded = load_pipeline(str(tmp_path))
    assert type(reloaded.scheduler) is GridDDIMScheduler
    assert type(reloaded) is SamplerPipeline
    seeds = range(4)
    ours = m.sample(seeds, 16)
    theirs = generate(reloaded, seeds, 16, progress=False)
    assert (ours - theirs).abs().max() < 1e-5

    # Independently: 16 DDIM steps by hand on the log-linear alpha_bar grid.
    alpha_bar = log_linear_alpha_bar(m.scheduler.alphas_cumprod)
    z = seed_noise(seeds)
    with torch.no_grad():
        for i in range(16, 0, -1):
            t, s = i * 62.5 - 1, (i - 1) * 62.5 - 1
            a_t, a_s = alpha_bar(t), alpha_bar(s)
            v = m.unet(z.float(), torch.tensor([t] * 4)).sample.double()
            x0 = a_t.sqrt() * z - (1 - a_t).sqrt() * v
            eps = (1 - a_t).sqrt() * z + a_t.sqrt() * v
            z = a_s.sqrt() * x0 + (1 - a_s).sqrt() * eps
    assert (z.clamp(-1, 1).float() - ours).abs().max() < 1e-4


def test_class_conditional_export(tmp_path):
    m = model(1024, 4, num_class_embeds=10).eval()
    pipe = m.build_pipeline()
    assert type(pipe) is SamplerPipeline
    pipe.save_pretrained(tmp_path)
    reloaded = SamplerPipeline.from_pretrained(tmp_path)
    a = m.sample(range(3), 4, labels=[1, 2, 3])
    b = generate(reloaded, range(3), 4, labels=[1, 2, 3], progress=False)
    assert (a - b).abs().max() < 1e-6


def test_clipped_sampling_keeps_or_recomputes_eps(tmp_path):
    """``clip_sample="on"`` is diffusers' DDIM (x0_hat clipped, eps_hat kept);
    ``"recompute"`` takes eps_hat from the clipped x0_hat (the PD paper's
    sampler), on integer (DDIMPipeline) and fractional (GridDDIM) grids alike:
    both against DDIM by hand. An untrained eps UNet at t near T gives x0_hat
    far outside [-1, 1], so the clip acts on every step."""
    seeds = range(3)
    for steps in (4, 16):
        torch.manual_seed(0)
        m = StudentModel(unet=UNET, scheduler=dict(type="DDPMScheduler", num_train_timesteps=1000),
                         prediction_type="epsilon",
                         sampler=dict(num_inference_steps=steps)).eval()
        folder = tmp_path / str(steps)
        m.build_pipeline().save_pretrained(folder)
        alpha_bar = log_linear_alpha_bar(m.scheduler.alphas_cumprod)

        def by_hand(recompute):
            z = seed_noise(seeds)
            clipped = 0
            with torch.no_grad():
                for i in range(steps, 0, -1):
                    t, s = i * 1000 / steps - 1, (i - 1) * 1000 / steps - 1
                    a_t, a_s = alpha_bar(t), alpha_bar(s)
                    eps = m.unet(z.float(), torch.tensor([t] * 3)).sample.double()
                    x0 = (z - (1 - a_t).sqrt() * eps) / a_t.sqrt()
                    clipped += int((x0.abs() > 1).any())
                    x0 = x0.clamp(-1, 1)
                    if recompute:
                        eps = (z - a_t.sqrt() * x0) / (1 - a_t).sqrt()
                    z = a_s.sqrt() * x0 + (1 - a_s).sqrt() * eps
            assert clipped == steps
            return z.float()

        results = {}
        for mode in ("on", "recompute"):
            pipe = load_pipeline(str(folder), clip_sample=mode)
            assert pipe.scheduler.config.clip_sample
            results[mode] = generate(pipe, seeds, steps, progress=False)
        # the last step returns the clipped x0_hat: earlier steps' eps shows in it
        for mode, recompute in (("on", False), ("recompute", True)):
            expected = by_hand(recompute)
            assert (results[mode] - expected).abs().max() < 1e-4, (steps, mode)
        assert (results["on"] - results["recompute"]).abs().max() > 1e-2

    # SamplerPipeline takes the flag itself, as DDIMPipeline does
    pipe = SamplerPipeline.from_pretrained(tmp_path / "16")
    pipe.scheduler = GridDDIMScheduler.from_config(pipe.scheduler.config, clip_sample=True)
    own = generate(pipe, seeds, 16, progress=False)
    assert (own - results["on"]).abs().max() < 1e-5
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    flagged = pipe(batch_size=3, generator=gens, num_inference_steps=16,
                   use_clipped_model_output=True, output_type="pt").images * 2 - 1
    assert (flagged - results["recompute"]).abs().max() < 1e-5


def test_exact_grid_samples_a_stock_ddim_teacher_on_its_trailing_grid(tmp_path):
    """A teacher export (stock DDIMPipeline, T = 1000) at 16 steps: diffusers'
    DDIM steps t -> t - 62 and lands off the next timestep; ``exact_grid``
    follows t_i = 62.5 i - 1, as DDIM by hand on that grid. At 4 steps
    (N divides T) both are the same sampler."""
    torch.manual_seed(0)
    m = DiffusionModel(unet=UNET, scheduler=dict(type="DDPMScheduler", num_train_timesteps=1000),
                       prediction_type="epsilon").eval()
    m.build_pipeline().save_pretrained(tmp_path)
    alpha_bar = log_linear_alpha_bar(m.scheduler.alphas_cumprod)
    seeds = range(3)

    def by_hand(steps):
        z = seed_noise(seeds)
        with torch.no_grad():
            for i in range(steps, 0, -1):
                t, s = i * 1000 / steps - 1, (i - 1) * 1000 / steps - 1
                a_t, a_s = alpha_bar(t), alpha_bar(s)
                eps = m.unet(z.float(), torch.tensor([t] * 3)).sample.double()
                x0 = (z - (1 - a_t).sqrt() * eps) / a_t.sqrt()
                z = a_s.sqrt() * x0 + (1 - a_s).sqrt() * eps
        return z.clamp(-1, 1).float()

    stock = load_pipeline(str(tmp_path), clip_sample="off")
    exact = load_pipeline(str(tmp_path), clip_sample="off", exact_grid=True)
    assert type(stock.scheduler) is DDIMScheduler
    assert type(exact.scheduler) is GridDDIMScheduler
    for steps in (16, 4):
        expected = by_hand(steps)
        ours = generate(exact, seeds, steps, progress=False)
        assert (ours - expected).abs().max() < 1e-4, steps
        off_grid = (generate(stock, seeds, steps, progress=False) - expected).abs().max()
        assert off_grid > 1e-2 if steps == 16 else off_grid < 1e-4
