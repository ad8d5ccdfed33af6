from __future__ import annotations

import os.path as osp

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook

from diffengine_distill.registry import HOOKS
from diffengine_distill.utils import make_grid, save_image

from .utils import ema_or_live_model


@HOOKS.register_module()
class SampleVisualizationHook(Hook):
    """Sample a fixed-seed grid every ``interval`` iterations (epochs with
    ``by_epoch``) and before training.

    The grid goes to ``work_dir/samples/step<N>.png`` and to every visualizer
    backend (TensorBoard's image tab, mmengine's local vis_data).
    """

    priority = "LOW"

    def __init__(self, interval: int = 1000, num_images: int = 64,
                 num_inference_steps: int | None = None, seed: int = 0,
                 use_ema: bool = True, scale: int = 4, prompts=None,
                 guidance_scale: float | None = None, by_epoch: bool = False):
        if interval <= 0:
            raise ValueError(f"SampleVisualizationHook: interval must be > 0, got {interval}")
        self.interval, self.num_images, self.seed = interval, num_images, seed
        self.num_inference_steps, self.use_ema, self.scale = num_inference_steps, use_ema, scale
        # Text-to-image models: one prompt per image (or one for all) and the
        # pipeline's CFG scale (1 for students distilled from the unguided teacher).
        self.prompts, self.guidance_scale = prompts, guidance_scale
        self.by_epoch = by_epoch

    def before_train(self, runner):
        self.visualize(runner)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if self.by_epoch:
            return
        if self.every_n_train_iters(runner, self.interval) or self.is_last_train_iter(runner):
            self.visualize(runner, runner.iter + 1)

    def after_train_epoch(self, runner):
        if self.by_epoch and (self.every_n_epochs(runner, self.interval)
                              or runner.epoch + 1 == runner.max_epochs):
            self.visualize(runner, runner.iter)

    def visualize(self, runner, step: int | None = None):
        model = ema_or_live_model(runner, self.use_ema)  # on every rank: a sharded UNet gathers
        if not is_main_process():
            return
        step = runner.iter if step is None else step
        steps = self.num_inference_steps or model.default_steps
        state = torch.random.get_rng_state()  # sampling must not shift training noise
        seeds = range(self.seed, self.seed + self.num_images)
        text = dict(prompts=self.prompts, guidance_scale=self.guidance_scale)
        images = model.sample(seeds, steps, **text) if self.prompts else model.sample(seeds, steps)
        torch.random.set_rng_state(state)
        grid = make_grid(images)
        save_image(grid, osp.join(runner.work_dir, "samples", f"step{step}.png"), self.scale)
        runner.visualizer.add_image("samples", grid, step=step)
