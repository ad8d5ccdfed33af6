"""Schedule, prediction conversions, DDIM step, loss weightings and the
DiffusionModel, each checked against an independent closed form (fp64)."""
import math

import numpy as np
import pytest
import torch
from diffusers import DDIMPipeline, DDIMScheduler, DDPMScheduler

from diffengine_distill.models import DiffusionLoss, DiffusionModel
from diffengine_distill.diffusion import (NoiseSchedule, convert_prediction,
                                                 ddim_step, split_prediction)
from diffengine_distill.models.losses import snr_weight

TYPES = ("epsilon", "v_prediction", "sample")

SCHEDULES = [
    dict(num_train_timesteps=1000, beta_schedule="linear"),
    dict(num_train_timesteps=1000, beta_schedule="scaled_linear"),
    dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2"),
    dict(num_train_timesteps=1024, beta_schedule="linear"),
    dict(num_train_timesteps=1024, beta_schedule="scaled_linear"),
    dict(num_train_timesteps=1024, beta_schedule="squaredcos_cap_v2"),
    dict(num_train_timesteps=1000, beta_schedule="linear", rescale_betas_zero_snr=True),
    dict(num_train_timesteps=1024, beta_schedule="squaredcos_cap_v2",
         rescale_betas_zero_snr=True),
]


def closed_alpha_bar(ac: np.ndarray, t: float) -> float:
    """exp of the linear interpolation of log alpha_bar, with alpha_bar(-1) = 1."""
    table = np.concatenate([[1.0], ac])  # table[k] = alpha_bar(k - 1)
    pos = t + 1.0
    lo = min(int(math.floor(pos)), len(table) - 2)
    f = pos - lo
    if f == 0:
        return float(table[lo])
    return float(np.exp((1 - f) * np.log(table[lo]) + f * np.log(table[lo + 1])))


# -- NoiseSchedule ----------------------------------------------------------------
@pytest.mark.parametrize("cfg", SCHEDULES, ids=lambda c: "-".join(map(str, c.values())))
def test_vp_schedule_matches_scheduler(cfg):
    sched = DDPMScheduler(**cfg)
    ac = sched.alphas_cumprod.double().numpy()
    T = cfg["num_train_timesteps"]
    vp = NoiseSchedule.from_scheduler(sched)
    assert vp.num_train_timesteps == T

    # Integer t: diffusers' values exactly; t = -1: clean.
    t_int = torch.arange(T)
    assert torch.equal(vp.alpha_bar(t_int), torch.from_numpy(ac))
    assert vp.alpha_bar(torch.tensor([-1.0])).item() == 1.0
    assert vp.alpha_bar(-1).item() == 1.0

    # Fractional t, including between t = -1 and t = 0 and near the end.
    fracs = [-0.75, -0.5, -0.25, 0.5, 10.25, 500.5, 700.125]
    if not cfg.get("rescale_betas_zero_snr"):
        fracs.append(T - 1.5)
    got = vp.alpha_bar(torch.tensor(fracs, dtype=torch.float64))
    want = torch.tensor([closed_alpha_bar(ac, t) for t in fracs], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    # e.g. written out for t = 10.25 and t = -0.5:
    assert got[4].item() == pytest.approx(math.exp(0.75 * math.log(ac[10])
                                                   + 0.25 * math.log(ac[11])), rel=1e-12)
    assert got[1].item() == pytest.approx(math.sqrt(ac[0]), rel=1e-12)

    # alpha^2 + sigma^2 = 1, snr and log_snr.
    t = torch.cat([torch.rand(64, dtype=torch.float64) * (T - 1),
                   t_int[:: T // 8].double()])
    ab = torch.tensor([closed_alpha_bar(ac, x) for x in t.tolist()], dtype=torch.float64)
    a, s = vp.alpha_sigma(t)
    torch.testing.assert_close(a ** 2 + s ** 2, torch.ones_like(t), rtol=0, atol=1e-14)
    torch.testing.assert_close(a, ab.sqrt(), rtol=1e-12, atol=0)
    torch.testing.assert_close(vp.snr(t), ab / (1 - ab), rtol=1e-10, atol=0)
    torch.testing.assert_close(vp.log_snr(t), torch.log(ab / (1 - ab)), rtol=1e-10, atol=1e-12)

    if cfg.get("rescale_betas_zero_snr"):
        assert vp.alpha_bar(T - 1).item() == 0.0
        assert vp.snr(T - 1).item() == 0.0
        a, s = vp.alpha_sigma(T - 1)
        assert (a.item(), s.item()) == (0.0, 1.0)
        mid = vp.alpha_bar(T - 1.5).item()  # finite, between its neighbours
        assert 0.0 <= mid <= ac[T - 2]

    for bad in (-1.5, T - 0.5, T, [0.0, T + 3.0]):
        with pytest.raises(ValueError, match="t must lie in"):
            vp.alpha_bar(bad)


def test_vp_schedule_from_config_dict():
    cfg = dict(type="DDPMScheduler", num_train_timesteps=1024,
               beta_schedule="squaredcos_cap_v2")
    from diffengine_distill.models.builders import build_scheduler
    vp = NoiseSchedule.from_scheduler(build_scheduler(cfg))
    ref = DDPMScheduler(num_train_timesteps=1024, beta_schedule="squaredcos_cap_v2")
    assert torch.equal(vp.alpha_bar(torch.arange(1024)), ref.alphas_cumprod.double())


# -- prediction conversions ----------------------------------------------------
def _noisy_batch(B=6, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(B, 2, 4, 4, generator=g, dtype=dtype)
    eps = torch.randn(B, 2, 4, 4, generator=g, dtype=dtype)
    ac = DDPMScheduler(num_train_timesteps=1000).alphas_cumprod.double()
    t = torch.randint(0, 1000, (B,), generator=g)
    ab = ac[t]
    alpha, sigma = ab.sqrt(), (1 - ab).sqrt()
    a, s = alpha[:, None, None, None], sigma[:, None, None, None]
    z = a * x0 + s * eps
    truth = {"sample": x0, "epsilon": eps, "v_prediction": a * eps - s * x0}
    return z, alpha, sigma, truth


@pytest.mark.parametrize("src", TYPES)
@pytest.mark.parametrize("dst", TYPES)
def test_convert_prediction(src, dst):
    z, alpha, sigma, truth = _noisy_batch()
    out = convert_prediction(truth[src], z, alpha, sigma, src, dst, dtype=torch.float64)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, truth[dst], rtol=1e-9, atol=1e-9)

    out32 = convert_prediction(truth[src].float(), z.float(), alpha, sigma, src, dst,
                               dtype=torch.float32)
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), truth[dst], rtol=2e-3, atol=2e-3)


def test_convert_prediction_unknown_type():
    z, alpha, sigma, truth = _noisy_batch()
    for src, dst in (("eps", "sample"), ("sample", "x0")):
        with pytest.raises(ValueError, match="epsilon.*v_prediction.*sample"):
            convert_prediction(truth["sample"], z, alpha, sigma, src, dst)


# -- DDIM step vs diffusers ----------------------------------------------------
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ddim_step_matches_diffusers(prediction_type):
    ddim = DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear",
                         prediction_type=prediction_type, timestep_spacing="trailing",
                         set_alpha_to_one=True, clip_sample=False)
    ddim.set_timesteps(10)
    vp = NoiseSchedule.from_scheduler(ddim)
    g = torch.Generator().manual_seed(1)
    steps = ddim.timesteps.tolist()
    assert steps[0] == 999 and steps[-1] == 99
    for t in steps:
        z = torch.randn(2, 3, 8, 8, generator=g)
        pred = torch.randn(2, 3, 8, 8, generator=g)
        out = ddim.step(pred, t, z, eta=0.0)
        a_t, s_t = vp.alpha_sigma(torch.tensor(float(t)))
        a_s, s_s = vp.alpha_sigma(torch.tensor(float(t - 100)))
        x0, eps = split_prediction(pred.double(), z.double(), a_t, s_t, prediction_type)
        prev = ddim_step(x0, eps, a_s, s_s)
        torch.testing.assert_close(x0.float(), out.pred_original_sample, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(prev.float(), out.prev_sample, rtol=1e-4, atol=1e-4)
    # The last step goes to t = -1 and returns x0_hat itself.
    assert t - 100 == -1
    torch.testing.assert_close(prev, x0, rtol=0, atol=0)


# -- loss weightings -----------------------------------------------------------
GAMMA = 5.0
W_X0 = {  # weight on the x0-MSE (uniform: the parameterisation's plain MSE)
    "snr": lambda s: s,
    "truncated_snr": lambda s: np.maximum(s, 1.0),
    "snr_plus_one": lambda s: s + 1,
    "min_snr": lambda s: np.minimum(s, GAMMA),
}
FACTOR = {"epsilon": lambda s: s, "v_prediction": lambda s: s + 1,
          "sample": lambda s: np.ones_like(s)}  # parameterisation MSE / x0-MSE
WEIGHTINGS = ["uniform", *W_X0]


def closed_weight(s, weighting, ptype):
    if weighting == "uniform":
        return np.ones_like(s)
    return W_X0[weighting](s) / FACTOR[ptype](s)


@pytest.mark.parametrize("ptype", TYPES)
@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_snr_weight_closed_form(weighting, ptype):
    s = np.array([1e-3, 0.3, 1.0, 2.0, 4.5, 5.0, 7.0, 100.0])
    got = snr_weight(torch.from_numpy(s), weighting, ptype, snr_gamma=GAMMA)
    np.testing.assert_allclose(got.numpy(), closed_weight(s, weighting, ptype), rtol=1e-12)


def test_snr_weight_spot_values():
    s = torch.tensor([2.0, 10.0], dtype=torch.float64)
    # min-SNR on v is min(SNR, gamma) / (SNR + 1), not min(SNR + 1, gamma) / (SNR + 1).
    assert snr_weight(s, "min_snr", "v_prediction").tolist() == pytest.approx([2 / 3, 5 / 11])
    assert snr_weight(s, "min_snr", "epsilon").tolist() == pytest.approx([1.0, 0.5])
    assert snr_weight(torch.tensor([0.25, 3.0]), "truncated_snr", "sample").tolist() \
        == pytest.approx([1.0, 3.0])
    with pytest.raises(ValueError, match="min_snr"):
        snr_weight(s, "min-snr", "epsilon")
    with pytest.raises(ValueError, match="min_snr"):
        DiffusionLoss(weighting="minsnr")


@pytest.mark.parametrize("ptype", TYPES)
@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_weighted_loss_is_x0_space_loss(weighting, ptype):
    """Weighted MSE of any parameterisation == w_x0(SNR) * ||x0_hat - x0||^2."""
    B = 5
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(B, 1, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(B, 1, 4, 4, generator=g, dtype=torch.float64)
    ab = DDPMScheduler(num_train_timesteps=1000).alphas_cumprod.double()[
        torch.tensor([0, 150, 400, 650, 950])]
    snr = ab / (1 - ab)
    a, s = ab.sqrt().view(B, 1, 1, 1), (1 - ab).sqrt().view(B, 1, 1, 1)
    z = a * x0 + s * eps
    target = {"sample": x0, "epsilon": eps, "v_prediction": a * eps - s * x0}[ptype]
    pred = target + 0.1 * torch.randn(B, 1, 4, 4, generator=g, dtype=torch.float64)
    x0_hat = {"sample": pred, "epsilon": (z - s * pred) / a,
              "v_prediction": a * z - s * pred}[ptype]

    sn = snr.numpy()
    w_x0 = FACTOR[ptype](sn) if weighting == "uniform" else W_X0[weighting](sn)
    x0_mse = (x0_hat - x0).pow(2).flatten(1).mean(1).numpy()
    want = 2.0 * np.mean(w_x0 * x0_mse)

    loss = DiffusionLoss(weighting=weighting, snr_gamma=GAMMA, loss_weight=2.0)(
        pred.float(), target.float(), snr, ptype)
    assert loss.ndim == 0 and loss.dtype == torch.float32
    assert loss.item() == pytest.approx(want, rel=1e-4)


def test_loss_per_sample_weights_do_not_broadcast():
    B = 3
    g = torch.Generator().manual_seed(3)
    target = torch.randn(B, 2, 4, 4, generator=g)
    scale = torch.tensor([0.1, 1.0, 3.0]).view(B, 1, 1, 1)
    pred = target + scale * torch.randn(B, 2, 4, 4, generator=g)
    snr = torch.tensor([0.5, 4.0, 20.0], dtype=torch.float64)
    loss = DiffusionLoss(weighting="min_snr", snr_gamma=GAMMA)(pred, target, snr,
                                                              "v_prediction")
    total = 0.0
    for b in range(B):
        w = min(snr[b].item(), GAMMA) / (snr[b].item() + 1)
        total += w * ((pred[b] - target[b]) ** 2).mean().item()
    assert loss.item() == pytest.approx(total / B, rel=1e-5)


# -- DiffusionModel ------------------------------------------------------------
def tiny_unet(**extra):
    return dict(type="UNet2DModel", sample_size=8, in_channels=1, out_channels=1,
                block_out_channels=(8, 16),
                down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                norm_num_groups=4, attention_head_dim=8, layers_per_block=1, **extra)


SCHEDULER = dict(type="DDPMScheduler", num_train_timesteps=1024,
                 beta_schedule="squaredcos_cap_v2")


def tiny_model(**kwargs):
    torch.manual_seed(0)
    kwargs.setdefault("unet", tiny_unet())
    return DiffusionModel(scheduler=SCHEDULER, prediction_type="v_prediction",
                          sampler=dict(num_inference_steps=4), **kwargs)


@pytest.mark.parametrize("continuous_time", [False, True])
def test_diffusion_model_loss(continuous_time):
    model = tiny_model(continuous_time=continuous_time)
    assert model.prediction_type == "v_prediction"
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    out = model(x, mode="loss")
    loss = out["loss"]
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.unet.parameters()
               if p.grad is not None)


def test_diffusion_model_pipeline_and_sampling():
    model = tiny_model()
    pipe = model.build_pipeline()
    assert isinstance(pipe, DDIMPipeline)
    cfg = pipe.scheduler.config
    assert isinstance(pipe.scheduler, DDIMScheduler)
    assert cfg.prediction_type == "v_prediction"
    assert cfg.timestep_spacing == "trailing"
    assert cfg.set_alpha_to_one is True
    assert cfg.num_train_timesteps == 1024
    assert pipe.unet is model.unet

    imgs = model.sample(range(4), 3)
    assert imgs.shape == (4, 1, 8, 8)
    assert imgs.min() >= -1 and imgs.max() <= 1
    torch.testing.assert_close(model.sample(range(2), 3), imgs[:2])
    assert not torch.equal(imgs[0], imgs[1])


def test_class_conditional_model_trains_with_labels():
    model = tiny_model(unet=tiny_unet(num_class_embeds=11), class_dropout_prob=0.1)
    assert model.num_classes == 11
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    loss = model(x, dict(labels=torch.tensor([0, 3, 7, 9])), mode="loss")["loss"]
    assert torch.isfinite(loss)
    loss.backward()
    grad = model.unet.class_embedding.weight.grad
    assert grad is not None and grad.abs().sum() > 0


ATTN_UNET = dict(type="UNet2DModel", sample_size=8, in_channels=1, out_channels=1,
                 layers_per_block=1, block_out_channels=(8, 16), norm_num_groups=4,
                 down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                 up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8)


@pytest.mark.parametrize("options", [dict(gradient_checkpointing=True),
                                     dict(attention="eager")])
def test_memory_options_keep_the_gradients(options):
    """Activation checkpointing and the attention kernels trade memory, not results."""
    grads = []
    for kwargs in (dict(), options):
        torch.manual_seed(0)
        model = DiffusionModel(unet=ATTN_UNET, scheduler=dict(type="DDPMScheduler"),
                               prediction_type="v_prediction", **kwargs).train()
        processors = {type(m.processor).__name__ for m in model.unet.modules()
                      if hasattr(m, "processor")}
        assert processors == {"AttnProcessor" if kwargs.get("attention") else "AttnProcessor2_0"}
        assert model.unet.is_gradient_checkpointing == bool(kwargs.get("gradient_checkpointing"))
        torch.manual_seed(1)
        loss = model(torch.rand(4, 1, 8, 8) * 2 - 1)["loss"]
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.unet.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)


def test_unknown_or_missing_attention_backend_fails_clearly():
    with pytest.raises(ValueError, match="model.attention='flash' is not one of"):
        DiffusionModel(unet=ATTN_UNET, scheduler=dict(type="DDPMScheduler"), attention="flash")
    try:
        import xformers  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="needs the xformers package"):
            DiffusionModel(unet=ATTN_UNET, scheduler=dict(type="DDPMScheduler"),
                           attention="xformers")
