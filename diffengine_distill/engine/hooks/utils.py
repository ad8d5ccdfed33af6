from mmengine.hooks import EMAHook
from mmengine.model import is_model_wrapper


def unwrap(model):
    return model.module if is_model_wrapper(model) else model


def exported_model(runner, use_ema: bool = True):
    """The model whose weights users get: the EMA copy when an EMAHook runs."""
    if use_ema:
        for hook in runner.hooks:
            if isinstance(hook, EMAHook) and hasattr(hook, "ema_model"):
                return hook.ema_model.module
    return unwrap(runner.model)
