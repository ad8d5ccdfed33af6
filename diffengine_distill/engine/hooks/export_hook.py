"""Write diffusers pipeline folders that load with ``from_pretrained``."""
from __future__ import annotations

import json
import os
import os.path as osp
import shutil

from mmengine.dist import is_main_process
from mmengine.hooks import Hook

from diffengine_distill.registry import HOOKS

from .utils import ema_or_live_model

METADATA_FILE = "diffengine_distill.json"


def export_model(model, folder: str, metadata: dict, unet=None) -> str:
    """``model``'s export (``model.save_export``; ``unet`` in place of its own)."""
    return write_atomically(lambda tmp: model.save_export(tmp, unet), folder, metadata)


def write_atomically(save, folder: str, metadata: dict | None = None) -> str:
    """``save(tmp)`` into a temp folder, add the metadata, then rename over
    ``folder``: a killed run leaves a hidden ``.<name>.tmp`` folder behind,
    which export discovery skips, never a half-written export."""
    folder = osp.abspath(folder)
    # Hidden names: globs of exports (``*/model_index.json``) never see them.
    parent, name = osp.split(folder)
    tmp, old = osp.join(parent, f".{name}.tmp"), osp.join(parent, f".{name}.old")
    for stale in (tmp, old):
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.makedirs(tmp)
        save(tmp)
        with open(osp.join(tmp, METADATA_FILE), "w") as f:
            json.dump(metadata or {}, f, indent=2)
    except OSError as err:  # disk full, quota: say so, keep the earlier exports
        shutil.rmtree(tmp, ignore_errors=True)
        raise OSError(err.errno, f"Could not write the export {folder} ({err.strerror or err}); "
                      "earlier exports are untouched. Free disk space, then --resume.") from err
    if osp.exists(folder):
        os.rename(folder, old)
    os.rename(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


@HOOKS.register_module()
class DiffusersExportHook(Hook):
    """Export the model as a diffusers pipeline every ``interval`` iterations
    (epochs with ``by_epoch``).

    Folders are ``work_dir/step<N>`` (N = completed iterations); the last one
    is written at the end of training. EMA weights are exported when an
    ``EMAHook`` runs and ``use_ema`` is set.
    """

    priority = "LOW"  # after EMAHook has updated the averages

    def __init__(self, interval: int = 1000, save_last: bool = True, use_ema: bool = True,
                 num_inference_steps: int | None = None, by_epoch: bool = False):
        if interval <= 0:
            raise ValueError(f"DiffusersExportHook: interval must be > 0, got {interval}")
        self.interval, self.save_last, self.use_ema = interval, save_last, use_ema
        self.num_inference_steps, self.by_epoch = num_inference_steps, by_epoch
        self._last_exported = None

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        # runner.iter is still N - 1 during the N-th iteration's hooks.
        if not self.by_epoch and self.every_n_train_iters(runner, self.interval):
            self.export(runner, runner.iter + 1)

    def after_train_epoch(self, runner):
        # Still named by iterations (step<N>), as diffengine's PeftSaveHook.
        if self.by_epoch and self.every_n_epochs(runner, self.interval):
            self.export(runner, runner.iter)

    def after_train(self, runner):
        if self.save_last and self._last_exported != runner.iter:
            self.export(runner, runner.iter)

    def export(self, runner, step: int) -> str | None:
        self._last_exported = step
        model = ema_or_live_model(runner, self.use_ema)  # on every rank: a sharded UNet gathers
        if not is_main_process():
            return None
        folder = osp.join(runner.work_dir, f"step{step}")
        steps = self.num_inference_steps or model.default_steps
        metadata = dict(
            iteration=step, prediction_type=model.prediction_type,
            num_inference_steps=steps, ema=model is not getattr(runner.model, "module", runner.model)
            and not getattr(model, "gathered_from_shards", False),
            config=osp.basename(runner.cfg.filename or ""), **model.export_metadata())
        export_model(model, folder, metadata)
        runner.logger.info(f"Exported diffusers pipeline to {folder}")
        return folder
