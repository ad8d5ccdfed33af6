from mmengine.hooks import EMAHook
from mmengine.model import is_model_wrapper


def unwrap(model):
    return model.module if is_model_wrapper(model) else model


def exported_model(runner, use_ema: bool = True):
    """The model whose weights users get: the EMA copy when an EMAHook runs.
    Under a sharding strategy every rank must call it (it gathers the UNet
    whole onto rank 0)."""
    gather = getattr(getattr(runner, "strategy", None), "unsharded_model", None)
    if gather is not None:
        return gather()
    if use_ema:
        for hook in runner.hooks:
            if isinstance(hook, EMAHook) and hasattr(hook, "ema_model"):
                return hook.ema_model.module
    return unwrap(runner.model)
