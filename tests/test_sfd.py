"""SFD, SFD-v and second stage: sigma-space math against closed forms, the
training step's structure, and tiny runs through mim with resume and reload."""
import math

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel
from mmengine.config import Config

from conftest import mim_train
from diffengine_distill import SamplerPipeline, SFDScheduler
from diffengine_distill.apis.inference import generate
from diffengine_distill.diffusion import (NoiseSchedule, afs_step, denoised, euler_step,
                                          model_input, sampling_sigmas)
from diffengine_distill.diffusion.solvers import solve
from diffengine_distill.models.editors.sfd import SFD, second_stage
from diffengine_distill.models.editors.sfd.second_stage import check_last_step_loss
from diffengine_distill.registry import MODELS

T = 1024
COSINE = dict(type="DDPMScheduler", num_train_timesteps=T, beta_schedule="squaredcos_cap_v2",
              prediction_type="v_prediction")


def cosine_noise_schedule():
    return NoiseSchedule.from_scheduler(DDPMScheduler(num_train_timesteps=T,
                                                      beta_schedule="squaredcos_cap_v2"))


# -- sigma-space math ------------------------------------------------------------
def test_timestep_inverts_sigma_with_log_linear_alpha_bar():
    noise_schedule = cosine_noise_schedule()
    ac = noise_schedule.alphas_cumprod
    for t in (0.0, 3.0, 511.25, 1000.5, 1023.0):
        sigma = noise_schedule.sigma(torch.tensor(t))
        assert abs(float(noise_schedule.timestep(sigma)) - t) < 1e-9
        lo = math.floor(t)
        if lo < t:  # independent closed form of the interpolation
            f = t - lo
            ab = math.exp((1 - f) * math.log(ac[lo]) + f * math.log(ac[lo + 1]))
            assert abs(float(sigma) - math.sqrt((1 - ab) / ab)) < 1e-9
    with pytest.raises(ValueError, match="sigma must lie in the model's range"):
        noise_schedule.timestep(1e-4)


def test_denoiser_is_the_vp_models_x0_in_sigma_space():
    torch.manual_seed(0)
    x, v, sigma = torch.randn(3, 1, 4, 4, dtype=torch.float64) * 5, torch.randn(3, 1, 4, 4,
                                                                          dtype=torch.float64), 2.5
    alpha = 1 / math.sqrt(1 + sigma ** 2)
    x_vp = x * alpha
    assert torch.allclose(model_input(x, sigma), x_vp)
    # v = alpha eps - sigma_vp x0  =>  x0 = alpha x_vp - sigma_vp v
    expected = alpha * x_vp - sigma * alpha * v
    assert torch.allclose(denoised(v, x, sigma, "v_prediction"), expected)
    eps = torch.randn_like(x)
    assert torch.allclose(denoised(eps, x, sigma, "epsilon"), x - sigma * eps)


def test_euler_and_afs_steps_match_their_formulas():
    torch.manual_seed(0)
    x, d0 = torch.randn(2, 1, 3, 3, dtype=torch.float64) * 10, torch.randn(2, 1, 3, 3,
                                                                     dtype=torch.float64)
    s, s_next = 10.0, 3.0
    assert torch.allclose(euler_step(x, d0, s, s_next), x + (s_next - s) * (x - d0) / s)
    assert torch.allclose(afs_step(x, s, s_next), x + (s_next - s) * x / math.sqrt(1 + s ** 2))


def test_step_schedules_against_closed_forms():
    n, lo, hi = 5, 0.01, 80.0
    poly = sampling_sigmas(n, lo, hi, "polynomial", 7)
    i = torch.arange(n, dtype=torch.float64)
    assert torch.allclose(poly, (hi ** (1 / 7) + i / 4 * (lo ** (1 / 7) - hi ** (1 / 7))) ** 7)
    log = sampling_sigmas(n, lo, hi, "logsnr")
    assert torch.allclose(log[1:] / log[:-1],
                          (lo / hi) ** (1 / 4) * torch.ones(4, dtype=torch.float64))
    tu = sampling_sigmas(n, lo, hi, "time_uniform", 1)
    assert abs(float(tu[0]) - hi) < 1e-9 and abs(float(tu[-1]) - lo) < 1e-9
    noise_schedule = cosine_noise_schedule()
    disc = sampling_sigmas(n, lo, hi, "discrete", 1, noise_schedule)
    t = noise_schedule.timestep(disc)
    # uniform in t
    assert torch.allclose(t[1:] - t[:-1], (t[1] - t[0]) * torch.ones(4, dtype=torch.float64))
    assert abs(float(disc[0]) - hi) < 1e-9 and abs(float(disc[-1]) - lo) < 1e-9
    # A grid with (M + 1)(n - 1) + 1 points nests the n-point grid.
    for kind in ("polynomial", "logsnr", "time_uniform", "discrete"):
        small = sampling_sigmas(n, lo, hi, kind, 7, noise_schedule)
        big = sampling_sigmas(4 * (n - 1) + 1, lo, hi, kind, 7, noise_schedule)
        assert torch.allclose(big[::4], small, rtol=1e-9), kind
    with pytest.raises(ValueError, match="Unknown schedule_type 'cosine'"):
        sampling_sigmas(n, lo, hi, "cosine")


# -- the model ---------------------------------------------------------------------
TINY_UNET = dict(type="UNet2DModel", sample_size=8, in_channels=1, out_channels=1,
                 layers_per_block=1, block_out_channels=(8, 8), norm_num_groups=4,
                 down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2)


def tiny_sfd(**kwargs):
    torch.manual_seed(0)
    return MODELS.build(dict(dict(type="SFD", unet=TINY_UNET, scheduler=COSINE), **kwargs))


@pytest.fixture(scope="module")
def pixel_stage1(tmp_path_factory):
    """A first-stage SFD-v export of the tiny pixel teacher."""
    folder = tmp_path_factory.mktemp("stage1") / "export"
    tiny_sfd(use_step_condition=True, step_range=(4, 7)).save_export(str(folder))
    return folder


def tiny_second_stage(stage1, **kwargs):
    return tiny_sfd(type="SFDSecondStage", unet=dict(type="pretrained", path=str(stage1),
                                                     subfolder="unet"),
                    scheduler=dict(type="pretrained", path=str(stage1)), **kwargs)


def test_teacher_targets_are_every_k_th_point_of_the_teacher_solver():
    model = tiny_sfd(num_steps=4, M=2, sampler_tea="dpmpp", max_order=3)
    noise = torch.randn(2, 1, 8, 8)
    targets = model.teacher_targets(noise, None, 4, 2)
    sig = model.sigmas(10)  # (M + 1)(num_steps - 1) + 1
    assert torch.allclose(sig[::3], model.sigmas(4), rtol=1e-12)

    def teacher(x, s):
        t = model.noise_schedule.timestep(s).float().expand(2)
        v = model.teacher_unet(model_input(x, s), t).sample
        return denoised(v, x, s, "v_prediction")
    full = solve(teacher, noise * sig[0].float(), sig, "dpmpp", max_order=3, thresholding=True)
    assert targets.shape == (3, 2, 1, 8, 8)
    assert torch.allclose(targets, full[[3, 6, 9]])


class CountingOptimWrapper:
    """Records each update and which parameters had gradients."""

    def __init__(self, model, lr=1e-3):
        self.opt = torch.optim.SGD(model.unet.parameters(), lr=lr)
        self.updates, self.teacher_grads = 0, 0
        self.model = model

    def optim_context(self, model):
        import contextlib
        return contextlib.nullcontext()

    def backward(self, loss):
        loss.backward()

    def step(self):
        self.updates += 1
        self.teacher_grads += sum(p.grad is not None for p in self.model.teacher_unet.parameters())
        self.opt.step()

    def zero_grad(self):
        self.opt.zero_grad()


@pytest.mark.parametrize("num_steps, afs, updates", [(4, True, 2), (4, False, 3), (6, True, 4)])
def test_one_update_per_student_step(num_steps, afs, updates):
    model = tiny_sfd(num_steps=num_steps, afs=afs, M=1)
    wrapper = CountingOptimWrapper(model)
    teacher_before = {k: v.clone() for k, v in model.teacher_unet.state_dict().items()}
    data = dict(inputs=[torch.randn(1, 8, 8) for _ in range(3)], data_samples=dict(label=[None] * 3))
    out = model.train_step(data, wrapper)
    assert wrapper.updates == updates == int(out["updates"])
    assert int(out["nfe"]) == num_steps - 1 - afs
    assert wrapper.teacher_grads == 0
    for k, v in model.teacher_unet.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k


def test_student_starts_on_the_teachers_euler_trajectory():
    """Before training the student is the teacher: its sampler is the teacher's
    Euler solver with AFS on the student grid."""
    model = tiny_sfd(num_steps=5, afs=True)
    noise = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    model.double()
    sig = model.sigmas(5)
    x = afs_step(noise * sig[0], sig[0], sig[1])

    def teacher(x, s):
        v = model.teacher_unet(model_input(x, s), model.noise_schedule.timestep(s).expand(2)).sample
        return denoised(v, x, s, "v_prediction")
    rest = solve(teacher, x, sig[1:], "euler")[-1]
    assert torch.allclose(model.student_sample(noise), rest, atol=1e-10)


def test_step_condition_starts_as_the_teacher_and_draws_agree():
    model = tiny_sfd(use_step_condition=True, step_range=(4, 7))
    assert model.step_condition_size == 8
    assert model.unet.config.num_class_embeds == 8 and model.num_classes is None
    noise = torch.randn(2, 1, 8, 8)
    sig = model.sigmas(5)
    a = model.denoise(model.unet, noise * sig[1], sig[1], None, 5)
    b = model.denoise(model.teacher_unet, noise * sig[1], sig[1], None, None)
    assert (a - b).abs().max() < 1e-6  # zero rows: the student starts as the teacher
    draws = []
    for it in range(40):
        model.iteration.fill_(it)
        draws.append(model.draw_num_steps())
    assert {n for n, _ in draws} == {4, 5, 6, 7}
    model.iteration.fill_(7)
    assert model.draw_num_steps() == draws[7]  # a function of the iteration alone


@pytest.mark.parametrize("kwargs, match", [
    (dict(sampler_tea="ddim"), "Unknown .*ddim"),
    (dict(sampler_tea="dpmpp", max_order=4), "max_order=4 .*dpmpp.*1..3"),
    (dict(sampler_tea="ipndm", max_order=5), "max_order=5 .*ipndm.*1..4"),
    (dict(num_steps=2, afs=True), "num_steps=2 leaves no network step after AFS"),
    (dict(schedule_type="karras"), "Unknown schedule_type 'karras'"),
    (dict(sigma_max=1e6), "sigma_max=1e\\+06 must satisfy"),
    (dict(type="SFDSecondStage"), "SFDSecondStage distils a first-stage SFD"),
])
def test_bad_configs_fail_early(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny_sfd(**kwargs)


# -- tiny runs through mim -------------------------------------------------------------
@pytest.fixture(scope="module")
def sfd_runs(tiny_teacher, tmp_path_factory):
    base = tmp_path_factory.mktemp("sfd")
    teacher = [f"model.unet.path={tiny_teacher}", f"model.scheduler.path={tiny_teacher}"]
    cfg = "tests/configs/sfd_tiny.py"
    mim_train(cfg, base / "full", "--cfg-options", *teacher)
    sfd_v = base / "sfd_v"
    mim_train(cfg, sfd_v, "--cfg-options", *teacher, "model.use_step_condition=True")
    second = base / "second"
    stage1 = [f"model.unet.path={sfd_v / 'step6'}", f"model.scheduler.path={sfd_v / 'step6'}"]
    mim_train(cfg, second, "--cfg-options", *stage1, "model.type=SFDSecondStage",
              "model.num_steps=3", "model.M=2", "model.last_step_loss=l1")
    return dict(full=base / "full", sfd_v=sfd_v, second=second)


def losses(work_dir):
    import json
    logs = sorted(work_dir.glob("*/vis_data/scalars.json"))
    return [json.loads(line)["loss"] for line in logs[-1].read_text().splitlines()
            if '"loss"' in line]


def load_model(root, export, sd, **model_kwargs):
    cfg = Config.fromfile(f"{root}/tests/configs/sfd_tiny.py")
    cfg.model.unet.path = cfg.model.scheduler.path = str(export)
    cfg.model.update(model_kwargs)
    model = MODELS.build(cfg.model)
    model.load_state_dict(sd)
    return model.eval()


def test_checkpoints_count_iterations_and_every_update(sfd_runs):
    a = torch.load(sfd_runs["sfd_v"] / "iter_6.pth", map_location="cpu", weights_only=True)
    assert int(a["state_dict"]["iteration"]) == 6  # SFD-v's draws resume from it
    # 6 iterations x 2 updates (num_steps = 4 with AFS): Adam counted every one.
    a = torch.load(sfd_runs["full"] / "iter_6.pth", map_location="cpu", weights_only=True)
    assert all(int(s["step"]) == 12 for s in a["optimizer"]["state"].values())


def test_sfd_export_reloads_and_samples_as_trained(sfd_runs, tiny_teacher, root):
    full = sfd_runs["full"]
    export = full / "step6"
    pipe = SamplerPipeline.from_pretrained(export)
    assert isinstance(pipe.scheduler, SFDScheduler)
    sd = torch.load(full / "iter_6.pth", map_location="cpu", weights_only=True)["state_dict"]
    for k, v in pipe.unet.state_dict().items():
        assert torch.equal(sd["unet." + k], v), k
    # The teacher is untouched and the student moved.
    teacher = UNet2DModel.from_pretrained(tiny_teacher / "unet").state_dict()
    assert any(not torch.equal(teacher[k], v) for k, v in pipe.unet.state_dict().items())
    model = load_model(root, tiny_teacher, sd)
    seeds = range(5)
    noise = torch.stack([torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(s))
                         for s in seeds])
    ours = model.student_sample(noise)
    theirs = generate(pipe, seeds, 2, progress=False)  # 2 NFE = num_steps 4 with AFS
    assert (ours.clamp(-1, 1) - theirs).abs().max() < 1e-5
    assert pipe.scheduler.config.num_steps == 4 and pipe.scheduler.num_inference_steps == 2


def test_sfd_v_samples_each_trained_nfe(sfd_runs, tiny_teacher, root):
    export = sfd_runs["sfd_v"] / "step6"
    pipe = SamplerPipeline.from_pretrained(export)
    sd = torch.load(sfd_runs["sfd_v"] / "iter_6.pth", map_location="cpu",
                    weights_only=True)["state_dict"]
    model = load_model(root, tiny_teacher, sd, use_step_condition=True)
    seeds = range(3)
    noise = torch.stack([torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(s))
                         for s in seeds])
    outs = []
    for nfe in (2, 3, 4, 5):
        theirs = generate(pipe, seeds, nfe, progress=False)
        ours = model.student_sample(noise, num_steps=nfe + 2)
        assert (ours.clamp(-1, 1) - theirs).abs().max() < 1e-5, nfe
        outs.append(theirs)
    assert not torch.equal(outs[0], outs[1])
    with pytest.raises(ValueError, match="trained for 2..5 network evaluations"):
        generate(pipe, seeds, 6, progress=False)


def test_second_stage_is_one_nfe(sfd_runs, root):
    second = sfd_runs["second"]
    export = second / "step6"
    pipe = SamplerPipeline.from_pretrained(export)
    assert pipe.scheduler.config.num_steps == 3 and pipe.scheduler.num_inference_steps == 1
    sd = torch.load(second / "iter_6.pth", map_location="cpu", weights_only=True)["state_dict"]
    stage1 = sfd_runs["sfd_v"] / "step6"
    model = load_model(root, stage1, sd, type="SFDSecondStage", num_steps=3, M=2,
                       last_step_loss="l1")
    assert model.teacher_afs and model.use_step_condition
    calls = []
    pipe.unet.register_forward_hook(lambda *a: calls.append(1))
    seeds = range(3)
    theirs = generate(pipe, seeds, 1, progress=False)
    assert len(calls) == 1  # AFS, then one network evaluation
    noise = torch.stack([torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(s))
                         for s in seeds])
    assert (model.student_sample(noise).clamp(-1, 1) - theirs).abs().max() < 1e-5


def test_training_lowers_the_loss(sfd_runs):
    for run in ("full", "second"):
        values = losses(sfd_runs[run])
        assert len(values) == 6
        assert sum(values[-2:]) < sum(values[:2]), (run, values)


def test_sample_tool_uses_the_trained_nfe(sfd_runs, tmp_path):
    from diffengine_distill.apis.sample import main
    images = main([str(sfd_runs["sfd_v"]), "--num-images", "3", "--steps", "4",
                   "--out", str(tmp_path)])
    assert images.shape == (3, 1, 8, 8) and (tmp_path / "grid.png").is_file()
    pipe = SamplerPipeline.from_pretrained(sfd_runs["sfd_v"] / "step6")
    assert torch.equal(images, generate(pipe, range(3), 4, progress=False))
    default = main([str(sfd_runs["full"] / "step6"), "--num-images", "2",
                    "--out", str(tmp_path / "default")])
    assert default.shape[0] == 2 and (tmp_path / "default" / "000001.png").is_file()


def test_lpips_without_its_package_names_the_fallback():
    try:
        import lpips  # noqa: F401
        pytest.skip("lpips is installed here")
    except ImportError:
        pass
    from diffengine_distill.models.perceptual import build_lpips
    with pytest.raises(ImportError, match="last_step_loss='l1'"):
        build_lpips("last_step_loss", "model.last_step_loss='l1'")


def test_sigkill_mid_run_then_resume_matches(sfd_runs, tiny_teacher, tmp_path):
    """SFD-v killed mid-run: the resumed run draws the same step counts."""
    from conftest import kill_then_resume
    teacher = [f"model.unet.path={tiny_teacher}", f"model.scheduler.path={tiny_teacher}"]
    killed, log = kill_then_resume("tests/configs/sfd_tiny.py", tmp_path, *teacher,
                                   "model.use_step_condition=True",
                                   when="last_checkpoint")  # written after iter_2.pth
    assert killed and "Advance dataloader 2 steps" in log
    a = torch.load(sfd_runs["sfd_v"] / "iter_6.pth", map_location="cpu", weights_only=True)
    b = torch.load(tmp_path / "iter_6.pth", map_location="cpu", weights_only=True)
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k


# -- sfd-main's settings and math, checked independently ------------------------------
def polynomial_grid(n, lo, hi, rho=7.0):
    """EDM's polynomial step schedule, written out."""
    return [(hi ** (1 / rho) + i / (n - 1) * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
            for i in range(n)]


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    from tiny_sd import make_tiny_sd
    return make_tiny_sd(tmp_path_factory.mktemp("sfd_sd") / "sd")


def sfd_sd_model(folder, **kwargs):
    cfg = Config.fromfile("tests/configs/sfd_sd_tiny.py")
    cfg.model.unet.path = cfg.model.scheduler.path = cfg.model.data_preprocessor.model = folder
    cfg.model.update(kwargs)
    torch.manual_seed(0)
    return MODELS.build(cfg.model)


def test_sigma_interval_follows_sfd_main(tiny_sd):
    """sigma_min 0.1 for SD-class teachers, 0.006 otherwise (within the model's
    range); sigma_max 80 capped at sigma(t = T-1): SD 1.5's 2-NFE grid is
    sfd-main's [14.61, 3.97, 0.80, 0.10]."""
    model = sfd_sd_model(tiny_sd)  # SD 1.5's scaled-linear betas
    ab = DDPMScheduler(beta_start=0.00085, beta_end=0.012,
                       beta_schedule="scaled_linear").alphas_cumprod.double()
    hi = math.sqrt((1 - ab[-1]) / ab[-1])
    assert abs(hi - 14.6146) < 1e-4
    assert model.sigma_min == 0.1 and abs(model.sigma_max - hi) < 1e-9
    grid = model.sigmas(4)
    assert torch.allclose(grid, torch.tensor(polynomial_grid(4, 0.1, hi), dtype=torch.float64))
    assert [round(float(s), 2) for s in grid] == [14.61, 3.97, 0.80, 0.10]
    # A pixel teacher whose range reaches below 0.006 starts there; one that
    # does not (cosine T = 1024: 0.00634) starts at its own sigma(t = 0).
    low = dict(COSINE, beta_schedule="linear", beta_start=1e-5, beta_end=0.02)
    model = MODELS.build(dict(type="SFD", unet=TINY_UNET, scheduler=low))
    assert model.sigma_min == 0.006 and model.sigma_max == 80.0
    lo = cosine_noise_schedule().sigma_range()[0]
    assert tiny_sfd().sigma_min == lo and abs(lo - 0.006343) < 1e-6


class FakeLPIPS(torch.nn.Module):
    """Per-sample 'distances' fixed by the test."""

    def forward(self, a, b):
        return torch.tensor([0.25, 0.75], dtype=a.dtype).reshape(2, 1, 1, 1)


def test_second_stage_lpips_weighs_c_h_w_as_sfd_main(pixel_stage1, monkeypatch):
    monkeypatch.setattr(second_stage, "build_lpips", lambda *args: FakeLPIPS())
    model = tiny_second_stage(pixel_stage1)
    assert model.last_step_loss == "lpips" and isinstance(model.lpips, FakeLPIPS)
    torch.manual_seed(1)
    x, y = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    # sfd-main: loss = |x - y| + lpips.mean() (added to every element), then sum / B.
    expected = ((x - y).abs() + 0.5).sum() / 2
    assert abs(float(model.step_loss(x, y, last=True)) - float(expected)) < 1e-4
    assert abs(float(model.step_loss(x, y, last=False)) - float((x - y).abs().sum() / 2)) < 1e-4


def test_lpips_only_in_pixel_space(pixel_stage1):
    assert check_last_step_loss(None, latent=True) == "l1"  # latents: L1 as sfd-main
    assert check_last_step_loss(None, latent=False) == "lpips"
    with pytest.raises(ValueError, match="'lpips' compares images, but this teacher samples "
                                         "VAE latents: use 'l1'.*or 'lpips_decoded'"):
        check_last_step_loss("lpips", latent=True)
    with pytest.raises(ValueError, match="'lpips_decoded' is for latent teachers"):
        tiny_second_stage(pixel_stage1, last_step_loss="lpips_decoded")
    with pytest.raises(ValueError, match="last_step_loss must be one of .*'lpips'.*'l1'.*"
                                         "got 'l2'"):
        tiny_second_stage(pixel_stage1, last_step_loss="l2")


def vp_timestep(sigma, alphas_cumprod):
    """t(sigma): piecewise-linear in log alpha_bar (sfd-main's LDM wrapper)."""
    import numpy as np
    log_ab = np.log(alphas_cumprod.double().numpy())
    target = -math.log1p(float(sigma) ** 2)
    return float(np.interp(target, log_ab[::-1], np.arange(len(log_ab))[::-1].astype(float)))


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_stock_sd_pipeline_skips_the_unet_on_afs(tiny_sd, tmp_path, guidance):
    """A 2-NFE SFD export in diffusers' own StableDiffusionPipeline calls the
    UNet twice (AFS costs nothing, CFG batches both halves into one call) and
    samples SFD's Euler steps, written out here."""
    from diffusers import StableDiffusionPipeline
    model = sfd_sd_model(tiny_sd)
    with torch.no_grad():  # a student unlike the teacher
        for p in model.unet.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.save_export(str(tmp_path / "export"))
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "export")
    calls = []
    pipe.unet.register_forward_hook(lambda *a: calls.append(1))
    latents = pipe("a seven", num_inference_steps=2, guidance_scale=guidance,
                   generator=torch.Generator().manual_seed(0), output_type="latent").images
    assert len(calls) == 2
    cond, uncond = pipe.encode_prompt("a seven", "cpu", 1, True)
    ab = pipe.scheduler.alphas_cumprod
    sig = polynomial_grid(4, 0.1, math.sqrt((1 - ab[-1]) / ab[-1]))
    x = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(0)) * sig[0]
    x = x + (sig[1] - sig[0]) * x / math.sqrt(1 + sig[0] ** 2)  # AFS
    with torch.no_grad():
        for i in (1, 2):
            s = sig[i]
            t = torch.tensor(vp_timestep(s, ab), dtype=torch.float32)
            x_vp = x / math.sqrt(1 + s ** 2)
            eps_c = pipe.unet(x_vp, t, encoder_hidden_states=cond).sample
            eps_u = pipe.unet(x_vp, t, encoder_hidden_states=uncond).sample
            eps = eps_u + guidance * (eps_c - eps_u)
            x = x + (sig[i + 1] - s) * eps  # Euler: (x - D) / sigma = eps
    assert (latents - x).abs().max() < 1e-4


class RecordingOptimWrapper(CountingOptimWrapper):
    """SGD that records each loss and the gradients it stepped on."""

    def __init__(self, model, lr=0.05):
        super().__init__(model, lr)
        self.losses, self.grads = [], []

    def backward(self, loss):
        self.losses.append(float(loss.detach()))
        loss.backward()

    def step(self):
        self.grads.append([p.grad.clone() for p in self.model.unet.parameters()])
        super().step()


def v_denoiser(unet, x, s, t):
    """x0 of a v-prediction UNet in sigma-space, written out."""
    alpha = 1 / math.sqrt(1 + s ** 2)
    return alpha * (alpha * x) - s * alpha * unet(alpha * x, t).sample


def test_student_steps_against_a_hand_written_loop():
    """sfd-main's step: Euler from the student's own detached previous output
    (not the teacher's point), L1 summed over pixels and averaged over the
    batch, an SGD update after each step."""
    import copy
    model = tiny_sfd(num_steps=5, afs=True, M=1)
    unet = copy.deepcopy(model.unet)
    noise = torch.randn(3, 1, 8, 8)
    targets = model.teacher_targets(noise, None, 5, 1)
    wrapper = RecordingOptimWrapper(model)
    model.train_step(dict(inputs=list(noise), data_samples=dict(label=[None] * 3)), wrapper)

    sig = [float(s) for s in model.sigmas(5)]
    x = noise * sig[0]
    x = x + (sig[1] - sig[0]) * x / math.sqrt(1 + sig[0] ** 2)  # AFS, no update
    for i in (1, 2, 3):
        t = model.noise_schedule.timestep(sig[i]).float()
        x0 = v_denoiser(unet, x, sig[i], t)
        x_next = x + (sig[i + 1] - sig[i]) * (x - x0) / sig[i]
        loss = (x_next - targets[i]).abs().sum(dim=(1, 2, 3)).mean()
        unet.zero_grad()
        loss.backward()
        assert abs(float(loss.detach()) - wrapper.losses[i - 1]) < 1e-4 * wrapper.losses[i - 1]
        ours = torch.cat([p.grad.flatten() for p in unet.parameters()])
        theirs = torch.cat([g.flatten() for g in wrapper.grads[i - 1]])
        assert (ours - theirs).norm() < 1e-4 * ours.norm(), i  # fp32 rounding of |.|'s sign
        with torch.no_grad():
            for p in unet.parameters():
                p -= 0.05 * p.grad
        x = x_next.detach()
    assert len(wrapper.losses) == 3


def test_second_stage_teacher_is_euler_conditioned_on_its_step_count(tmp_path):
    """The second stage's teacher is the first-stage SFD-v model's Euler (+AFS)
    on (M + 1)(3 - 1) + 1 = 7 timestamps, conditioned on 7 steps."""
    first = tiny_sfd(use_step_condition=True, step_range=(4, 7))
    with torch.no_grad():  # distinct rows per step count, as after training
        first.unet.class_embedding.weight.normal_()
    first.save_export(str(tmp_path / "stage1"))
    second = tiny_sfd(type="SFDSecondStage", num_steps=3, M=2, last_step_loss="l1",
                      unet=dict(type="pretrained", path=str(tmp_path / "stage1"),
                                subfolder="unet"),
                      scheduler=dict(type="pretrained", path=str(tmp_path / "stage1")))
    noise = torch.randn(2, 1, 8, 8)
    targets = second.teacher_targets(noise, None, 3, 2)
    sig = polynomial_grid(7, first.sigma_min, first.sigma_max)
    rows = torch.full((2,), 7)  # class 0, 7 timestamps
    x = noise * sig[0]
    x = x + (sig[1] - sig[0]) * x / math.sqrt(1 + sig[0] ** 2)
    trajectory = [None, x]
    with torch.no_grad():
        for i in range(1, 6):
            alpha = 1 / math.sqrt(1 + sig[i] ** 2)
            t = first.noise_schedule.timestep(sig[i]).float()
            v = first.unet(alpha * x, t, class_labels=rows).sample
            x0 = alpha * (alpha * x) - sig[i] * alpha * v
            x = x + (sig[i + 1] - sig[i]) * (x - x0) / sig[i]
            trajectory.append(x)
    assert torch.allclose(targets[0], trajectory[3], atol=1e-5)
    assert torch.allclose(targets[1], trajectory[6], atol=1e-5)


def test_first_stage_sfd_has_no_second_stage_path(pixel_stage1):
    """SFD on a first-stage export is a first stage: the configured teacher
    solver on the config's step schedule, no step condition on the teacher, L1
    on every step; the second stage is SFDSecondStage alone."""
    import inspect
    import json
    assert not {"is_second_stage", "last_step_loss", "lpips_vae"} & \
        set(inspect.signature(SFD.__init__).parameters)
    model = tiny_sfd(unet=dict(type="pretrained", path=str(pixel_stage1), subfolder="unet"),
                     scheduler=dict(type="pretrained", path=str(pixel_stage1)),
                     schedule_type="logsnr", sigma_min=0.05)
    assert type(model) is SFD and model.solver["solver"] == "dpmpp"
    assert not model.teacher_afs and not model.use_step_condition
    assert model.teacher_step_condition(7) is None and not hasattr(model, "lpips")
    assert (model.schedule_type, model.sigma_min) == ("logsnr", 0.05)
    x, y = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    assert torch.equal(model.step_loss(x, y, last=True), model.step_loss(x, y, last=False))
    assert abs(float(model.step_loss(x, y, last=True)) - float((x - y).abs().sum() / 2)) < 1e-5

    second = tiny_second_stage(pixel_stage1, last_step_loss="l1", sampler_tea="dpmpp",
                               schedule_type="logsnr", sigma_min=0.05, step_range=(4, 5))
    first = json.loads((pixel_stage1 / "scheduler" / "scheduler_config.json").read_text())
    assert second.solver == dict(solver="euler") and second.teacher_afs
    assert (second.schedule_type, second.sigma_min) == ("polynomial", first["sigma_min"])
    assert second.step_range is None and second.step_condition_size == 8
    assert second.teacher_step_condition(7) == 7


def test_old_second_stage_flag_names_the_new_model():
    """Configs from when the second stage was SFD's is_second_stage flag: the
    first-stage values still build SFD, asking for the second stage names
    SFDSecondStage."""
    assert type(tiny_sfd(is_second_stage=False, last_step_loss=None)) is SFD
    for key, value in (("is_second_stage", True), ("last_step_loss", "l1")):
        with pytest.raises(ValueError, match=f"model.{key}=.* is a second-stage option.*"
                                             "model.type='SFDSecondStage'"):
            tiny_sfd(**{key: value})


def test_eps_student_starts_as_its_teacher(tmp_path):
    """An epsilon-prediction teacher: before training, the SFD student's sampler
    and its export are the teacher's Euler + AFS on the same grid."""
    eps = dict(type="DDPMScheduler", num_train_timesteps=1000, prediction_type="epsilon")
    model = tiny_sfd(scheduler=eps, num_steps=5)
    model.save_export(str(tmp_path / "export"))
    seeds = range(3)
    noise = torch.stack([torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(s))
                         for s in seeds])
    sig = polynomial_grid(5, 0.01000133, 80.0)  # this teacher's sigma(t = 0) > 0.006
    x = noise * sig[0]
    x = x + (sig[1] - sig[0]) * x / math.sqrt(1 + sig[0] ** 2)
    ab = DDPMScheduler(num_train_timesteps=1000).alphas_cumprod
    with torch.no_grad():
        for i in range(1, 4):
            t = torch.tensor(vp_timestep(sig[i], ab), dtype=torch.float32)
            e = model.teacher_unet(x / math.sqrt(1 + sig[i] ** 2), t).sample
            x = x + (sig[i + 1] - sig[i]) * e
    assert (model.student_sample(noise) - x).abs().max() < 1e-4
    pipe = SamplerPipeline.from_pretrained(tmp_path / "export")
    assert (generate(pipe, seeds, 3, progress=False) - x.clamp(-1, 1)).abs().max() < 1e-4


def test_overflowing_gradients_reach_the_grad_scaler(monkeypatch):
    """Under --amp (mmengine's AmpOptimWrapper with a GradScaler) an inf
    gradient must make the scaler skip the update and lower its scale;
    clamped to 1e5 it would be stepped on."""
    import mmengine.optim.optimizer.amp_optimizer_wrapper as amp

    from diffengine_distill.engine.optimizers import GuardedAmpOptimWrapper
    monkeypatch.setattr(amp, "is_cuda_available", lambda: True)  # CPU: bf16 autocast
    model = tiny_sfd(num_steps=4, M=1)
    wrapper = GuardedAmpOptimWrapper(optimizer=torch.optim.SGD(model.unet.parameters(), lr=0.1),
                                     dtype="bfloat16")
    wrapper.loss_scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
    model.unet.conv_out.weight.register_hook(lambda g: torch.full_like(g, float("inf")))
    before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    out = model.train_step(dict(inputs=[torch.randn(1, 8, 8)] * 2,
                                data_samples=dict(label=[None] * 2)), wrapper)
    assert int(out["updates"]) == 2
    assert wrapper.loss_scaler.get_scale() == 2.0 ** 14  # halved twice
    for k, v in model.unet.state_dict().items():
        assert torch.equal(v, before[k]), k
    # Without a scaler, sfd-main's nan_to_num: 0 for NaN, +-1e5 for Inf.
    model = tiny_sfd(num_steps=4, M=1)
    model.unet.conv_out.bias.grad = torch.tensor([float("nan")])
    model.unet.conv_out.weight.grad = torch.full_like(model.unet.conv_out.weight, -float("inf"))
    model.clean_gradients(CountingOptimWrapper(model))
    assert float(model.unet.conv_out.bias.grad) == 0
    assert (model.unet.conv_out.weight.grad == -1e5).all()


@pytest.mark.parametrize("config, kimg, global_batch, gpus", [
    ("sfd_ddpm_cifar10", 200, 128, 4), ("sfd_sd15", 20, 128, 8), ("sfd_v_sd15", 80, 128, 8),
    ("sfd_sdxl", 20, 32, 8)])
def test_configs_count_global_batches(root, config, kimg, global_batch, gpus):
    """batch_size is per process; total_kimg and the paper's 128 are global."""
    cfg = Config.fromfile(f"{root}/configs/sfd/{config}.py")
    assert cfg.model.global_batch == global_batch == cfg.train_dataloader.batch_size * gpus
    assert cfg.train_cfg.max_iters == kimg * 1000 // global_batch
    assert cfg.param_scheduler[0].end == cfg.train_cfg.max_iters


def test_first_iteration_checks_the_global_batch():
    model = tiny_sfd(global_batch=16)
    data = dict(inputs=[torch.randn(1, 8, 8)] * 3, data_samples=dict(label=[None] * 3))
    with pytest.raises(ValueError, match="global batches of 16, but 1 process\\(es\\) x "
                                         "train_dataloader.batch_size=3 = 3: set "
                                         "train_dataloader.batch_size=16"):
        model.train_step(data, CountingOptimWrapper(model))
    model = tiny_sfd(global_batch=3)
    assert int(model.train_step(data, CountingOptimWrapper(model))["updates"]) == 2


class L1Distance(torch.nn.Module):
    def forward(self, a, b):
        return (a - b).abs().mean((1, 2, 3))


def test_lpips_decoded_compares_decoded_images(tiny_sd, tmp_path, monkeypatch):
    """Latent teachers' optional LPIPS: both latents through the VAE first,
    weighted by the latent's C*H*W on the last step."""
    sfd_sd_model(tiny_sd).save_export(str(tmp_path / "stage1"))
    monkeypatch.setattr(second_stage, "build_lpips", lambda *args: L1Distance())

    def sd_second_stage(**kwargs):
        cfg = Config.fromfile("tests/configs/sfd_sd_tiny.py")
        cfg.model.data_preprocessor.model = tiny_sd
        return MODELS.build(dict(cfg.model.to_dict(), type="SFDSecondStage",
                                 base_model=str(tmp_path / "stage1"),
                                 scheduler=dict(type="pretrained", path=str(tmp_path / "stage1")),
                                 **kwargs))
    assert sd_second_stage().last_step_loss == "l1"  # latents: L1 as sfd-main
    model = sd_second_stage(last_step_loss="lpips_decoded")
    vae = model.data_preprocessor.vae
    assert model.lpips_decoder is vae and isinstance(model.lpips, L1Distance)
    torch.manual_seed(2)
    x, y = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        a, b = (torch.nn.functional.interpolate(vae.decode(z / vae.config.scaling_factor).sample,
                                                size=224, mode="bilinear") for z in (x, y))
        expected = (a - b).abs().mean((1, 2, 3))
        assert torch.allclose(model.perceptual(x, y), expected, atol=1e-5)
        loss = model.step_loss(x, y, last=True)
    assert abs(float(loss) - float(((x - y).abs() + expected.mean()).sum() / 2)) < 1e-3
