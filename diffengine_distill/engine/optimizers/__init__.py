from .guarded_optim_wrapper import GuardedAmpOptimWrapper, GuardedOptimWrapper, NonFiniteGuard
from .per_module_constructor import PerModuleOptimWrapperConstructor

__all__ = ["GuardedAmpOptimWrapper", "GuardedOptimWrapper", "NonFiniteGuard",
           "PerModuleOptimWrapperConstructor"]
