"""SGMD: Score Gradient Matching Distillation (method doc s4).

Generator: `L_G = L_fish - lambda_NR L_NR` with the noised sample differentiable and the fake's
denoiser in the graph (grad through its INPUT only), the teacher fully stop-gradient. Its gradient
w.r.t. g is `(1-s)/N J_F^T [(D_F - D_T)/n - lambda_NR (D_F - g)/s]`: the residual pulled back
through the fake score. Fake: flow matching on a fresh generator sample, ONE update per iteration,
no teacher pass."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import SGMDError
from ..samplers import denoised
from .base import Batch, LossOutput, Roles
from .common import NORMALISER_EPS, DistillationSetup, noised, per_sample, score_normaliser


def fisher_loss(d_fake: torch.Tensor, d_teacher: torch.Tensor, normaliser: torch.Tensor) -> torch.Tensor:
    """Teacher stop-gradient Fisher: `mean(0.5 (D_F - D_T)^2 / (n + 1e-8))`."""
    return (0.5 * (d_fake - d_teacher).pow(2) / (normaliser + NORMALISER_EPS)).mean()


def negative_residual_loss(d_fake: torch.Tensor, g: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """`0.5 mean((D_F - stopgrad(D_F - r))^2)` with `r = stopgrad((D_F - g)/s)`: value `0.5 mean r^2`,
    gradient `r/N` w.r.t. D_F only."""
    r = ((d_fake - g) / per_sample(sigma, g).clamp_min(1e-8)).detach()
    return 0.5 * (d_fake - (d_fake - r).detach()).pow(2).mean()


def sgmd_generator_loss(g: torch.Tensor, sigma: torch.Tensor, d_fake: torch.Tensor, d_teacher: torch.Tensor,
                        lambda_nr: float = 0.1) -> tuple[torch.Tensor, dict]:
    """`L_G = L_fish - lambda_NR L_NR`; `d_fake` must be differentiable in g (through the fake's
    input), `d_teacher` is treated as a constant. Returns (loss, detached terms)."""
    n = score_normaliser(g, d_teacher)
    l_fish = fisher_loss(d_fake, d_teacher.detach(), n)
    l_nr = negative_residual_loss(d_fake, g, sigma)
    loss = l_fish - lambda_nr * l_nr
    return loss, {"fisher": l_fish.detach(), "neg_residual": l_nr.detach(), "normaliser": n.mean()}


@dataclass
class SGMD(DistillationSetup):
    """SGMD objective: one fake-score update per generator update."""

    lambda_nr: float = field(default=0.1, metadata={"help": "weight of the negative-residual potential L_NR"})

    name = "sgmd"
    fake_updates_per_generator_update = 1  # the method's point: one residual-contraction step

    def __post_init__(self):
        super().__post_init__()
        if self.lambda_nr < 0:
            raise SGMDError(f"lambda_nr must be >= 0; got {self.lambda_nr}")

    def generator_loss(self, roles: Roles, batch: Batch) -> LossOutput:
        k, noise, g, s, eps = self.draw_generator_sample(roles, batch, grad=True)
        x = noised(g, eps, s)  # WITH grad: the fake's input Jacobian carries the gradient to g
        d_teacher = self.teacher_denoised(roles, x, s, batch)
        with self.gan_tap():  # the GAN head, when on, reads this same fake call
            d_fake = denoised(x, s, roles.fake(x, s, batch.context))
        loss, terms = sgmd_generator_loss(g, s, d_fake, d_teacher, self.lambda_nr)
        logs = {k_: float(v) for k_, v in terms.items()}
        logs.update(exit_index=k, score_sigma=float(s.mean()))
        loss = loss + self.gan_generator_term(logs) + self.regression_terms(roles, batch, noise, logs)
        logs["loss"] = float(loss.detach())
        return LossOutput(loss, logs)

    def passes_per_iteration(self, num_steps: int | None = None) -> dict:
        """Expected batch-B network passes of one iteration (generator update + its fake update)."""
        p = self._rollout_passes(num_steps, self.fake_updates_per_generator_update)
        p.update(
            fake_forward_grad=1.0 + self.fake_updates_per_generator_update,  # D_F (input grad) + fake phase
            fake_forward_no_grad=0.0,
            backward_fake=1.0 + self.fake_updates_per_generator_update,  # gen phase: input grad only
        )
        return self._add_plugin_passes(p, self.fake_updates_per_generator_update)
