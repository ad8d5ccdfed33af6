from mmengine.hooks import EMAHook
from mmengine.model import is_model_wrapper


def unwrap(model):
    return model.module if is_model_wrapper(model) else model


def ema_or_live_model(runner, use_ema: bool = True):
    """The model whose weights users get (exports, sample grids, metrics, PD's
    next teacher): the EMA copy when ``use_ema`` and an EMAHook runs, else the
    live model, unwrapped. Under a sharding strategy it is the live model
    gathered whole onto rank 0, so every rank must call it."""
    gather = getattr(getattr(runner, "strategy", None), "unsharded_model", None)
    if gather is not None:
        return gather()
    if use_ema:
        for hook in runner.hooks:
            if isinstance(hook, EMAHook) and hasattr(hook, "ema_model"):
                return hook.ema_model.module
    return unwrap(runner.model)
