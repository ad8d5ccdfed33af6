import random

import numpy as np
import torch
from mmengine.hooks import Hook

from diffengine_distill.registry import HOOKS


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Store the random generators' states in checkpoints and restore them on
    resume, so a resumed run draws the same noise as an uninterrupted one."""

    priority = "VERY_LOW"

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        # numpy's state as plain lists: torch's weights_only loader accepts them.
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state = dict(torch=torch.get_rng_state(), python=random.getstate(),
                     numpy=[kind, keys.tolist(), pos, has_gauss, gauss])
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint["rng_state"] = state

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get("rng_state")
        if state is None or not runner._resume:  # fine-tuning from weights: fresh noise
            return
        torch.set_rng_state(state["torch"])
        random.setstate(state["python"])
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
