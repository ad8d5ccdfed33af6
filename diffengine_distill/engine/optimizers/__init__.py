from .guarded_optim_wrapper import GuardedAmpOptimWrapper, GuardedOptimWrapper, NonFiniteGuard

__all__ = ["GuardedAmpOptimWrapper", "GuardedOptimWrapper", "NonFiniteGuard"]
