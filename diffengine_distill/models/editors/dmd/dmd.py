"""Distribution Matching Distillation: DMD (Yin et al., CVPR 2024) and the
DMD2 refinements (Yin et al., NeurIPS 2024) for diffusers UNets."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from mmengine.model import is_model_wrapper
from torch import Tensor

from diffengine_distill.registry import MODELS

from ...builders import build_scheduler, build_unet, load_vae
from ....diffusion import (check_prediction_type, ddim_step, per_sample, prediction_target,
                           split_prediction)
from ...perceptual import build_lpips, lpips_distance
from ..base import BaseDiffusionModel
from ..conditioning import cat_conditions
from ..sample_rng import GlobalRNG, batch_rng
from .critic import DMDCritic, frozen

REGRESSION_LOSSES = ("lpips", "l2", "l1")


def dm_gradient(x: Tensor, x0_real: Tensor, x0_fake: Tensor) -> Tensor:
    """DMD's distribution-matching gradient on generator samples ``x``:
    (x0_fake - x0_real) / mean|x - x0_real| per sample, NaN/Inf zeroed."""
    weight = (x - x0_real).abs().flatten(1).mean(1)
    return torch.nan_to_num((x0_fake - x0_real) / per_sample(weight, x))


def dm_loss(x: Tensor, grad: Tensor) -> Tensor:
    """0.5 * MSE(x, (x - grad).detach()): its gradient w.r.t. x is grad / x.numel()."""
    return 0.5 * F.mse_loss(x.float(), (x - grad).detach().float())


def generator_timesteps(num_train_timesteps: int, num_steps: int) -> list[int]:
    """The timesteps of a k-step generator: diffusers' LCMScheduler grid with
    ``original_inference_steps=k`` (DMD2's [999, 749, 499, 249] for T=1000, k=4)."""
    stride = num_train_timesteps // num_steps
    return [(num_steps - i) * stride - 1 for i in range(num_steps)]


def _rng(rng, x: Tensor):
    """The given per-sample draws, or the process's RNG (calls outside train_step)."""
    return rng or GlobalRNG(x.shape[0], x.device)


@MODELS.register_module()
class DMD(BaseDiffusionModel):
    """A one-step (or k-step) generator trained by distribution matching.

    Three networks start as the teacher (``unet``): the frozen real score,
    the trainable fake score (``critic``) and the generator (``unet`` itself,
    which is what exports hold). ``train_step`` updates the generator (every
    ``critic_updates_per_generator``-th iteration), with the critic frozen,
    then the critic on the detached generator samples of the same iteration.

    Args:
        num_generator_steps: 1 (pure noise at t = T-1 -> x0 in one call) or k
            for DMD2's multi-step generator on LCM's k timesteps, trained with
            backward simulation and sampled with LCM-style re-noising.
        dm_t_range: DM loss timesteps, uniform integers in
            [int(lo T), int(hi T)] (papers: 0.02, 0.98).
        real_guidance_scale: classifier-free guidance of the real score only
            (1 = none); needs a teacher trained with a null class.
        null_class: that class label (default: the last, num_class_embeds - 1).
        critic_loss: denoising loss of the fake score on generator samples,
            over all t; ``DiffusionLoss`` with ``snr`` weighting is the eps-MSE
            of DDPM-style teachers.
        dm_weight: weight of the distribution-matching loss (1); 0 with a
            regression weight is a regression-only pre-training on teacher ODE
            pairs (DMD2's SDXL generator starts from ~2k such iterations); the
            critic is then not trained.
        generator_init: an export folder whose UNet initialises the generator
            (e.g. that pre-training's); the real and fake scores stay the teacher.
        regression_weight: DMD's lambda_reg (0.25) on the regression loss
            against teacher ODE pairs (``PairsDataset``); 0 disables it (DMD2).
        regression_loss: ``lpips`` (the paper; needs the lpips package and
            local weights), or the explicit fallbacks ``l2`` / ``l1``. For
            text-to-image teachers the pairs are latents: LPIPS compares them
            decoded to pixels (as the paper), ``l2`` / ``l1`` the latents.
        regression_vae: the decoder of that LPIPS, e.g. the paper's tiny VAE
            ``dict(path="madebyollin/taesd", class_name="AutoencoderTiny")``;
            None uses the base model's VAE (the data preprocessor's).
        critic_updates_per_generator: DMD2's two-time-scale ratio (5 there,
            1 in DMD).
        gan_generator_weight, gan_critic_weight: DMD2's GAN term (0 disables;
            the paper: generator 1e-3 (SD 1.5) to 5e-3 (SDXL), critic 1e-2;
            a generator weight needs a critic weight): a classifier on the critic's
            mid-block features, softplus losses, real and fake images noised
            at t ~ U{0..gan_t_max}. Real images are the training batch.
        gan_t_max: highest GAN timestep (default T-1).
        gan_start_iter: the GAN terms are off before this iteration (DMD2's SD
            1.5 recipe: a first phase without GAN, then GAN on; change the LR
            there with a MultiStepLR milestone). Resumable: it reads the model's
            ``iteration`` buffer.
        generator_timestep: the one-step generator's input timestep (default
            T-1): pure noise goes in labelled with t and x0 is read at t, as
            DMD2's SDXL ``conditioning_timestep`` 399. The export samples it
            with DDIM (leading spacing, steps_offset = t, one step).
        generator_prediction_type: how the generator's output is read
            (epsilon | v_prediction | sample; default: the teacher's, so the
            generator starts as the teacher's sampler). The real and fake
            scores keep the teacher's. An eps output read at t = T-1 of DDPM's
            linear schedule is scaled by 1/alpha = 157 on its way to x0 (SD's
            schedule: 15): there ``v_prediction`` (x0 = alpha z - sigma v)
            keeps the one-step generator well-conditioned, as progressive
            distillation's v student. The export is sampled with this type.
        seed: seeds the multi-step generator's simulated step index, drawn as
            a function of (seed, iteration) so every process and a resumed run
            agree, and the per-sample noise and timesteps (keyed by seed,
            dataset index and iteration; see ``sample_rng``).
    """

    def __init__(self, *args, num_generator_steps: int = 1,
                 dm_t_range: tuple[float, float] = (0.02, 0.98),
                 real_guidance_scale: float = 1.0, null_class: int | None = None,
                 critic_loss: dict | None = None, regression_weight: float = 0.25,
                 regression_loss: str = "lpips", regression_vae: dict | None = None,
                 critic_updates_per_generator: int = 1, dm_weight: float = 1.0,
                 generator_init: str | None = None,
                 gan_generator_weight: float = 0.0, gan_critic_weight: float = 0.0,
                 gan_t_max: int | None = None, gan_start_iter: int = 0,
                 generator_timestep: int | None = None,
                 generator_prediction_type: str | None = None, seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        # The teacher's type reads the real and fake scores; self.prediction_type
        # (exports, samplers, metadata) becomes the generator's.
        self.score_prediction_type = self.prediction_type
        self.prediction_type = check_prediction_type(generator_prediction_type
                                                     or self.prediction_type)
        T = self.noise_schedule.num_train_timesteps
        self.num_generator_steps = int(num_generator_steps)
        if not 1 <= self.num_generator_steps <= T:
            raise ValueError(f"num_generator_steps={num_generator_steps} must be in 1..{T}.")
        self.timesteps = generator_timesteps(T, self.num_generator_steps)
        if generator_timestep is not None:
            if self.num_generator_steps != 1 or not 0 <= generator_timestep < T:
                raise ValueError(f"generator_timestep={generator_timestep} is the input "
                                 f"timestep of a one-step generator, in 0..{T - 1}.")
            self.timesteps = [int(generator_timestep)]
        lo, hi = (int(f * T) for f in dm_t_range)
        if not 0 <= lo <= hi < T:
            raise ValueError(f"dm_t_range={tuple(dm_t_range)} must be fractions 0 <= lo <= hi "
                             "< 1 of the training timesteps (papers: (0.02, 0.98)).")
        self.dm_t_range = (lo, hi)
        self.real_guidance_scale = float(real_guidance_scale)
        self.check_guidance_scale(self.real_guidance_scale, "model.real_guidance_scale")
        self.null_class = self.null_class_label(null_class)
        self.critic_loss = MODELS.build(critic_loss or dict(type="DiffusionLoss",
                                                            weighting="snr"))
        self.regression_weight = float(regression_weight)
        self.dm_weight = float(dm_weight)
        if self.dm_weight < 0 or (self.dm_weight == 0 and not self.regression_weight):
            raise ValueError(f"dm_weight={dm_weight} must be >= 0, and 0 (regression-only "
                             "pre-training) needs model.regression_weight > 0.")
        if regression_loss not in REGRESSION_LOSSES:
            raise ValueError(f"regression_loss must be one of {REGRESSION_LOSSES}, "
                             f"got {regression_loss!r}.")
        if self.regression_weight and self.num_generator_steps > 1:
            raise ValueError("The regression loss trains a one-step generator (DMD); multi-"
                             "step generators (DMD2) use none: set model.regression_weight=0.")
        self.regression_loss = regression_loss
        if self.regression_weight and regression_loss == "lpips":
            lpips = build_lpips("regression_loss", "model.regression_loss='l2'")
        else:
            lpips = None
        object.__setattr__(self, "lpips", lpips)  # frozen: kept out of checkpoints
        decoder = None
        if lpips is not None and self.text_conditioned:
            decoder = load_vae(**regression_vae) if regression_vae else \
                self.data_preprocessor.vae
            decoder.eval().requires_grad_(False)
        object.__setattr__(self, "regression_decoder", decoder)
        self.critic_updates_per_generator = int(critic_updates_per_generator)
        if self.critic_updates_per_generator < 1 or \
                self.critic_updates_per_generator != critic_updates_per_generator:
            raise ValueError(f"critic_updates_per_generator={critic_updates_per_generator} "
                             "must be an integer >= 1 (DMD: 1, DMD2: 5).")
        self.gan_weights = (float(gan_generator_weight), float(gan_critic_weight))
        if min(self.gan_weights) < 0:
            raise ValueError(f"GAN weights must be >= 0, got gan_generator_weight="
                             f"{gan_generator_weight}, gan_critic_weight={gan_critic_weight}.")
        if self.gan_weights[0] > 0 and self.gan_weights[1] == 0:
            raise ValueError(f"gan_generator_weight={gan_generator_weight} with gan_critic_weight"
                             "=0 trains the generator against an untrained GAN head: set model."
                             "gan_critic_weight (DMD2: 1e-2) or gan_generator_weight=0.")
        self.gan = max(self.gan_weights) > 0
        self.gan_start_iter = int(gan_start_iter)
        if self.gan_start_iter < 0 or (self.gan_start_iter and not self.gan):
            raise ValueError(f"gan_start_iter={gan_start_iter} must be >= 0 and needs GAN "
                             "weights (model.gan_generator_weight, gan_critic_weight).")
        self.gan_t_max = T - 1 if gan_t_max is None else int(gan_t_max)
        if not 0 <= self.gan_t_max < T:
            raise ValueError(f"gan_t_max={gan_t_max} must be in 0..{T - 1}.")
        self.seed = int(seed)

        self.teacher_unet = self.frozen_teacher()
        fake_score = copy.deepcopy(self.unet)
        if self.lora_config is not None:  # a LoRA generator; the fake score trains in full
            fake_score.delete_adapters("default")
            fake_score.requires_grad_(True)
        self.critic = DMDCritic(fake_score, gan=self.gan)
        if self.dm_weight == 0 and self.gan:
            raise ValueError("A regression-only pre-training (dm_weight=0) trains no critic: "
                             "set model.gan_generator_weight=gan_critic_weight=0.")
        if generator_init:
            if self.lora_config is not None:
                raise ValueError("model.generator_init loads a whole UNet; a LoRA generator "
                                 "cannot take it (remove model.lora_config).")
            source = build_unet(dict(type="pretrained", path=generator_init, subfolder="unet"))
            self.bare_unet.load_state_dict(source.state_dict())
        # Persistent: the TTUR phase and the simulated step depend on it.
        self.register_buffer("iteration", torch.tensor(0))

    # -- networks ----------------------------------------------------------------
    @property
    def generator(self):
        """The trained UNet (``optim_wrapper.generator`` optimises it)."""
        return self.unet

    @property
    def bare_critic(self) -> DMDCritic:
        return self.critic.module if is_model_wrapper(self.critic) else self.critic

    @property
    def gan_on(self) -> bool:
        """The GAN phase has begun (``gan_start_iter``)."""
        return self.gan and int(self.iteration) >= self.gan_start_iter

    @property
    def gan_generator_weight(self) -> float:
        return self.gan_weights[0] if self.gan_on else 0.0

    @property
    def gan_critic_weight(self) -> float:
        return self.gan_weights[1] if self.gan_on else 0.0

    def x0(self, out: Tensor, z: Tensor, t: Tensor, prediction_type: str | None = None) -> Tensor:
        """x0_hat from a UNet output at (possibly per-sample) integer t, in fp32;
        read as a score (the teacher's type) unless told otherwise."""
        alpha, sigma = (c.float() for c in self.noise_schedule.alpha_sigma(t))
        return split_prediction(out.float(), z.float(), alpha, sigma,
                                prediction_type or self.score_prediction_type)[0]

    def generator_x0(self, unet, z: Tensor, t: int, labels) -> Tensor:
        t = torch.full((z.shape[0],), t, device=z.device, dtype=torch.long)
        return self.x0(self.unet_forward(unet, z, t, labels), z, t, self.prediction_type)

    def real_x0(self, z: Tensor, t: Tensor, labels) -> Tensor:
        """The teacher's x0_hat, with CFG on the real score when asked."""
        return self.x0(self.guided_forward(self.teacher_unet, z, t, labels,
                                           self.real_guidance_scale, self.null_class), z, t)

    def noised(self, x: Tensor, t: Tensor, rng=None) -> Tensor:
        alpha, sigma = (c.to(x) for c in self.noise_schedule.alpha_sigma(t))
        noise = _rng(rng, x).randn(*x.shape[1:]).to(x)
        return ddim_step(x, noise, alpha, sigma)

    def draw_step_index(self) -> int:
        """The multi-step generator's simulated step this iteration (all ranks agree)."""
        if self.num_generator_steps == 1:
            return 0
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.iteration))
        return int(torch.randint(self.num_generator_steps, (), generator=gen))

    def simulate(self, noise: Tensor, labels, index: int, rng=None) -> Tensor:
        """DMD2's backward simulation: the generator's own noisy sample at
        ``timesteps[index]`` (earlier steps without grad, x0 re-noised with
        fresh noise), i.e. what LCM-style sampling feeds it there."""
        z = noise
        with torch.no_grad():
            for j in range(index):
                x0 = self.generator_x0(self.unet, z, self.timesteps[j], labels)
                z = self.noised(x0, torch.full((z.shape[0],), self.timesteps[j + 1],
                                               device=z.device), rng)
        return z

    @torch.no_grad()
    def student_sample(self, seeds, labels=None) -> Tensor:
        """The training-time generator from per-seed noise, drawn in the order
        the exported pipeline draws it (initial noise, then one re-noise per
        later step): the export must reproduce these images."""
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        shape = (1, self.bare_unet.config.in_channels, *self._sample_size())
        device = next(self.bare_unet.parameters()).device
        z = torch.cat([torch.randn(shape, generator=g) for g in gens]).to(device)
        labels = None if labels is None else torch.as_tensor(labels, device=device).long()
        for j, t in enumerate(self.timesteps):
            x0 = self.generator_x0(self.bare_unet, z, t, labels)
            if j + 1 < len(self.timesteps):
                noise = torch.cat([torch.randn(shape, generator=g) for g in gens]).to(device)
                alpha, sigma = (c.float() for c in self.noise_schedule.alpha_sigma(self.timesteps[j + 1]))
                z = ddim_step(x0, noise, alpha, sigma)
        return x0

    def _sample_size(self) -> tuple[int, int]:
        size = self.bare_unet.config.sample_size
        return (size, size) if isinstance(size, int) else tuple(size)

    # -- losses -----------------------------------------------------------------
    def distribution_matching_loss(self, x: Tensor, labels, rng=None) -> tuple[Tensor, dict]:
        lo, hi = self.dm_t_range
        rng = _rng(rng, x)
        with torch.no_grad():
            t = rng.randint(lo, hi + 1)
            z = self.noised(x.detach().float(), t, rng)
            x0_real = self.real_x0(z, t, labels)
            x0_fake = self.x0(self.bare_critic(z, t, labels)[0], z, t)
            grad = dm_gradient(x.detach().float(), x0_real, x0_fake)
        return dm_loss(x, grad), dict(dm_grad_norm=grad.flatten(1).norm(dim=1).mean())

    def decode(self, latents: Tensor) -> Tensor:
        """Latents -> pixels in [-1, 1] through the regression decoder (with grad)."""
        vae = self.regression_decoder.to(latents.device)
        return vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample.float()

    def regression(self, x: Tensor, target: Tensor) -> Tensor:
        if self.regression_loss == "lpips":
            if self.regression_decoder is None:
                return lpips_distance(self.lpips, x, target).mean()
            with torch.no_grad():
                target = self.decode(target)
            # Decoded SD images at their own size, as DMD2's SD regression code.
            return lpips_distance(self.lpips, self.decode(x), target, size=None).mean()
        diff = x.float() - target.float()
        per_sample_loss = diff.square() if self.regression_loss == "l2" else diff.abs()
        return per_sample_loss.flatten(1).mean(1).mean()

    def gan_timesteps(self, n: int, device, rng=None) -> Tensor:
        return (rng or GlobalRNG(n, device)).randint(0, self.gan_t_max + 1)

    def generator_losses(self, x: Tensor, labels, x_ref: Tensor | None,
                         y_ref: Tensor | None, rng=None) -> tuple[dict, dict]:
        """(losses, logged statistics) of the generator update."""
        rng = _rng(rng, x)
        losses, stats = {}, {}
        if self.dm_weight:
            dm, stats = self.distribution_matching_loss(x, labels, rng)
            losses["loss_dm"] = self.dm_weight * dm
        if x_ref is not None:
            losses["loss_regression"] = self.regression_weight * self.regression(x_ref, y_ref)
        if self.gan_generator_weight:
            t = self.gan_timesteps(x.shape[0], x.device, rng)
            logits = self.bare_critic(self.noised(x.float(), t, rng), t, labels,
                                      with_logits=True)[1]
            losses["loss_gan_generator"] = self.gan_generator_weight * F.softplus(-logits).mean()
        return losses, stats

    def critic_losses(self, x: Tensor, labels, real: Tensor | None, rng=None) -> dict:
        """The fake score's denoising loss on detached generator samples over all
        t (+ DMD2's classifier loss), in one critic call."""
        n, T = x.shape[0], self.noise_schedule.num_train_timesteps
        rng = _rng(rng, x)
        t = rng.randint(0, T)
        noise = rng.randn(*x.shape[1:]).to(x)
        alpha, sigma = (c.to(x) for c in self.noise_schedule.alpha_sigma(t))
        z, ts, lbl = [ddim_step(x, noise, alpha, sigma)], [t], [labels]
        if self.gan_critic_weight:
            for images in (x, real):
                t_gan = self.gan_timesteps(n, x.device, rng)
                z.append(self.noised(images.float(), t_gan, rng))
                ts.append(t_gan)
                lbl.append(labels)
        out, logits = self.critic(torch.cat(z), torch.cat(ts), cat_conditions(lbl),
                                  with_logits=self.gan_critic_weight > 0)
        target = prediction_target(x, noise, alpha, sigma, self.score_prediction_type)
        losses = dict(loss_critic=self.critic_loss(out[:n], target, self.noise_schedule.snr(t),
                                                   self.score_prediction_type))
        if self.gan_critic_weight:
            fake, real_logits = logits[n:2 * n], logits[2 * n:]
            losses["loss_gan_critic"] = self.gan_critic_weight * (
                F.softplus(fake).mean() + F.softplus(-real_logits).mean())
        return losses

    # -- training ---------------------------------------------------------------
    def train_step(self, data, optim_wrapper) -> dict:
        data = self.data_preprocessor(data, True)
        images = data["inputs"]
        labels = self.check_batch(images, data["data_samples"])
        ref_noise = data["data_samples"].get("noise")
        size = self._sample_size()
        if tuple(images.shape[-2:]) != size:
            raise ValueError(
                f"The training images are {images.shape[-2]}x{images.shape[-1]} but the "
                f"teacher UNet samples {size[0]}x{size[1]}: resize the dataset (or remake the "
                "pairs with tools/make_pairs.py from this teacher).")
        if self.regression_weight and ref_noise is None:
            raise ValueError(
                "model.regression_weight > 0 needs teacher ODE pairs in the training data: "
                "make them with tools/make_pairs.py and use dict(type='PairsDataset', "
                "path=...), or set model.regression_weight=0 (DMD2).")
        if ref_noise is not None and ref_noise.shape != images.shape:
            raise ValueError(f"Pair noise {tuple(ref_noise.shape)} and images "
                             f"{tuple(images.shape)} differ in shape: remake the pairs.")
        n = images.shape[0]
        index = self.draw_step_index()
        # Draws keyed by (seed, dataset index, iteration): every rank's resume exactly.
        rng = batch_rng(data["data_samples"], n, self.seed, images.device,
                        iteration=int(self.iteration))
        with optim_wrapper["generator"].optim_context(self.unet):
            z = self.simulate(rng.randn(*images.shape[1:]).to(images), labels, index, rng)
        regress = bool(self.regression_weight)
        if regress:  # one generator call (one DDP forward) for both batches
            z = torch.cat([z, ref_noise])
        gen_labels = cat_conditions([labels] * (1 + regress))
        log = {}
        if int(self.iteration) % self.critic_updates_per_generator == 0:
            gen_optim = optim_wrapper["generator"]
            with frozen(self.bare_critic), gen_optim.optim_context(self.unet):
                x_all = self.generator_x0(self.unet, z, self.timesteps[index], gen_labels)
                x = x_all[:n]
                losses, stats = self.generator_losses(
                    x, labels, x_all[n:] if regress else None, images if regress else None,
                    rng)
            gen_optim.update_params(sum(losses.values()))
            log.update(losses, **stats)
        else:
            with torch.no_grad(), optim_wrapper["generator"].optim_context(self.unet):
                x = self.generator_x0(self.unet, z[:n], self.timesteps[index], labels)
        if self.dm_weight or self.gan:  # no critic in a regression-only pre-training
            critic_optim = optim_wrapper["critic"]
            with critic_optim.optim_context(self.critic):
                losses = self.critic_losses(x.detach().float(), labels, images, rng)
            critic_optim.update_params(sum(losses.values()))
            log.update(losses)
        self.iteration += 1
        return {k: v.detach() for k, v in log.items()}

    def forward(self, inputs: Tensor, data_samples: dict | None = None, mode: str = "loss"):
        raise NotImplementedError("DMD updates its generator and critic inside train_step; "
                                  "call train_step.")

    # -- sampling and export -------------------------------------------------------
    @property
    def default_steps(self) -> int:
        return self.num_generator_steps

    def export_scheduler(self):
        """One step: DDIM on the trailing grid ({T-1}, x0 returned). k steps:
        LCMScheduler, whose k-step grid is the generator's timesteps."""
        if self.num_generator_steps == 1 and self.timesteps[0] != \
                self.noise_schedule.num_train_timesteps - 1:  # one DDIM step from t (leading grid)
            return build_scheduler(
                dict({k: v for k, v in self.sampler_cfg.items() if k != "num_inference_steps"},
                     type="DDIMScheduler", timestep_spacing="leading",
                     steps_offset=self.timesteps[0], prediction_type=self.prediction_type),
                base_config=self.scheduler.config)
        if self.num_generator_steps == 1:
            return super().export_scheduler()
        return build_scheduler(dict(type="LCMScheduler", prediction_type=self.prediction_type,
                                    original_inference_steps=self.num_generator_steps,
                                    clip_sample=False, set_alpha_to_one=True,
                                    thresholding=False),
                               base_config=self.scheduler.config)
