"""DMD and DMD2: the distribution-matching gradient and losses against closed
forms, the update order of a training step, and tiny runs through mim with
regression pairs from tools/make_pairs.py, resume and export reload."""
import json

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config

from conftest import kill_then_resume, mim_train, run
from diffengine_distill.apis.inference import generate, load_pipeline
from diffengine_distill.engine.optimizers import PerModuleOptimWrapperConstructor
from diffengine_distill.diffusion import prediction_target, split_prediction
from diffengine_distill.models.editors.dmd import DMD, dm_gradient, dm_loss
from diffengine_distill.models.editors.dmd.dmd import generator_timesteps
from diffengine_distill.registry import MODELS

T = 1024
UNET = dict(type="UNet2DModel", sample_size=8, in_channels=1, out_channels=1,
            layers_per_block=1, block_out_channels=(8, 16),
            down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4,
            attention_head_dim=8, num_class_embeds=11)
SCHEDULER = dict(type="DDPMScheduler", num_train_timesteps=T, beta_schedule="squaredcos_cap_v2",
                 clip_sample=False)


def build(**kwargs):
    torch.manual_seed(0)
    cfg = dict(unet=UNET, scheduler=SCHEDULER, prediction_type="v_prediction",
               regression_weight=0.0)
    model = DMD(**{**cfg, **kwargs})
    with torch.no_grad():  # a critic that differs from the real score
        for p in model.critic.unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def optim_wrappers(model):
    cfg = dict(generator=dict(type="OptimWrapper", optimizer=dict(type="SGD", lr=0.1)),
               critic=dict(type="OptimWrapper", optimizer=dict(type="SGD", lr=0.1)))
    return PerModuleOptimWrapperConstructor(cfg)(model)


def batch(n=4, labels=True, noise=False):
    gen = torch.Generator().manual_seed(1)
    data = dict(inputs=[torch.randint(0, 256, (1, 8, 8), generator=gen, dtype=torch.uint8)
                        for _ in range(n)],
                data_samples=dict(label=[i % 10 for i in range(n)] if labels else [None] * n))
    if noise:
        data["inputs"] = [x.float() / 127.5 - 1 for x in data["inputs"]]
        data["data_samples"]["noise"] = [torch.randn(1, 8, 8, generator=gen) for _ in range(n)]
    return data


# -- the distribution-matching gradient ---------------------------------------------
def test_dm_gradient_and_the_surrogate_loss_identity():
    gen = torch.Generator().manual_seed(0)
    x, real, fake = (torch.randn(3, 2, 4, 4, generator=gen, dtype=torch.float64)
                     for _ in range(3))
    grad = dm_gradient(x, real, fake)
    for i in range(3):  # per-sample weight: mean |x - x0_real| of that sample
        expected = (fake[i] - real[i]) / (x[i] - real[i]).abs().mean()
        torch.testing.assert_close(grad[i], expected)
    x = x.clone().requires_grad_(True)
    dm_loss(x, grad).backward()
    torch.testing.assert_close(x.grad, grad / x.numel(), rtol=1e-5, atol=1e-12)  # fp32 loss
    # A sample equal to its real-score estimate has weight 0: zeroed, not NaN.
    assert torch.isfinite(dm_gradient(real, real, fake)).all()


def test_dm_loss_uses_the_real_and_fake_scores_on_noised_samples():
    model = build()
    labels = torch.tensor([1, 2, 3])
    x = torch.randn(3, 1, 8, 8).requires_grad_(True)
    torch.manual_seed(5)
    loss, _ = model.distribution_matching_loss(x, labels)
    loss.backward()
    torch.manual_seed(5)  # the same draws, recomputed by hand
    lo, hi = int(0.02 * T), int(0.98 * T)
    t = torch.randint(lo, hi + 1, (3,))
    noise = torch.randn(3, 1, 8, 8)
    ab = torch.tensor([model.scheduler.alphas_cumprod[int(i)].item() for i in t]).double()
    a, s = ab.sqrt().float().view(-1, 1, 1, 1), (1 - ab).sqrt().float().view(-1, 1, 1, 1)
    z = a * x.detach() + s * noise
    with torch.no_grad():
        v_real = model.teacher_unet(z, t, class_labels=labels).sample
        v_fake = model.critic.unet(z, t, class_labels=labels).sample
    real, fake = a * z - s * v_real, a * z - s * v_fake  # x0 of a v-prediction
    weight = (x.detach() - real).abs().mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(x.grad, (fake - real) / weight / x.numel(), rtol=1e-4, atol=1e-9)


def test_dm_timesteps_cover_two_to_ninety_eight_percent_of_t():
    """The DM loss draws t uniformly in int(0.02 T)..int(0.98 T) = 20..1003 (T = 1024)."""
    model = build()
    drawn = []
    noised = model.noised
    model.noised = lambda x, t, *a: drawn.append(t) or noised(x, t, *a)
    x, labels = torch.randn(256, 1, 8, 8), torch.arange(256) % 10
    torch.manual_seed(0)
    with torch.no_grad():
        for _ in range(16):
            model.distribution_matching_loss(x, labels)
    t = torch.cat(drawn)
    # 4096 draws (fixed seed) reach both ends, and nothing outside them.
    assert (int(t.min()), int(t.max())) == (20, 1003)
    assert len(t.unique()) > 0.95 * (1003 - 20 + 1)


def test_real_score_guidance_is_cfg_on_x0():
    model = build(real_guidance_scale=2.5)
    z, t, labels = torch.randn(2, 1, 8, 8), torch.tensor([100, 700]), torch.tensor([3, 4])
    cond = model.x0(model.teacher_unet(z, t, class_labels=labels).sample, z, t)
    uncond = model.x0(model.teacher_unet(z, t, class_labels=torch.tensor([10, 10])).sample, z, t)
    torch.testing.assert_close(model.real_x0(z, t, labels), uncond + 2.5 * (cond - uncond),
                               rtol=1e-5, atol=1e-6)


def test_critic_loss_is_the_eps_mse_on_detached_samples():
    model = build()
    x, labels = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    torch.manual_seed(3)
    loss = model.critic_losses(x, labels, None)["loss_critic"]
    torch.manual_seed(3)
    t = torch.randint(0, T, (4,))
    noise = torch.randn_like(x)
    a, s = (c.float().view(-1, 1, 1, 1) for c in model.noise_schedule.alpha_sigma(t))
    z = a * x + s * noise
    v = model.critic.unet(z, t, class_labels=labels).sample
    eps_hat = s * z + a * v
    torch.testing.assert_close(loss, (eps_hat - noise).square().mean(), rtol=1e-4, atol=1e-7)


def gan_logits(model, z, t, labels):
    """The GAN head on the critic UNet's mid-block output, hooked by hand."""
    feats = []
    handle = model.critic.unet.mid_block.register_forward_hook(lambda m, a, o: feats.append(o))
    model.critic.unet(z, t, class_labels=labels)
    handle.remove()
    return model.critic.gan_head(feats[0]).flatten()


def test_gan_losses_are_the_logistic_losses_with_generator_samples_fake():
    """Critic: BCE(real images -> 1) + BCE(generator samples -> 0); generator:
    BCE(its samples -> 1); each on images noised at t ~ U{0..gan_t_max}."""
    model = build(gan_generator_weight=5e-3, gan_critic_weight=1e-2)
    with torch.no_grad():
        model.critic.gan_head[-1].bias.fill_(0.7)  # logits far from 0: sign errors show
    x, real, labels = torch.randn(3, 1, 8, 8), torch.rand(3, 1, 8, 8), torch.tensor([1, 2, 3])
    bce = F.binary_cross_entropy_with_logits
    torch.manual_seed(4)
    losses = model.critic_losses(x, labels, real)
    torch.manual_seed(4)
    torch.randint(0, T, (3,)), torch.randn_like(x)  # the denoising rows' draws
    logits = []
    with torch.no_grad():
        for images in (x, real):
            t = torch.randint(0, T, (3,))
            logits.append(gan_logits(model, model.noised(images, t), t, labels))
    expected = 1e-2 * (bce(logits[0], torch.zeros(3)) + bce(logits[1], torch.ones(3)))
    torch.testing.assert_close(losses["loss_gan_critic"], expected, rtol=1e-5, atol=1e-8)

    torch.manual_seed(6)
    losses, _ = model.generator_losses(x, labels, None, None)
    torch.manual_seed(6)
    torch.randint(int(0.02 * T), int(0.98 * T) + 1, (3,)), torch.randn_like(x)  # DM draws
    t = torch.randint(0, T, (3,))
    with torch.no_grad():
        fake = gan_logits(model, model.noised(x, t), t, labels)
    torch.testing.assert_close(losses["loss_gan_generator"], 5e-3 * bce(fake, torch.ones(3)),
                               rtol=1e-5, atol=1e-8)


def test_gan_terms_start_at_gan_start_iter():
    model = build(gan_generator_weight=1e-3, gan_critic_weight=1e-2, gan_start_iter=2,
                  critic_updates_per_generator=1)
    wrappers = optim_wrappers(model)
    keys = [set(model.train_step(batch(), wrappers)) for _ in range(3)]
    gan = {"loss_gan_generator", "loss_gan_critic"}
    assert not keys[0] & gan and not keys[1] & gan and keys[2] >= gan
    model.iteration.fill_(1)  # a resumed run reads the phase from the checkpoint
    assert (model.gan_generator_weight, model.gan_critic_weight) == (0.0, 0.0)
    model.iteration.fill_(2)
    assert (model.gan_generator_weight, model.gan_critic_weight) == (1e-3, 1e-2)


EPS_SCHEDULER = dict(type="DDPMScheduler", num_train_timesteps=1000, clip_sample=False)


def test_generator_starts_as_the_teachers_x0_of_an_eps_teacher():
    """Iteration 0: G(z) is the eps teacher's x0 = (z - sigma eps) / alpha at T-1,
    or at DMD2's SDXL conditioning timestep 399, and the export's one DDIM step
    gives the same."""
    from diffusers import DDPMScheduler
    ac = DDPMScheduler(num_train_timesteps=1000).alphas_cumprod.double()
    z, labels = torch.randn(2, 1, 8, 8), torch.tensor([4, 5])
    for t, kwargs in ((999, {}), (399, dict(generator_timestep=399))):
        model = DMD(unet=UNET, scheduler=EPS_SCHEDULER, regression_weight=0.0, **kwargs)
        with torch.no_grad():
            eps = model.teacher_unet(z, torch.tensor([t, t]), class_labels=labels).sample
            expected = (z.double() - (1 - ac[t]).sqrt() * eps.double()) / ac[t].sqrt()
            ours = model.generator_x0(model.unet, z, model.timesteps[0], labels)
            sched = model.export_scheduler()
            sched.set_timesteps(1)
            assert sched.timesteps.tolist() == [t]
            out = model.unet(z, sched.timesteps[0], class_labels=labels).sample
            export = sched.step(out, sched.timesteps[0], z).prev_sample
        scale = expected.abs().max()
        assert scale > 1  # x0 of a random eps net: not a trivial comparison
        assert (ours - expected).abs().max() / scale < 1e-4
        assert (export - expected).abs().max() / scale < 1e-4


def test_v_generator_of_an_eps_teacher():
    """generator_prediction_type: the generator's output is read as v (x0 =
    alpha z - sigma v, DDPM's alphas_cumprod at 999) in training and by the
    export's DDIM step; the real score and the critic's loss still read eps."""
    from diffusers import DDPMScheduler
    ac = DDPMScheduler(num_train_timesteps=1000).alphas_cumprod.double()
    a, s = ac[999].sqrt(), (1 - ac[999]).sqrt()
    model = DMD(unet=UNET, scheduler=EPS_SCHEDULER, regression_weight=0.0,
                generator_prediction_type="v_prediction")
    z, labels, t = torch.randn(2, 1, 8, 8), torch.tensor([4, 5]), torch.tensor([999, 999])
    with torch.no_grad():
        out = model.unet(z, t, class_labels=labels).sample.double()
        ours = model.generator_x0(model.unet, z, 999, labels)
        sched = model.export_scheduler()
        sched.set_timesteps(1)
        export = sched.step(out.float(), sched.timesteps[0], z).prev_sample
        real = model.real_x0(z, t, labels)
    torch.testing.assert_close(ours.double(), a * z.double() - s * out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(export.double(), a * z.double() - s * out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(real.double(), (z.double() - s * out) / a, rtol=1e-4, atol=1e-3)
    assert model.prediction_type == "v_prediction"  # what the export's metadata says

    x = torch.randn(2, 1, 8, 8)
    torch.manual_seed(3)
    loss = model.critic_losses(x, labels, None)["loss_critic"]
    torch.manual_seed(3)
    t = torch.randint(0, 1000, (2,))
    noise = torch.randn_like(x)
    at, st = ac[t].sqrt().float().view(-1, 1, 1, 1), (1 - ac[t]).sqrt().float().view(-1, 1, 1, 1)
    with torch.no_grad():
        eps_hat = model.critic.unet(at * x + st * noise, t, class_labels=labels).sample
    torch.testing.assert_close(loss, (eps_hat - noise).square().mean(), rtol=1e-4, atol=1e-7)


def test_gan_head_gives_one_logit_per_image():
    for size, blocks in ((8, (8, 16)), (32, (8, 16, 16, 16))):
        unet = dict(UNET, sample_size=size, block_out_channels=blocks,
                    down_block_types=("DownBlock2D",) * len(blocks),
                    up_block_types=("UpBlock2D",) * len(blocks))
        model = build(unet=unet, gan_critic_weight=1e-2)
        out, logits = model.critic(torch.randn(3, 1, size, size), torch.tensor([1, 2, 3]),
                                   torch.tensor([0, 1, 2]), with_logits=True)
        assert out.shape == (3, 1, size, size) and logits.shape == (3,)


# -- the training step -----------------------------------------------------------------
def _grads(module):
    return [p.grad for p in module.parameters()]


def test_update_order_and_which_networks_get_gradients():
    model = build(critic_updates_per_generator=2, gan_generator_weight=3e-3,
                  gan_critic_weight=1e-2)
    wrappers = optim_wrappers(model)
    events = []

    def spy(name, wrapper):
        step = wrapper.step

        def wrapped(**kw):
            grads = dict(generator=_grads(model.unet), critic=_grads(model.critic),
                         teacher=_grads(model.teacher_unet))
            events.append((int(model.iteration), name, {k: all(g is not None for g in v)
                                                        for k, v in grads.items()},
                           {k: all(g is None for g in v) for k, v in grads.items()}))
            return step(**kw)
        wrapper.step = wrapped
    for name in ("generator", "critic"):
        spy(name, wrappers[name])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for _ in range(3):
        model.train_step(batch(), wrappers)
    order = [(it, name) for it, name, *_ in events]
    # TTUR 2: the generator steps on iterations 0 and 2, before that iteration's critic.
    assert order == [(0, "generator"), (0, "critic"), (1, "critic"), (2, "generator"),
                     (2, "critic")]
    for _, name, has, none in events:
        other = "critic" if name == "generator" else "generator"
        assert has[name] and none[other] and none["teacher"], name
    assert all(p.requires_grad for p in model.critic.parameters())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("teacher_unet"))
    assert int(model.iteration) == 3


def test_first_dm_gradient_is_zero_when_critic_equals_teacher():
    model = DMD(unet=UNET, scheduler=SCHEDULER, prediction_type="v_prediction",
                regression_weight=0.0)
    out = model.train_step(batch(), optim_wrappers(model))
    # Zero up to float rounding (copies of one network; multithreaded kernels
    # may round differently): a perturbed critic gives ~0.1.
    assert float(out["dm_grad_norm"]) < 1e-4 and float(out["loss_critic"]) > 0


def test_multi_step_generator_simulates_its_own_samples():
    model = build(num_generator_steps=4)
    assert model.timesteps == [1023, 767, 511, 255] == generator_timesteps(T, 4)
    assert generator_timesteps(1000, 4) == [999, 749, 499, 249]  # DMD2's
    other, seen = build(num_generator_steps=4), set()
    for i in range(40):  # a function of (seed, iteration): every process draws alike
        model.iteration.fill_(i)
        other.iteration.fill_(i)
        assert model.draw_step_index() == other.draw_step_index()
        seen.add(model.draw_step_index())
    assert seen == {0, 1, 2, 3}
    # simulate(index=2): two no-grad generator steps, re-noised to t = 511.
    noise, labels = torch.randn(2, 1, 8, 8), torch.tensor([1, 2])
    torch.manual_seed(9)
    z = model.simulate(noise, labels, 2)
    torch.manual_seed(9)
    expected = noise
    for j in range(2):
        t = torch.full((2,), model.timesteps[j])
        v = model.unet(expected, t, class_labels=labels).sample
        a, s = (c.float() for c in model.noise_schedule.alpha_sigma(model.timesteps[j]))
        x0 = a * expected - s * v
        ab = float(model.scheduler.alphas_cumprod[model.timesteps[j + 1]])
        expected = ab ** 0.5 * x0 + (1 - ab) ** 0.5 * torch.randn_like(x0)
    torch.testing.assert_close(z, expected, rtol=1e-5, atol=1e-6)
    assert not z.requires_grad


def test_regression_loss_uses_the_pairs():
    model = build(regression_weight=0.25, regression_loss="l2")
    wrappers = optim_wrappers(model)
    data = batch(noise=True)
    out = model.train_step(data, wrappers)
    # 0.25 * MSE(G(noise), image) with the generator before the update:
    fresh = build(regression_weight=0.25, regression_loss="l2")
    pre = model.data_preprocessor(data, True)
    noise, images = pre["data_samples"]["noise"], pre["inputs"]
    labels = pre["data_samples"]["labels"]
    with torch.no_grad():
        t = torch.full((4,), T - 1)
        v = fresh.unet(noise, t, class_labels=labels).sample
        a, s = (c.float() for c in fresh.noise_schedule.alpha_sigma(T - 1))
        expected = 0.25 * F.mse_loss(a * noise - s * v, images)
    torch.testing.assert_close(out["loss_regression"], expected, rtol=1e-5, atol=1e-7)


def test_regression_only_pretraining_then_generator_init(tmp_path):
    """dm_weight=0 (DMD2's SDXL ODE stage): the generator learns the pairs' L2
    alone (value checked by hand), the critic is untouched; generator_init then
    starts a generator from that export while both scores stay the teacher."""
    model = build(dm_weight=0.0, regression_weight=1.0, regression_loss="l2")
    wrappers = optim_wrappers(model)
    data = batch(noise=True)
    fresh = build(dm_weight=0.0, regression_weight=1.0, regression_loss="l2")
    critic = {k: v.clone() for k, v in model.critic.state_dict().items()}
    out = model.train_step(data, wrappers)
    assert set(out) == {"loss_regression"}
    pre = model.data_preprocessor(data, True)
    noise, images = pre["data_samples"]["noise"], pre["inputs"]
    with torch.no_grad():
        v = fresh.unet(noise, torch.full((4,), T - 1),
                       class_labels=pre["data_samples"]["labels"]).sample
        a, s = (c.float() for c in fresh.noise_schedule.alpha_sigma(T - 1))
        expected = F.mse_loss(a * noise - s * v, images)
    torch.testing.assert_close(out["loss_regression"], expected, rtol=1e-5, atol=1e-7)
    assert all(torch.equal(critic[k], v) for k, v in model.critic.state_dict().items())
    trained = model.unet.state_dict()
    assert any(not torch.equal(trained[k], v) for k, v in fresh.unet.state_dict().items())
    model.build_pipeline().save_pretrained(tmp_path / "pretrained")
    torch.manual_seed(0)  # the same random teacher as build()'s, without its critic noise
    second = DMD(unet=UNET, scheduler=SCHEDULER, prediction_type="v_prediction",
                 regression_weight=0.0, generator_init=str(tmp_path / "pretrained"))
    for k, v in second.unet.state_dict().items():
        assert torch.equal(v, trained[k]), k
    base = fresh.teacher_unet.state_dict()
    assert all(torch.equal(second.teacher_unet.state_dict()[k], v) for k, v in base.items())
    assert all(torch.equal(second.critic.unet.state_dict()[k], v) for k, v in base.items())


@pytest.mark.parametrize("kwargs, match", [
    (dict(critic_updates_per_generator=0), "critic_updates_per_generator=0 must be"),
    (dict(critic_updates_per_generator=1.5), "must be an integer >= 1"),
    (dict(regression_weight=0.25, num_generator_steps=4), "set model.regression_weight=0"),
    (dict(regression_weight=0.25, regression_loss="ssim"), "regression_loss must be one of"),
    (dict(dm_t_range=(0.5, 0.2)), "dm_t_range"),
    (dict(gan_generator_weight=3e-3), "against an untrained GAN head"),
    (dict(gan_generator_weight=-1e-3, gan_critic_weight=1e-2), "must be >= 0"),
    (dict(gan_start_iter=10), "needs GAN weights"),
    (dict(generator_timestep=399, num_generator_steps=4), "one-step generator"),
    (dict(generator_prediction_type="x0"), "Unknown prediction_type 'x0'"),
    (dict(dm_weight=0.0), "needs model.regression_weight > 0"),
    (dict(dm_weight=0.0, regression_weight=1.0, regression_loss="l2",
          gan_generator_weight=1e-3, gan_critic_weight=1e-2), "trains no critic"),
    (dict(unet={k: v for k, v in UNET.items() if k != "num_class_embeds"},
          real_guidance_scale=2.0), "unconditional: set model.real_guidance_scale=1"),
])
def test_bad_configs_fail_early(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build(**kwargs)


def test_bad_data_fails_with_the_fix():
    model = build(regression_weight=0.25, regression_loss="l2")
    with pytest.raises(ValueError, match="tools/make_pairs.py"):
        model.train_step(batch(), optim_wrappers(model))
    with pytest.raises(ValueError, match="no labels"):
        build().train_step(batch(labels=False), optim_wrappers(model))
    wrong = batch(noise=True)
    wrong["inputs"] = [torch.zeros(1, 16, 16) for _ in range(4)]
    wrong["data_samples"]["noise"] = [torch.zeros(1, 16, 16) for _ in range(4)]
    with pytest.raises(ValueError, match="16x16 but the teacher UNet samples 8x8"):
        model.train_step(wrong, optim_wrappers(model))


def test_pairs_dataset_errors(tmp_path):
    from diffengine_distill.datasets import PairsDataset
    with pytest.raises(FileNotFoundError, match="make_pairs.py"):
        PairsDataset(str(tmp_path / "none"))


# -- tools/make_pairs.py and tiny runs through mim ----------------------------------------
@pytest.fixture(scope="module")
def cond_teacher(tmp_path_factory):
    """The tiny teacher with ten classes and a null class, trained 6 iterations."""
    work = tmp_path_factory.mktemp("cond_teacher")
    mim_train("tests/configs/teacher_tiny.py", work, "--cfg-options",
              "model.unet.num_class_embeds=11", "model.class_dropout_prob=0.1")
    return work / "step6"


@pytest.fixture(scope="module")
def pairs(cond_teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("pairs")
    run(["python", "tools/make_pairs.py", str(cond_teacher), "--out", str(out),
         "--seeds", "0-39", "--steps", "8", "--shard-size", "16"])
    return out


def test_make_pairs_reproduces_the_teacher_and_resumes(cond_teacher, pairs, tmp_path):
    from diffengine_distill.apis.pairs import make_pairs, ode_scheduler
    from diffengine_distill.datasets import PairsDataset
    from diffengine_distill.pipelines import SamplerPipeline
    meta = json.loads((pairs / "pairs.json").read_text())
    assert meta["num_classes"] == 10 and meta["seeds"] == [[0, 15], [16, 31], [32, 39]]
    data = PairsDataset(str(pairs))
    assert len(data) == 40 and data[13]["data_samples"]["label"] == 3
    teacher = load_pipeline(cond_teacher)
    pipe = SamplerPipeline(unet=teacher.unet, scheduler=ode_scheduler(teacher.scheduler, "dpmpp"))
    images = generate(pipe, [13, 37], 8, labels=[3, 7], progress=False)
    torch.testing.assert_close(torch.stack([data[13]["inputs"], data[37]["inputs"]]), images)
    noise = torch.randn((1, 1, 8, 8), generator=torch.Generator().manual_seed(37))[0]
    assert torch.equal(data[37]["data_samples"]["noise"], noise)
    # Resume: a truncated shard is redone, intact ones are kept bit for bit.
    import shutil
    copy = tmp_path / "pairs"
    shutil.copytree(pairs, copy)
    (copy / "shard_00000016.safetensors").write_bytes(b"truncated")
    kept = (copy / "shard_00000000.safetensors").stat().st_mtime_ns
    make_pairs(str(cond_teacher), str(copy), range(40), 8, shard_size=16, progress=False)
    assert (copy / "shard_00000000.safetensors").stat().st_mtime_ns == kept
    for name in meta["shards"]:
        assert (copy / name).read_bytes() == (pairs / name).read_bytes()
    with pytest.raises(ValueError, match="other settings"):
        make_pairs(str(cond_teacher), str(copy), range(40), 16, shard_size=16, progress=False)


@pytest.fixture(scope="module")
def dmd_runs(cond_teacher, pairs, tmp_path_factory):
    base = tmp_path_factory.mktemp("dmd")
    teacher = [f"model.unet.path={cond_teacher}", f"model.scheduler.path={cond_teacher}"]
    dmd = [*teacher, f"train_dataloader.dataset.path={pairs}"]
    mim_train("tests/configs/dmd_tiny.py", base / "dmd", "--cfg-options", *dmd)
    mim_train("tests/configs/dmd_tiny.py", base / "dmd_long", "--cfg-options", *dmd,
              "train_cfg.max_iters=30", "optim_wrapper.generator.optimizer.lr=1e-3")
    dmd2 = [*teacher, "model.num_generator_steps=4"]
    mim_train("tests/configs/dmd2_tiny.py", base / "dmd2", "--cfg-options", *dmd2)
    return dict(base=base, dmd=dmd, dmd2=dmd2)


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("name, config", [("dmd", "dmd_tiny"), ("dmd2", "dmd2_tiny")])
def test_sigkill_mid_run_then_resume_matches(dmd_runs, name, config, tmp_path):
    # Killed as soon as iter_2.pth exists, often before last_checkpoint is
    # written: --resume then takes the newest intact checkpoint, not a fresh start.
    killed, log = kill_then_resume(f"tests/configs/{config}.py", tmp_path, *dmd_runs[name])
    assert killed and "Advance dataloader 2 steps" in log, log[-3000:]
    a, b = _state(dmd_runs["base"] / name / "iter_6.pth"), _state(tmp_path / "iter_6.pth")
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    assert set(a["optimizer"]) >= {"generator", "critic"}
    for net in ("generator", "critic"):  # Adam moments restored, not re-initialised
        ma, mb = a["optimizer"][net]["state"], b["optimizer"][net]["state"]
        assert ma.keys() == mb.keys() and ma
        for k in ma:
            assert torch.equal(ma[k]["exp_avg_sq"], mb[k]["exp_avg_sq"]), (net, k)


@pytest.mark.parametrize("name, config, steps", [("dmd", "dmd_tiny", 1),
                                                 ("dmd2", "dmd2_tiny", 4)])
def test_export_reloads_and_samples_as_trained(dmd_runs, root, name, config, steps):
    work = dmd_runs["base"] / name
    cfg = Config.fromfile(f"{root}/tests/configs/{config}.py")
    cfg.model.unet.path = cfg.model.scheduler.path = str(work / "step6")
    cfg.model.update(num_generator_steps=steps, regression_weight=0.0)
    model = MODELS.build(cfg.model)
    sd = _state(work / "iter_6.pth")["state_dict"]
    model.load_state_dict(sd)
    pipe = load_pipeline(work / "step6")
    expected = "DDIMScheduler" if steps == 1 else "LCMScheduler"
    assert type(pipe.scheduler).__name__ == expected
    seeds, labels = list(range(6)), [3, 1, 4, 1, 5, 9]
    images = generate(pipe, seeds, steps, labels=labels, progress=False)
    trained = model.student_sample(seeds, labels).clamp(-1, 1)
    assert (images - trained).abs().max() < 1e-5
    # The export's UNet is the trained generator, bit for bit.
    for k, v in pipe.unet.state_dict().items():
        assert torch.equal(v, sd["unet." + k]), k


def test_training_lowers_the_regression_loss(dmd_runs):
    logs = sorted((dmd_runs["base"] / "dmd_long").glob("*/vis_data/scalars.json"))
    values = [json.loads(line)["loss_regression"] for line in logs[-1].read_text().splitlines()
              if "loss_regression" in line]
    assert len(values) == 30
    assert sum(values[-5:]) < 0.8 * sum(values[:5]), values


def test_sample_grid_and_tensorboard_curves(dmd_runs):
    work = dmd_runs["base"] / "dmd2"
    assert (work / "samples" / "step6.png").is_file()
    events = list(work.rglob("events.out.tfevents*"))
    assert events and sum(e.stat().st_size for e in events) > 1000


def test_two_processes_train_in_sync_and_resume_on_one(dmd_runs, tmp_path):
    """DMD2 (TTUR, GAN head) under DDP: 2 CPU processes (gloo) with batch 4
    train like the 1-process run with batch 8 (noise and timesteps keyed per
    sample); its checkpoint resumes on one process and still matches."""
    from conftest import assert_same_training
    env = dict(OMP_NUM_THREADS="1")
    two = tmp_path / "two"
    proc = mim_train("tests/configs/dmd2_tiny.py", two, "--gpus", "2", "--launcher", "pytorch",
                     "--cfg-options", *dmd_runs["dmd2"], "train_cfg.max_iters=4",
                     "train_dataloader.batch_size=4", env=env)
    assert "Training finished" in proc.stdout
    log = next(two.glob("*/*.log")).read_text()
    assert "Distributed training: True" in log and "GPU number: 2" in log
    one = dmd_runs["base"] / "dmd2"
    assert_same_training(one / "iter_4.pth", two / "iter_4.pth")
    mim_train("tests/configs/dmd2_tiny.py", two, "--resume", "--cfg-options", *dmd_runs["dmd2"],
              env=env)
    assert_same_training(one / "iter_6.pth", two / "iter_6.pth")


def test_dmd_benchmark_runs_end_to_end(tmp_path):
    """tools/benchmark/dmd_quality.py on a 16-px tiny teacher: one run of two
    iterations, 16 seeds, the teacher's FD on two seed sets; its tables hold
    the FD the same images give by hand."""
    from diffengine_distill.apis.pairs import ode_scheduler
    from diffengine_distill.datasets.digits import load_digits_uint8
    from diffengine_distill.evaluation import (classifier_features, frechet_distance,
                                               get_digits_classifier)
    from diffengine_distill.pipelines import SamplerPipeline
    mim_train("tests/configs/teacher_tiny.py", tmp_path / "teacher", "--cfg-options",
              "model.unet.sample_size=16", "train_dataloader.dataset.resolution=16",
              "model.unet.num_class_embeds=11", "model.class_dropout_prob=0.1")
    teacher, out = tmp_path / "teacher" / "step6", tmp_path / "result"
    run(["python", "tools/benchmark/dmd_quality.py", "--teacher", str(teacher),
         "--work-dir", str(tmp_path / "runs"), "--runs", "DMD2", "--seeds", "0-15",
         "--reference-seed-sets", "2", "--out", str(out), "--cfg-options",
         "train_cfg.max_iters=2"])
    result = json.loads((tmp_path / "result.json").read_text())
    assert [(r["model"], r["steps"]) for r in result["rows"]][-1] == ("DMD2", 1)
    assert result["runs"]["DMD2"]["export"].endswith("step2")

    pipe = load_pipeline(teacher)
    pipe = SamplerPipeline(unet=pipe.unet, scheduler=ode_scheduler(pipe.scheduler, "dpmpp"))
    classifier, _ = get_digits_classifier(16)
    real = torch.from_numpy(load_digits_uint8(16)[0]).float()[:, None] / 127.5 - 1
    labels = [s % 10 for s in range(32)]
    fds = [frechet_distance(classifier_features(generate(pipe, seeds, 64, labels=labels[:16],
                                                         progress=False), classifier),
                            classifier_features(real, classifier))
           for seeds in (range(16), range(16, 32))]
    assert result["rows"][0]["fd"] == pytest.approx(fds[0], rel=1e-3)
    assert result["reference_fd_seed_sets"] == pytest.approx(fds, rel=1e-3)
    assert "on 2 disjoint seed sets of 16" in (tmp_path / "result.md").read_text()


def test_dmd_benchmark_trains_only_runs_without_their_final_export(tmp_path, root,
                                                                   monkeypatch):
    """A run folder with an export short of the dumped config's max_iters is a
    run still training or stopped: refused, not evaluated as if finished."""
    monkeypatch.syspath_prepend(f"{root}/tools/benchmark")
    from dmd_quality import trained
    work = tmp_path / "dmd2_digits"
    assert not trained(work, "configs/dmd/dmd2_digits.py")
    (work / "step3").mkdir(parents=True)
    (work / "step3" / "model_index.json").write_text("{}")
    (work / "dmd2_digits.py").write_text("train_cfg = dict(max_iters=6)\n")
    with pytest.raises(RuntimeError, match=r"not the final one \(step6\).*--resume"):
        trained(work, "configs/dmd/dmd2_digits.py")
    (work / "step6").mkdir()
    (work / "step6" / "model_index.json").write_text("{}")
    assert trained(work, "configs/dmd/dmd2_digits.py")


def test_make_pairs_refuses_labels_for_an_unconditional_teacher(tiny_teacher, tmp_path):
    from diffengine_distill.apis.pairs import make_pairs
    with pytest.raises(ValueError, match="unconditional: leave --num-classes out"):
        make_pairs(str(tiny_teacher), str(tmp_path), range(4), 2, num_classes=10,
                   progress=False)
    meta = make_pairs(str(tiny_teacher), str(tmp_path / "ok"), range(4), 2, progress=False)
    assert meta["num_classes"] is None


def test_dmd2_sd15_config_phases_lr_and_gan_as_the_official_recipe(root):
    """configs/dmd/dmd2_sd15.py: LR 0 -> 1e-5 over 500 warm-up iterations, 1e-5
    until the GAN phase starts, then 5e-7; the GAN phase starts at that same
    iteration; 10 critic updates per generator update."""
    from mmengine.optim.scheduler import LinearLR, MultiStepLR
    cfg = Config.fromfile(f"{root}/configs/dmd/dmd2_sd15.py")
    m = cfg.model
    assert (m.critic_updates_per_generator, m.gan_generator_weight, m.gan_critic_weight) == \
        (10, 1e-3, 1e-2)
    start = m.gan_start_iter
    opt = torch.optim.AdamW([torch.zeros(1)], lr=cfg.optim_wrapper.generator.optimizer.lr)
    kinds = dict(LinearLR=LinearLR, MultiStepLR=MultiStepLR)
    scheds = [kinds[s.pop("type")](opt, **s) for s in map(dict, cfg.param_scheduler)]
    lrs = []
    for _ in range(start + 2):
        lrs.append(opt.param_groups[0]["lr"])
        for s in scheds:
            s.step()
    warm = torch.tensor(lrs[:500])
    assert lrs[0] == pytest.approx(1e-8) and (warm.diff() > 0).all()  # linear warm-up
    assert lrs[500] == pytest.approx(1e-5) and lrs[start - 1] == pytest.approx(1e-5)
    assert lrs[start] == pytest.approx(5e-7) and lrs[start + 1] == pytest.approx(5e-7)
    sdxl = Config.fromfile(f"{root}/configs/dmd/dmd2_sdxl.py").model
    assert (sdxl.generator_timestep, sdxl.gan_generator_weight, sdxl.gan_start_iter,
            sdxl.critic_updates_per_generator) == (399, 5e-3, 0, 5)
