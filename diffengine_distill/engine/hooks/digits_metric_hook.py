"""TensorBoard curves of sample quality on the digits: Fréchet distance in
the digits classifier's feature space and class accuracy."""
from __future__ import annotations

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook

from diffengine_distill.registry import HOOKS

from .utils import ema_or_live_model


@HOOKS.register_module()
class DigitsMetricHook(Hook):
    """Every ``interval`` iterations, sample ``num_images`` (labels seed % 10 for
    class-conditional models) at the model's trained steps and log
    ``metric/digits_fd`` and ``metric/class_acc`` (conditional models)."""

    priority = "LOW"

    def __init__(self, interval: int = 500, num_images: int = 512, resolution: int = 16,
                 seed: int = 100_000):
        if interval <= 0 or num_images < 2:
            raise ValueError("DigitsMetricHook: interval must be > 0 and num_images >= 2.")
        self.interval, self.num_images = interval, num_images
        self.resolution, self.seed = resolution, seed
        self._real = None

    def before_train(self, runner):
        if is_main_process():
            from diffengine_distill.datasets.digits import load_digits_uint8
            from diffengine_distill.evaluation import classifier_features, get_digits_classifier
            self.classifier, _ = get_digits_classifier(self.resolution)
            real = torch.from_numpy(load_digits_uint8(self.resolution)[0]).float()
            self._real = classifier_features(real[:, None] / 127.5 - 1, self.classifier)
        self.evaluate(runner, runner.iter)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if self.every_n_train_iters(runner, self.interval) or self.is_last_train_iter(runner):
            self.evaluate(runner, runner.iter + 1)

    def evaluate(self, runner, step: int) -> dict | None:
        model = ema_or_live_model(runner, use_ema=False)  # on every rank: a sharded UNet gathers
        if not is_main_process():
            return None
        from diffengine_distill.evaluation import (class_accuracy, classifier_features,
                                                   frechet_distance)
        seeds = range(self.seed, self.seed + self.num_images)
        state = torch.random.get_rng_state()  # sampling must not shift training noise
        labels = [s % 10 for s in seeds] if model.num_classes else None
        images = model.sample(seeds, model.default_steps, labels=labels).cpu()
        torch.random.set_rng_state(state)
        metrics = {"metric/digits_fd": frechet_distance(
            classifier_features(images, self.classifier), self._real)}
        if labels is not None:
            metrics["metric/class_acc"] = class_accuracy(images, torch.tensor(labels),
                                                         self.classifier)
        runner.visualizer.add_scalars(metrics, step=step)
        runner.logger.info(f"Iteration {step}: " + ", ".join(f"{k} {v:.4g}"
                                                             for k, v in metrics.items()))
        return metrics
