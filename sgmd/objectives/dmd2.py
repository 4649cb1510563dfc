"""DMD2 baseline (method doc s5): distribution-matching gradient `(D_F - D_T)/n` applied to the
generator sample through a stop-gradient surrogate; fake score trained by flow matching on
generator samples, 5 updates per generator update (two-time-scale rule); optional GAN term."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import SGMDError
from ..samplers import denoised
from .base import Batch, LossOutput, Roles
from .common import NORMALISER_EPS, DistillationSetup, noised, score_normaliser


def dmd_gradient(g: torch.Tensor, d_fake: torch.Tensor, d_teacher: torch.Tensor) -> torch.Tensor:
    """`nan_to_num((D_F - D_T) / (mean_{C,F,H,W}|g - D_T| + eps))`, a constant."""
    n = score_normaliser(g, d_teacher)
    return torch.nan_to_num((d_fake - d_teacher).detach() / (n + NORMALISER_EPS))


def dmd_loss(g: torch.Tensor, d_fake: torch.Tensor, d_teacher: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """`0.5 mean((g - stopgrad(g - grad))^2)`: its gradient w.r.t. g is `grad / N`.
    Returns (loss, detached terms)."""
    grad = dmd_gradient(g, d_fake, d_teacher)
    loss = 0.5 * (g - (g - grad).detach()).pow(2).mean()
    return loss, {"dmd_grad_abs": grad.abs().mean(), "normaliser": score_normaliser(g, d_teacher).mean()}


@dataclass
class DMD2(DistillationSetup):
    """DMD2 objective: several fake-score updates per generator update."""

    fake_updates_per_generator_update: int = field(default=5, metadata={
        "help": "fake-score updates per generator update (DMD2's two-time-scale rule: 5)"})

    name = "dmd2"

    def __post_init__(self):
        super().__post_init__()
        if int(self.fake_updates_per_generator_update) < 1:
            raise SGMDError(f"fake_updates_per_generator_update must be >= 1; got {self.fake_updates_per_generator_update}")
        self.fake_updates_per_generator_update = int(self.fake_updates_per_generator_update)

    def generator_loss(self, roles: Roles, batch: Batch) -> LossOutput:
        k, noise, g, s, eps = self.draw_generator_sample(roles, batch, grad=True)
        logs = {"exit_index": k, "score_sigma": float(s.mean())}
        # with the GAN on, the same fake pass feeds its head, so it keeps the graph to g (D_F stays a
        # constant); without it, DMD computes D_F under no_grad
        with torch.set_grad_enabled(self.gan is not None and torch.is_grad_enabled()), self.gan_tap():
            x = noised(g, eps, s)
            d_fake = denoised(x, s, roles.fake(x, s, batch.context)).detach()
        extra = self.gan_generator_term(logs)
        d_teacher = self.teacher_denoised(roles, x, s, batch)
        loss, terms = dmd_loss(g, d_fake, d_teacher)
        logs.update({k_: float(v) for k_, v in terms.items()}, dmd=float(loss.detach()))
        loss = loss + extra + self.regression_terms(roles, batch, noise, logs)
        logs["loss"] = float(loss.detach())
        return LossOutput(loss, logs)

    def passes_per_iteration(self, num_steps: int | None = None) -> dict:
        """Expected batch-B network passes of one iteration (generator update + its fake updates)."""
        u = self.fake_updates_per_generator_update
        p = self._rollout_passes(num_steps, u)
        gan_on = self.gan is not None
        p.update(
            fake_forward_grad=float(u) + (1.0 if gan_on else 0.0),  # fake phase; + gen phase with GAN
            fake_forward_no_grad=0.0 if gan_on else 1.0,  # D_F of the generator phase
            backward_fake=float(u) + (1.0 if gan_on else 0.0),
        )
        return self._add_plugin_passes(p, u)
