"""Progressive distillation's stage plan: stage after stage, N halves."""
from __future__ import annotations

import math
import os.path as osp

from mmengine.dist import is_main_process
from mmengine.hooks import Hook

from diffengine_distill.registry import HOOKS

from .export_hook import export_model
from .utils import ema_or_live_model, unwrap


@HOOKS.register_module()
class ProgressiveDistillationHook(Hook):
    """Runs the stage plan: every ``iters_per_stage`` iterations the student
    becomes the teacher, N halves, the optimizer state is reset and the LR
    restarts; each finished stage is exported to
    ``work_dir/stage_<k>_<N>steps`` (a DDIMPipeline folder for N steps).
    Guided teachers add a stage 0 that keeps the step count (the guidance
    distillation of Meng et al.).

    Everything is a function of the iteration counter and the model's state
    dict, so ``--resume`` continues mid-stage exactly.

    Args:
        end_steps: student steps of the last stage; ``teacher_steps /
            end_steps`` must be a power of two.
        iters_per_stage: training iterations of each stage.
        stage0_iters: iterations of a stage 0 (default: ``iters_per_stage``).
            Converting an eps teacher into a v student relearns the output at
            every t, a larger task than a halving.
        lr_decay: ``linear`` (to 0 within each stage, as the paper) or ``constant``.
        teacher_from_ema: the next teacher is the EMA of the student (needs an
            EMAHook) instead of the student itself.
    """

    priority = "HIGH"  # before the optimizer step's hooks read the LR

    def __init__(self, end_steps: int = 1, iters_per_stage: int = 1000,
                 stage0_iters: int | None = None, lr_decay: str = "linear",
                 teacher_from_ema: bool = False):
        if iters_per_stage <= 0:
            raise ValueError(f"iters_per_stage must be > 0, got {iters_per_stage}")
        if stage0_iters is not None and stage0_iters <= 0:
            raise ValueError(f"stage0_iters must be > 0 (or None), got {stage0_iters}")
        if end_steps < 1:
            raise ValueError(f"end_steps must be >= 1, got {end_steps}")
        if lr_decay not in ("linear", "constant"):
            raise ValueError(f"lr_decay must be 'linear' or 'constant', got {lr_decay!r}")
        self.end_steps, self.iters_per_stage = end_steps, iters_per_stage
        self.stage0_iters = stage0_iters or iters_per_stage
        self.first_stage = 1
        self.lr_decay, self.teacher_from_ema = lr_decay, teacher_from_ema

    def before_train(self, runner):
        model = unwrap(runner.model)
        if not hasattr(model, "next_stage"):
            raise TypeError("ProgressiveDistillationHook needs a ProgressiveDistillation model.")
        teacher_steps = int(model.student_steps) * 2 ** int(model.stage)
        ratio = teacher_steps / self.end_steps
        if ratio < 2 or math.log2(ratio) % 1:
            raise ValueError(f"Cannot halve {teacher_steps} teacher steps down to "
                             f"end_steps={self.end_steps}: teacher_steps / end_steps must "
                             "be a power of two >= 2.")
        self.first_stage = model.first_stage
        halvings = len(self.plan(teacher_steps))
        needed = halvings * self.iters_per_stage
        plan = f"{halvings} halvings of {self.iters_per_stage} iterations"
        if model.first_stage == 0:
            needed += self.stage0_iters
            plan = f"a stage 0 of {self.stage0_iters} and " + plan
        if runner.max_iters > needed:
            raise ValueError(
                f"The plan {teacher_steps} -> {self.end_steps} steps has {plan}: set "
                f"train_cfg.max_iters={needed} (it is {runner.max_iters}).")
        if runner.max_iters < needed:  # allowed: stop early, --resume with more later
            runner.logger.warning(
                f"train_cfg.max_iters={runner.max_iters} stops before the plan's end "
                f"({needed} iterations); resume with max_iters={needed} to finish it.")
        for group in runner.optim_wrapper.param_groups:
            group.setdefault("initial_lr", group["lr"])

    def plan(self, teacher_steps: int) -> list[int]:
        """Student steps of each stage."""
        steps, n = [], teacher_steps // 2
        while n >= self.end_steps:
            steps.append(n)
            n //= 2
        return steps

    def position(self, iteration: int) -> tuple[int, int, int]:
        """(stage, iterations done in it, its length) at a 0-based iteration."""
        if self.first_stage == 0:
            if iteration < self.stage0_iters:
                return 0, iteration, self.stage0_iters
            iteration -= self.stage0_iters
        stage, done = divmod(iteration, self.iters_per_stage)
        return stage + 1, done, self.iters_per_stage

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        model = unwrap(runner.model)
        stage, done, length = self.position(runner.iter)
        while int(model.stage) < stage:
            self._next_stage(runner, model)
        progress = done / length
        factor = 1.0 - progress if self.lr_decay == "linear" else 1.0
        for group in runner.optim_wrapper.param_groups:
            group["lr"] = group["initial_lr"] * factor

    def _next_stage(self, runner, model):
        if self.teacher_from_ema:
            model.unet.load_state_dict(ema_or_live_model(runner, True).unet.state_dict())
        model.next_stage()
        runner.optim_wrapper.optimizer.state.clear()  # fresh Adam moments per stage
        runner.logger.info(f"Progressive distillation stage {int(model.stage)}: "
                           f"{int(model.student_steps) * 2} -> {int(model.student_steps)} steps")

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        _, done, length = self.position(runner.iter)
        if done + 1 < length:
            return
        # Stage and N come from the live model: EMAHook does not average
        # buffers, so an EMA copy's student_steps would be stale.
        model = unwrap(runner.model)
        unet = ema_or_live_model(runner, self.teacher_from_ema).unet
        n, stage = int(model.student_steps), int(model.stage)
        if is_main_process():
            folder = osp.join(runner.work_dir, f"stage_{stage}_{n}steps")
            export_model(model, folder, dict(
                stage=stage, num_inference_steps=n, iteration=runner.iter + 1,
                prediction_type=model.prediction_type,
                config=osp.basename(runner.cfg.filename or ""), **model.export_metadata()),
                unet=unet)
            runner.logger.info(f"Exported the {n}-step student to {folder}")
