"""Progressive distillation: the target against explicit DDIM steps, and a
two-stage run through mim with a mid-stage resume and diffusers reloads."""
import pytest
import torch
from diffusers import DDIMPipeline, DDIMScheduler, DDPMScheduler, UNet2DModel
from mmengine.config import Config

from conftest import mim_train
from diffengine_distill.apis.inference import generate
from diffengine_distill.diffusion import NoiseSchedule
from diffengine_distill.models.editors.progressive_distillation import pd_target, student_grid
from diffengine_distill.registry import MODELS

T = 1024


def toy_teacher(kind):
    """A fixed nonlinear 'network' so both computations see the same outputs."""
    def net(z, t):
        t = torch.as_tensor(t, dtype=z.dtype).reshape(-1, 1, 1, 1)
        return torch.tanh(z * (1 + t / T)) + 0.1 * torch.cos(t / 100)
    return net


def ddim_two_steps(net, kind, z, t, t_mid, s, alphas_cumprod):
    """Two DDIM steps done independently, by diffusers' DDIMScheduler on an
    integer grid (eta = 0, no clipping, final alpha = 1)."""
    sched = DDIMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2",
                          prediction_type=kind, clip_sample=False, set_alpha_to_one=True)
    assert torch.allclose(sched.alphas_cumprod.double(), alphas_cumprod)
    out = []
    for zi, ti, mi, si in zip(z, t.tolist(), t_mid.tolist(), s.tolist()):
        zi = zi[None]
        for a, b in ((ti, mi), (mi, si)):
            sched.num_inference_steps = T // round(a - b)  # prev_t = a - T // n
            zi = sched.step(net(zi, torch.tensor([a])), round(a), zi).prev_sample
        out.append(zi)
    return torch.cat(out)


@pytest.mark.parametrize("kind", ["v_prediction", "epsilon", "sample"])
@pytest.mark.parametrize("n", [8, 2, 1])
def test_pd_target_lands_on_two_teacher_ddim_steps(kind, n):
    torch.manual_seed(0)
    sched = DDPMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2")
    schedule = NoiseSchedule.from_scheduler(sched)
    idx = torch.tensor([1, n, max(1, n // 2)])  # i = 1 is the last step (to clean)
    t, t_mid, s = student_grid(T, n, idx)
    z = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    net = toy_teacher(kind)
    x_tilde, eps_tilde = pd_target(net, kind, schedule, z, t, t_mid, s)
    z_s = ddim_two_steps(net, kind, z.float(), t, t_mid, s, schedule.alphas_cumprod).double()
    # One student DDIM step with (x~, eps~) from z_t lands on the teacher's z_s.
    a_t, sig_t = [c.view(-1, 1, 1, 1) for c in schedule.alpha_sigma(t)]
    a_s, sig_s = [c.view(-1, 1, 1, 1) for c in schedule.alpha_sigma(s)]
    assert torch.allclose(a_t * x_tilde + sig_t * eps_tilde, z, atol=1e-9)
    assert torch.allclose(a_s * x_tilde + sig_s * eps_tilde, z_s, rtol=1e-4, atol=2e-5)
    # Last step: the target is the teacher's x0 at the mid point.
    assert torch.allclose(x_tilde[0], z_s[0], rtol=1e-4, atol=2e-5)


def test_pd_target_on_fractional_grid():
    """T = 1000 and N = 16: t = 62.5 i - 1 is fractional; checked against an
    explicit closed form with log-linear interpolation of alpha_bar."""
    torch.manual_seed(0)
    sched = DDPMScheduler(num_train_timesteps=1000)
    schedule = NoiseSchedule.from_scheduler(sched)
    t, t_mid, s = student_grid(1000, 16, torch.tensor([3, 16]))
    assert t[0] == 186.5 and t_mid[0] == 155.25 and s[0] == 124.0

    def alpha_sigma(time):
        log_ab = torch.cat([torch.zeros(1), sched.alphas_cumprod.double().log()])
        lo = int(time + 1)
        frac = time + 1 - lo
        ab = (log_ab[lo] * (1 - frac) + log_ab[min(lo + 1, 1000)] * frac).exp()
        return ab.sqrt(), (1 - ab).sqrt()

    net = toy_teacher("v_prediction")
    z = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    x_tilde, _ = pd_target(net, "v_prediction", schedule, z, t, t_mid, s)
    for b in range(2):
        zb = z[b:b + 1]
        for a, c in ((t[b], t_mid[b]), (t_mid[b], s[b])):
            (aa, sa), (ac, sc) = alpha_sigma(float(a)), alpha_sigma(float(c))
            v = net(zb, a.reshape(1))
            x0, eps = aa * zb - sa * v, sa * zb + aa * v
            zb = ac * x0 + sc * eps
        (at, st), (as_, ss) = alpha_sigma(float(t[b])), alpha_sigma(float(s[b]))
        expected = (zb - ss / st * z[b:b + 1]) / (as_ - ss / st * at)
        assert torch.allclose(x_tilde[b:b + 1], expected, atol=1e-10)


@pytest.fixture(scope="module")
def pd_runs(tiny_teacher, tmp_path_factory):
    base = tmp_path_factory.mktemp("pd")
    teacher = [f"model.unet.path={tiny_teacher}", f"model.scheduler.path={tiny_teacher}"]
    cfg = "tests/configs/pd_tiny.py"
    mim_train(cfg, base / "full", "--cfg-options", *teacher)
    return base / "full"


def test_two_stages_export_and_reload(pd_runs, root):
    full = pd_runs
    assert (full / "stage_1_4steps" / "model_index.json").is_file()
    assert (full / "stage_2_2steps" / "model_index.json").is_file()
    ckpt = torch.load(full / "iter_6.pth", map_location="cpu", weights_only=True)
    sd = ckpt["state_dict"]
    assert int(sd["stage"]) == 2 and int(sd["student_steps"]) == 2
    # Stage 2's teacher is stage 1's exported student.
    stage1 = UNet2DModel.from_pretrained(full / "stage_1_4steps" / "unet").state_dict()
    for k, v in stage1.items():
        assert torch.equal(sd["teacher_unet." + k], v), k
    # Adam was reset at the stage switch: 3 steps taken in stage 2, not 6.
    assert all(int(s["step"]) == 3 for s in ckpt["optimizer"]["state"].values())

    pipe = DDIMPipeline.from_pretrained(full / "stage_2_2steps")
    student = {k[5:]: v for k, v in sd.items() if k.startswith("unet.")}
    for k, v in pipe.unet.state_dict().items():
        assert torch.equal(student[k], v), k
    cfg = Config.fromfile(f"{root}/tests/configs/pd_tiny.py")
    cfg.model.unet.path = cfg.model.scheduler.path = str(full / "stage_2_2steps")
    model = MODELS.build(cfg.model)
    model.load_state_dict(sd)
    seeds = range(6)
    ours = model.sample(seeds, model.default_steps)
    theirs = generate(pipe, seeds, 2, progress=False)
    assert (ours - theirs).abs().max() < 1e-5


class FakeRunner:
    def __init__(self, model, max_iters):
        import logging
        self.model, self.max_iters, self.logger = model, max_iters, logging.getLogger("t")
        self.optim_wrapper = type("O", (), {"param_groups": [{"lr": 1.0}]})()


def tiny_pd(teacher_steps=8):
    return MODELS.build(dict(
        type="ProgressiveDistillation", teacher_steps=teacher_steps,
        unet=dict(type="UNet2DModel", sample_size=8, in_channels=1, out_channels=1,
                  layers_per_block=1, block_out_channels=(8, 8), norm_num_groups=4,
                  down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2),
        scheduler=dict(type="DDPMScheduler", num_train_timesteps=1024)))


@pytest.mark.parametrize("kwargs, match", [
    (dict(iters_per_stage=0), "iters_per_stage must be > 0"),
    (dict(end_steps=0), "end_steps must be >= 1"),
    (dict(lr_decay="cosine"), "lr_decay"),
    (dict(stage0_iters=0), "stage0_iters must be > 0"),
])
def test_bad_plan_arguments(kwargs, match):
    from diffengine_distill.engine.hooks import ProgressiveDistillationHook
    with pytest.raises(ValueError, match=match):
        ProgressiveDistillationHook(**kwargs)


def test_bad_plans_fail_before_training():
    from diffengine_distill.engine.hooks import ProgressiveDistillationHook
    with pytest.raises(ValueError, match="teacher_steps / end_steps must be a power of two"):
        ProgressiveDistillationHook(end_steps=3, iters_per_stage=2).before_train(
            FakeRunner(tiny_pd(8), 4))
    with pytest.raises(ValueError, match=r"set train_cfg.max_iters=4 \(it is 9\)"):
        ProgressiveDistillationHook(end_steps=2, iters_per_stage=2).before_train(
            FakeRunner(tiny_pd(8), 9))
    with pytest.raises(ValueError, match="cannot be halved"):
        tiny_pd(7)
    ProgressiveDistillationHook(end_steps=2, iters_per_stage=2).before_train(
        FakeRunner(tiny_pd(8), 4))  # a valid plan passes


def test_sigkill_mid_stage_then_resume_matches(pd_runs, tiny_teacher, tmp_path):
    from conftest import kill_then_resume
    teacher = [f"model.unet.path={tiny_teacher}", f"model.scheduler.path={tiny_teacher}"]
    killed, log = kill_then_resume("tests/configs/pd_tiny.py", tmp_path, *teacher,
                                   when="last_checkpoint")  # written after iter_2.pth
    assert killed and "Advance dataloader 2 steps" in log  # mid stage 1 (iters_per_stage 3)
    a = torch.load(pd_runs / "iter_6.pth", map_location="cpu", weights_only=True)
    b = torch.load(tmp_path / "iter_6.pth", map_location="cpu", weights_only=True)
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    assert (tmp_path / "stage_2_2steps" / "model_index.json").is_file()


# -- the student at iteration 0, and the student side of forward ---------------------
TINY_UNET = dict(type="UNet2DModel", sample_size=8, in_channels=1, out_channels=1,
                 layers_per_block=1, block_out_channels=(8, 8), norm_num_groups=4,
                 down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2)
TEACHERS = dict(  # google/ddpm-* (eps, 1000 linear betas) and the digits teacher (v, cosine)
    epsilon=dict(type="DDPMScheduler", num_train_timesteps=1000, prediction_type="epsilon"),
    v_prediction=dict(type="DDPMScheduler", num_train_timesteps=1024,
                      beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction"))


def pd_model(teacher_type, **kwargs):
    torch.manual_seed(0)
    return MODELS.build(dict(type="ProgressiveDistillation", teacher_steps=8, unet=TINY_UNET,
                             scheduler=TEACHERS[teacher_type], **kwargs))


def ddim_loop(unet, scheduler, steps, seed=0):
    """An unclipped DDIM run (no [0, 1] clamp of the pipeline's image output)."""
    scheduler.set_timesteps(steps)
    z = torch.randn((3, 1, 8, 8), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for t in scheduler.timesteps:
            z = scheduler.step(unet(z, t).sample, t, z).prev_sample
    return z


@pytest.mark.parametrize("teacher_type", ["epsilon", "v_prediction"])
def test_student_starts_as_the_teacher(teacher_type):
    """Iteration 0: the export (student UNet + its scheduler) samples like the
    teacher's own DDIM on the student's 4-step grid."""
    model = pd_model(teacher_type)
    assert model.prediction_type == teacher_type and model.first_stage == 1
    teacher = DDIMScheduler.from_config(model.scheduler.config, timestep_spacing="trailing",
                                        set_alpha_to_one=True, clip_sample=False)
    expected = ddim_loop(model.teacher_unet, teacher, 4)
    student = ddim_loop(model.bare_unet, model.export_scheduler(), 4)
    assert expected.abs().mean() > 0.5  # an epsilon net read as v would be far off
    assert (student - expected).abs().max() < 1e-4


@pytest.mark.parametrize("clip", [None, 1.0])
@pytest.mark.parametrize("weighting", [None, "truncated_snr"])
def test_v_student_of_an_eps_teacher_first_learns_the_teachers_v(clip, weighting):
    """Stage 0 (conversion): the target at any t is the eps teacher's output as v
    (its x0_hat clipped to [-1, 1], eps recomputed, with stage0_clip_x0=1), the
    student reads z_t at t. Default loss: the teacher's own eps-MSE, the
    student's v read as eps = alpha v + sigma z_t; truncated_snr: weight
    max(SNR_t, 1) / (SNR_t + 1) on the v-MSE."""
    loss_cfg = weighting and dict(type="DiffusionLoss", weighting=weighting)
    model = pd_model("epsilon", student_prediction_type="v_prediction", stage0_clip_x0=clip,
                     conversion_loss=loss_cfg)
    assert model.first_stage == 0 and int(model.student_steps) == 8
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    with torch.no_grad():
        model.unet.conv_out.bias.add_(0.3)  # a student that differs from the teacher
        model.teacher_unet.conv_out.bias.add_(0.05)  # x0_hat beyond [-1, 1] at high t
    torch.manual_seed(7)
    loss = model(x, None)["loss"]
    torch.manual_seed(7)
    t = torch.randint(0, 1000, (3,))
    noise = torch.randn(3, 1, 8, 8)
    ab = model.scheduler.alphas_cumprod[t].double().view(-1, 1, 1, 1)
    a, s = ab.sqrt(), (1 - ab).sqrt()
    z = (a * x + s * noise).float()
    with torch.no_grad():
        eps = model.teacher_unet(z, t).sample.double()
        x0 = (z.double() - s * eps) / a
        if clip:
            assert x0.abs().max() > 1.5  # the clip acts
            x0 = x0.clamp(-clip, clip)
            eps = (z.double() - a * x0) / s
        v_target = a * eps - s * x0
        pred = model.unet(z, t).sample.double()
    if weighting is None:
        eps_student = a * pred + s * z.double()
        expected = (eps_student - eps).square().flatten(1).mean(1).mean()
    else:
        snr = (ab / (1 - ab)).flatten()
        weight = snr.clamp_min(1) / (snr + 1)
        expected = (weight * (pred - v_target).square().flatten(1).mean(1)).mean()
    torch.testing.assert_close(loss.double(), expected, rtol=1e-4, atol=1e-7)


def test_conversion_loss_refused_where_nothing_is_converted():
    with pytest.raises(ValueError, match="conversion_loss"):
        pd_model("epsilon", conversion_loss=dict(type="DiffusionLoss", weighting="snr"))


def test_halving_stage_loss_reads_the_student_at_t_with_the_snr_of_t():
    """An eps student (same type as its teacher) at stage 1, N = 4 on T = 1000:
    two explicit teacher DDIM steps give x~, the student's eps at t is compared
    with eps~ under max(SNR_t, 1) / SNR_t (= max(eps-MSE, x-MSE))."""
    model = pd_model("epsilon")
    with torch.no_grad():
        model.unet.conv_out.bias.add_(0.3)
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    torch.manual_seed(3)
    loss = model(x, None)["loss"]
    torch.manual_seed(3)
    i = torch.randint(1, 5, (3,))
    noise = torch.randn(3, 1, 8, 8)
    ac = torch.cat([torch.ones(1), model.scheduler.alphas_cumprod]).double()  # index t + 1
    t, mid, s_ = i * 250 - 1, i * 250 - 126, i * 250 - 251

    def coef(time):
        ab = ac[time + 1].view(-1, 1, 1, 1)
        return ab.sqrt(), (1 - ab).sqrt()
    (a_t, s_t), (a_m, s_m), (a_s, s_s) = coef(t), coef(mid), coef(s_)
    z = (a_t * x + s_t * noise).float()
    with torch.no_grad():
        zz = z.double()
        for (a, s), (a2, s2), time in (((a_t, s_t), (a_m, s_m), t), ((a_m, s_m), (a_s, s_s), mid)):
            eps = model.teacher_unet(zz.float(), time.float()).sample.double()
            zz = a2 * (zz - s * eps) / a + s2 * eps
        x_tilde = (zz - s_s / s_t * z) / (a_s - s_s / s_t * a_t)
        eps_tilde = (z - a_t * x_tilde) / s_t
        pred = model.unet(z, t.float()).sample.double()
    snr = (a_t / s_t).square().flatten()
    expected = (snr.clamp_min(1) / snr * (pred - eps_tilde).square().flatten(1).mean(1)).mean()
    torch.testing.assert_close(loss.double(), expected, rtol=1e-4, atol=1e-7)


def test_eps_student_refused_where_alpha_at_t_minus_1_vanishes():
    with pytest.raises(ValueError, match="student_prediction_type='v_prediction'"):
        pd_model("v_prediction", student_prediction_type="epsilon")


def test_stage0_clip_must_be_a_positive_range():
    with pytest.raises(ValueError, match="stage0_clip_x0=0"):
        pd_model("epsilon", student_prediction_type="v_prediction", stage0_clip_x0=0)


def test_lr_decays_linearly_to_zero_within_each_stage():
    from diffengine_distill.engine.hooks import ProgressiveDistillationHook
    model = pd_model("v_prediction")
    runner = FakeRunner(model, 8)
    runner.optim_wrapper.optimizer = torch.optim.SGD([torch.zeros(1)], lr=1.0)
    hook = ProgressiveDistillationHook(end_steps=1, iters_per_stage=4)
    hook.before_train(runner)
    lrs, stages = [], []
    for it in range(8):
        runner.iter = it
        hook.before_train_iter(runner, it)
        lrs.append(runner.optim_wrapper.param_groups[0]["lr"])
        stages.append(int(model.stage))
    assert lrs == [1.0, 0.75, 0.5, 0.25] * 2 and stages == [1] * 4 + [2] * 4


def test_stage0_iters_lengthens_only_the_conversion_stage(tmp_path):
    """An eps teacher, a v student: stage 0 runs 6 iterations (LR 1 - k/6), the
    halvings 4 each; exports after iterations 6, 10 and 14 (1-based)."""
    from diffengine_distill.engine.hooks import ProgressiveDistillationHook
    model = pd_model("epsilon", student_prediction_type="v_prediction")
    runner = FakeRunner(model, 14)
    runner.work_dir, runner.cfg = str(tmp_path), type("C", (), {"filename": "pd.py"})()
    runner.optim_wrapper.optimizer = torch.optim.SGD([torch.zeros(1)], lr=1.0)
    hook = ProgressiveDistillationHook(end_steps=2, iters_per_stage=4, stage0_iters=6)
    hook.before_train(runner)
    lrs, stages = [], []
    for it in range(14):
        runner.iter = it
        hook.before_train_iter(runner, it)
        lrs.append(round(runner.optim_wrapper.param_groups[0]["lr"], 6))
        stages.append(int(model.stage))
        hook.after_train_iter(runner, it)
    stage0 = [round(1 - k / 6, 6) for k in range(6)]
    assert lrs == stage0 + [1.0, 0.75, 0.5, 0.25] * 2
    assert stages == [0] * 6 + [1] * 4 + [2] * 4
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "stage_0_8steps", "stage_1_4steps", "stage_2_2steps"]
    runner.max_iters = 15
    with pytest.raises(ValueError, match="stage 0 of 6 and 2 halvings of 4 iterations: "
                                         "set train_cfg.max_iters=14"):
        hook.before_train(runner)


def test_eps_digits_teacher_trains_and_its_pd_student_starts_as_it(tmp_path):
    """configs/teachers/ddpm_eps_digits.py through mim (tiny overrides, as
    teacher_tiny.py): its export is an eps model on google/ddpm's 1000 linear
    betas, and a PD student of that export samples like it at iteration 0."""
    mim_train("configs/teachers/ddpm_eps_digits.py", tmp_path, "--cfg-options",
              "model.unet.sample_size=8", "model.unet.block_out_channels=(8,16)",
              "model.unet.down_block_types=(DownBlock2D,AttnDownBlock2D)",
              "model.unet.up_block_types=(AttnUpBlock2D,UpBlock2D)",
              "model.unet.norm_num_groups=4", "model.unet.attention_head_dim=8",
              "model.sampler.num_inference_steps=4", "train_dataloader.batch_size=16",
              "train_dataloader.dataset.resolution=8", "train_cfg.max_iters=6",
              "custom_hooks.1.interval=6", "custom_hooks.2.interval=6",
              "custom_hooks.2.num_images=4", "default_hooks.checkpoint.interval=6")
    pipe = DDIMPipeline.from_pretrained(tmp_path / "step6")
    assert pipe.scheduler.config.prediction_type == "epsilon"
    google = DDPMScheduler(num_train_timesteps=1000)  # google/ddpm-*'s schedule
    assert torch.allclose(pipe.scheduler.alphas_cumprod, google.alphas_cumprod)
    model = MODELS.build(dict(type="ProgressiveDistillation", teacher_steps=8,
                              unet=dict(type="pretrained", path=str(tmp_path / "step6"),
                                        subfolder="unet"),
                              scheduler=dict(type="pretrained", path=str(tmp_path / "step6"))))
    assert model.prediction_type == "epsilon" and model.first_stage == 1
    expected = ddim_loop(pipe.unet, pipe.scheduler, 4)
    assert (ddim_loop(model.bare_unet, model.export_scheduler(), 4) - expected).abs().max() < 1e-4
