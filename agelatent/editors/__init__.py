"""Editing methods behind one interface (see :mod:`agelatent.editors.base`)."""

from agelatent.editors.base import Editor, EditResult, build_editor, run_edits
from agelatent.editors.baselines import (
    GlobalDirection,
    GradientDescent,
    LeverWalk,
    LocalLinearWalk,
    RandomWalk,
    SemanticWalk,
    fit_global_direction,
)
from agelatent.editors.policy import PolicyEditor

__all__ = [
    "EditResult",
    "Editor",
    "GlobalDirection",
    "GradientDescent",
    "LeverWalk",
    "LocalLinearWalk",
    "PolicyEditor",
    "RandomWalk",
    "SemanticWalk",
    "build_editor",
    "fit_global_direction",
    "run_edits",
]
