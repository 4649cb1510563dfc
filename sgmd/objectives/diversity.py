"""Teacher-anchor "diversity" plug-in (method doc s4, optional; the reference enables it only for
Wan2.1-1.3B). From the generator phase's initial noise `eps0`, the CFG teacher takes the first
`anchor_steps` Euler steps of a `teacher_steps`-step schedule to `x_anchor` at `s_a`; the straight
line through eps0 and x_anchor gives the student's first-step target `v* = (eps0 - x_anchor)/(1 - s_a)`,
and the term is `weight * MSE(G(eps0, 1), v*)`. With it on, the exit index is never 0: step 0 is
trained by the anchor, which keeps the per-seed layout (hence diversity) of the teacher."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import SGMDError
from ..samplers import sample_teacher
from ..schedules import teacher_sigmas
from .base import Batch, Roles


@dataclass
class TeacherAnchor:
    weight: float = field(default=0.05, metadata={"help": "weight of the anchor MSE"})
    teacher_steps: int = field(default=30, metadata={"help": "length of the teacher schedule the anchor is taken from"})
    anchor_steps: int = field(default=5, metadata={"help": "teacher Euler steps run from eps0 to the anchor"})
    shift: float = field(default=5.0, metadata={"help": "shift of the teacher schedule"})

    min_exit_index = 1  # class constant: the objective never exits at step 0 when the anchor is on

    def __post_init__(self):
        if not 0 < self.anchor_steps < self.teacher_steps:
            raise SGMDError(f"anchor_steps must be in 1..teacher_steps-1; got {self.anchor_steps} of {self.teacher_steps}")
        if self.weight < 0 or self.shift <= 0:
            raise SGMDError(f"teacher anchor needs weight >= 0 and shift > 0; got weight {self.weight}, shift {self.shift}")

    @classmethod
    def from_option(cls, option) -> "TeacherAnchor | None":
        """Config switch: None/False = off, True = defaults, a dict = options, or an instance."""
        if option is None or option is False:
            return None
        if option is True:
            return cls()
        if isinstance(option, dict):
            unknown = set(option) - set(cls.__dataclass_fields__)
            if unknown:
                raise SGMDError(f"unknown teacher-anchor option(s) {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
            return cls(**option)
        if isinstance(option, cls):
            return option
        raise SGMDError(f"diversity must be true/false or a dict of teacher-anchor options; got {option!r}")

    def check_student(self, sigmas: torch.Tensor) -> None:
        if len(sigmas) < 3:
            raise SGMDError("the teacher anchor needs a student with at least 2 steps (it takes over step 0)")
        if float(sigmas[0]) != 1.0:
            raise SGMDError(f"the teacher anchor targets the student's first step at sigma 1; "
                            f"the schedule starts at {float(sigmas[0]):.4g}")

    def anchor_sigmas(self) -> torch.Tensor:
        return teacher_sigmas(self.teacher_steps, self.shift)[: self.anchor_steps + 1]

    def target_velocity(self, teacher_velocity, noise: torch.Tensor) -> torch.Tensor:
        """`teacher_velocity(x, s)`: the guided teacher, as the objective sets it."""
        sig = self.anchor_sigmas()
        with torch.no_grad():
            x_anchor = sample_teacher(teacher_velocity, noise, sig)
        return (noise - x_anchor) / (1 - float(sig[-1]))

    def loss(self, roles: Roles, batch: Batch, noise: torch.Tensor, teacher_velocity) -> torch.Tensor:
        target = self.target_velocity(teacher_velocity, noise)
        v = roles.generator(noise, torch.ones(noise.shape[0], device=noise.device), batch.context)
        return self.weight * (v - target).pow(2).mean()

    def passes(self, teacher_per_call: int) -> dict:
        """Extra batch-B passes per generator update."""
        return {
            "teacher_forward_no_grad": float(self.anchor_steps * teacher_per_call),
            "generator_forward_grad": 1.0,
            "backward_generator": 1.0,
        }
