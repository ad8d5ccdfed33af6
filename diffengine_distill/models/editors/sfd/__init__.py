from .second_stage import SFDSecondStage
from .sfd import SFD
from .step_condition import add_step_condition, step_labels

__all__ = ["SFD", "SFDSecondStage", "add_step_condition", "step_labels"]
