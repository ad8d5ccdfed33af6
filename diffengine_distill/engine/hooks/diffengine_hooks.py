"""diffengine's hooks under their own names, so its configs' custom_hooks run:
``PeftSaveHook`` (exports next to every checkpoint) and
``VisualizationHook(prompt=[...])``."""
from __future__ import annotations

from diffengine_distill.registry import HOOKS

from .export_hook import DiffusersExportHook
from .visualization_hook import SampleVisualizationHook


@HOOKS.register_module()
class PeftSaveHook(DiffusersExportHook):
    """Export ``work_dir/step<N>`` whenever a checkpoint is saved, as
    diffengine's PeftSaveHook: LoRA models write ``unet/`` (and
    ``text_encoder/`` or ``text_encoder_one/``, ``text_encoder_two/``) as
    PEFT adapters plus ``pytorch_lora_weights.safetensors``; N is the number
    of completed iterations."""

    priority = "VERY_LOW"

    def __init__(self, use_ema: bool = True):
        super().__init__(interval=1, save_last=False, use_ema=use_ema)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        pass  # exports follow the checkpoints instead

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        step = checkpoint["meta"]["iter"]  # completed iterations
        if step != self._last_exported:
            self.export(runner, step)


@HOOKS.register_module()
class VisualizationHook(SampleVisualizationHook):
    """diffengine's hook: one image per prompt of ``prompt``, after every
    epoch (``by_epoch=True``, its default) or every ``interval`` iterations.

    ``height`` / ``width`` must be the model's own sample size;
    ``num_inference_steps`` and ``guidance_scale`` pass through."""

    def __init__(self, prompt: list[str], interval: int = 1, height: int | None = None,
                 width: int | None = None, by_epoch: bool = True,
                 num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 **kwargs):
        if kwargs:
            raise ValueError(f"VisualizationHook: option(s) {sorted(kwargs)} are not "
                             "supported; it takes prompt, interval, by_epoch, height, width, "
                             "num_inference_steps, guidance_scale (see "
                             "SampleVisualizationHook).")
        prompt = [prompt] if isinstance(prompt, str) else list(prompt)
        super().__init__(interval=interval, num_images=len(prompt),
                         num_inference_steps=num_inference_steps, use_ema=False,
                         prompts=prompt, guidance_scale=guidance_scale)
        self.size, self.by_epoch = (height, width), by_epoch

    def before_train(self, runner):
        from .utils import unwrap
        model = unwrap(runner.model)
        vae = getattr(model.data_preprocessor, "vae", None)
        scale = 2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 1
        side = model.bare_unet.config.sample_size * scale
        for key, value in zip(("height", "width"), self.size):
            if value is not None and value != side:
                raise ValueError(f"VisualizationHook: {key}={value} is not supported; "
                                 f"samples are drawn at the model's size {side}: remove "
                                 f"{key}.")
        super().before_train(runner)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if not self.by_epoch:
            super().after_train_iter(runner, batch_idx, data_batch, outputs)

    def after_train_epoch(self, runner):
        if self.by_epoch:
            self.visualize(runner, runner.iter)
