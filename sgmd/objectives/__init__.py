"""Distillation objectives behind one interface (`base.Objective`): SGMD and its DMD2 baseline are
siblings; optional tricks (teacher anchor, teacher pairs, GAN head) are plug-ins. `make_objective(name, **options)`
builds one from config options."""
from __future__ import annotations

from ..errors import SGMDError
from .base import Batch, LossOutput, Objective, Roles
from .dmd2 import DMD2, dmd_gradient, dmd_loss
from .common import flow_matching_loss
from .diversity import TeacherAnchor
from .gan import GANTerm
from .pairs import TeacherPairs
from .sgmd import SGMD, fisher_loss, negative_residual_loss, sgmd_generator_loss

OBJECTIVES = {"sgmd": SGMD, "dmd2": DMD2}
OBJECTIVE_NAMES = tuple(OBJECTIVES)


def make_objective(name: str, **options) -> Objective:
    """`make_objective("sgmd", cfg_scale=3.0, diversity=True)`; unknown names or options -> SGMDError."""
    cls = OBJECTIVES.get(str(name).lower())
    if cls is None:
        raise SGMDError(f"unknown objective {name!r}; choose one of {', '.join(OBJECTIVE_NAMES)}")
    known = cls.option_names()
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise SGMDError(f"objective {cls.name!r} has no option(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return cls(**options)


__all__ = [
    "Batch", "DMD2", "GANTerm", "LossOutput", "OBJECTIVES", "OBJECTIVE_NAMES", "Objective", "Roles", "SGMD",
    "TeacherAnchor", "TeacherPairs", "dmd_gradient", "dmd_loss", "fisher_loss", "flow_matching_loss", "make_objective",
    "negative_residual_loss", "sgmd_generator_loss",
]
