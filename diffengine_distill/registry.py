"""Child registries of mmengine's, so configs resolve ``type=`` names here.

``default_scope = "diffengine_distill"`` in a config makes mmengine import this
module and look every ``type=`` up in the child registry of this scope (then
in mmengine's root). A root registry without a child here would make mmengine
log "Failed to search registry with scope ..." on each build, so every root
registry has one. Each registry's ``locations`` are imported on first lookup,
so configs need no ``custom_imports``.
"""
from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import EVALUATOR as MMENGINE_EVALUATOR
from mmengine.registry import FUNCTIONS as MMENGINE_FUNCTIONS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import INFERENCERS as MMENGINE_INFERENCERS
from mmengine.registry import LOG_PROCESSORS as MMENGINE_LOG_PROCESSORS
from mmengine.registry import LOOPS as MMENGINE_LOOPS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import OPTIMIZERS as MMENGINE_OPTIMIZERS
from mmengine.registry import PARAM_SCHEDULERS as MMENGINE_PARAM_SCHEDULERS
from mmengine.registry import RUNNER_CONSTRUCTORS as MMENGINE_RUNNER_CONSTRUCTORS
from mmengine.registry import RUNNERS as MMENGINE_RUNNERS
from mmengine.registry import STRATEGIES as MMENGINE_STRATEGIES
from mmengine.registry import TASK_UTILS as MMENGINE_TASK_UTILS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import VISBACKENDS as MMENGINE_VISBACKENDS
from mmengine.registry import VISUALIZERS as MMENGINE_VISUALIZERS
from mmengine.registry import WEIGHT_INITIALIZERS as MMENGINE_WEIGHT_INITIALIZERS
from mmengine.registry import Registry

from .utils.safe_load import allow_mmengine_checkpoints

__all__ = [
    "DATASETS", "DATA_SAMPLERS", "EVALUATOR", "FUNCTIONS", "HOOKS", "INFERENCERS",
    "LOG_PROCESSORS", "LOOPS", "METRICS", "MODELS", "MODEL_WRAPPERS", "OPTIMIZERS",
    "OPTIM_WRAPPERS", "OPTIM_WRAPPER_CONSTRUCTORS", "PARAM_SCHEDULERS", "RUNNERS",
    "RUNNER_CONSTRUCTORS", "STRATEGIES", "TASK_UTILS", "TRANSFORMS", "VISBACKENDS",
    "VISUALIZERS", "WEIGHT_INITIALIZERS",
]

SCOPE = "diffengine_distill"
ENGINE = ["diffengine_distill.engine"]
MODELS_PKG = ["diffengine_distill.models"]
DATASETS_PKG = ["diffengine_distill.datasets"]


def _child(name, parent, locations):
    return Registry(name, parent=parent, scope=SCOPE, locations=locations)


# Runners, loops, hooks and everything optimisation-related: diffengine_distill.engine.
RUNNERS = _child("runner", MMENGINE_RUNNERS, ENGINE)
RUNNER_CONSTRUCTORS = _child("runner constructor", MMENGINE_RUNNER_CONSTRUCTORS, ENGINE)
LOOPS = _child("loop", MMENGINE_LOOPS, ENGINE)
HOOKS = _child("hook", MMENGINE_HOOKS, ["diffengine_distill.engine.hooks"])
STRATEGIES = _child("strategy", MMENGINE_STRATEGIES, ENGINE)
MODEL_WRAPPERS = _child("model_wrapper", MMENGINE_MODEL_WRAPPERS, ENGINE)
# bitsandbytes' 8-bit optimizers are registered into mmengine's root
# OPTIMIZERS by apis.train only when a config asks for one.
OPTIMIZERS = _child("optimizer", MMENGINE_OPTIMIZERS, ENGINE)
OPTIM_WRAPPERS = _child("optim_wrapper", MMENGINE_OPTIM_WRAPPERS, ENGINE)
OPTIM_WRAPPER_CONSTRUCTORS = _child("optimizer wrapper constructor",
                                    MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS, ENGINE)
PARAM_SCHEDULERS = _child("parameter scheduler", MMENGINE_PARAM_SCHEDULERS, ENGINE)
VISUALIZERS = _child("visualizer", MMENGINE_VISUALIZERS, ENGINE)
VISBACKENDS = _child("vis_backend", MMENGINE_VISBACKENDS, ENGINE)
LOG_PROCESSORS = _child("log_processor", MMENGINE_LOG_PROCESSORS, ENGINE)

# Models, their losses, weight initialisers and helpers: diffengine_distill.models.
MODELS = _child("model", MMENGINE_MODELS, MODELS_PKG)
WEIGHT_INITIALIZERS = _child("weight initializer", MMENGINE_WEIGHT_INITIALIZERS, MODELS_PKG)
TASK_UTILS = _child("task util", MMENGINE_TASK_UTILS, MODELS_PKG)

# Data: diffengine_distill.datasets (collate functions included).
DATASETS = _child("dataset", MMENGINE_DATASETS, DATASETS_PKG)
DATA_SAMPLERS = _child("data sampler", MMENGINE_DATA_SAMPLERS, DATASETS_PKG)
# mmcv registers LoadImageFromFile, Resize, ... into mmengine's root registry,
# so they resolve unprefixed once our transforms module has imported mmcv.
TRANSFORMS = _child("transform", MMENGINE_TRANSFORMS, ["diffengine_distill.datasets.transforms"])
FUNCTIONS = _child("function", MMENGINE_FUNCTIONS, DATASETS_PKG)

# Metrics and evaluators: diffengine_distill.evaluation; inferencers: apis.
METRICS = _child("metric", MMENGINE_METRICS, ["diffengine_distill.evaluation"])
EVALUATOR = _child("evaluator", MMENGINE_EVALUATOR, ["diffengine_distill.evaluation"])
INFERENCERS = _child("inferencer", MMENGINE_INFERENCERS, ["diffengine_distill.apis"])

# Checkpoints hold mmengine's types: allow exactly those for torch.load
# (weights_only stays on) wherever the training stack is loaded.
allow_mmengine_checkpoints()
