"""Child registries of mmengine's, so configs resolve ``type=`` names here.

``default_scope = "diffengine_distill"`` in a config makes mmengine import this
module; each registry's ``locations`` are imported on first lookup, so configs
need no ``custom_imports``.
"""
from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import FUNCTIONS as MMENGINE_FUNCTIONS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import PARAM_SCHEDULERS as MMENGINE_PARAM_SCHEDULERS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import Registry

__all__ = [
    "DATASETS", "DATA_SAMPLERS", "FUNCTIONS", "HOOKS", "MODELS", "MODEL_WRAPPERS",
    "OPTIM_WRAPPERS", "OPTIM_WRAPPER_CONSTRUCTORS", "PARAM_SCHEDULERS", "TRANSFORMS",
]

SCOPE = "diffengine_distill"

MODELS = Registry("model", parent=MMENGINE_MODELS, scope=SCOPE,
                  locations=["diffengine_distill.models"])
MODEL_WRAPPERS = Registry("model_wrapper", parent=MMENGINE_MODEL_WRAPPERS,
                          scope=SCOPE, locations=["diffengine_distill.engine"])
HOOKS = Registry("hook", parent=MMENGINE_HOOKS, scope=SCOPE,
                 locations=["diffengine_distill.engine.hooks"])
DATASETS = Registry("dataset", parent=MMENGINE_DATASETS, scope=SCOPE,
                    locations=["diffengine_distill.datasets"])
# mmcv registers LoadImageFromFile, Resize, ... into mmengine's root registry,
# so they resolve unprefixed once our transforms module has imported mmcv.
TRANSFORMS = Registry("transform", parent=MMENGINE_TRANSFORMS, scope=SCOPE,
                      locations=["diffengine_distill.datasets.transforms"])
DATA_SAMPLERS = Registry("data sampler", parent=MMENGINE_DATA_SAMPLERS,
                         scope=SCOPE, locations=["diffengine_distill.datasets"])
OPTIM_WRAPPERS = Registry("optim_wrapper", parent=MMENGINE_OPTIM_WRAPPERS,
                          scope=SCOPE, locations=["diffengine_distill.engine"])
OPTIM_WRAPPER_CONSTRUCTORS = Registry(
    "optimizer wrapper constructor", parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS, scope=SCOPE,
    locations=["diffengine_distill.engine"])
PARAM_SCHEDULERS = Registry("parameter scheduler",
                            parent=MMENGINE_PARAM_SCHEDULERS, scope=SCOPE,
                            locations=["diffengine_distill.engine"])
FUNCTIONS = Registry("function", parent=MMENGINE_FUNCTIONS, scope=SCOPE,
                     locations=["diffengine_distill.datasets"])
