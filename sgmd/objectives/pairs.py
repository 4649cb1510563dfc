"""Teacher-pair regression plug-in (ours, not in the method doc; off by default).

A pair is a known initial noise `eps` and the teacher's clean sample `x_T` from it (its full guided
multi-step sampler, computed once, before training). The student's first step from the same noise is
regressed on it: `weight * MSE(G(eps, 1, c), eps - x_T)`, i.e. the first step's clean estimate
`eps - G` on `x_T`, on as many pairs per generator update as the batch has prompts. With `every_step`,
the student's own rollout from `eps` exits at a step k drawn uniformly and that step's clean estimate is
regressed on `x_T` (k = 0 is the first-step term), so later steps learn to keep the teacher's choice.

Why: where a prompt leaves an attribute open (a speed but no direction), the teacher picks the mode
from its initial noise. The score terms only see the student's own samples; a student that has not
learnt that map from noise to mode averages the modes (several blobs moving apart). The teacher anchor
(`diversity.py`) gives the map only down to sigma ~0.96, because each teacher step costs run time;
pairs move the whole trajectory out of the run (CausVid's ODE initialisation, here a term beside the
distillation loss rather than a phase before it)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import SGMDError
from ..samplers import rollout
from .base import Batch, Roles


@dataclass
class TeacherPairs:
    noise: torch.Tensor = field(metadata={"help": "[N, C, F, H, W] initial noises"})
    context: torch.Tensor = field(metadata={"help": "[N, L, D] text embeddings of the pairs' prompts"})
    target: torch.Tensor = field(metadata={"help": "[N, C, F, H, W] the teacher's clean samples from those noises"})
    weight: float = field(default=0.05, metadata={"help": "weight of the pair MSE"})
    every_step: bool = field(default=False, metadata={
        "help": "regress the clean estimate of a uniformly drawn student step (own rollout) instead of the first"})

    def __post_init__(self):
        n = self.noise.shape[0]
        if n == 0:
            raise SGMDError("teacher pairs: the set is empty")
        if self.target.shape != self.noise.shape or self.context.shape[0] != n:
            raise SGMDError(f"teacher pairs: noise {tuple(self.noise.shape)}, target {tuple(self.target.shape)} and "
                            f"context {tuple(self.context.shape)} do not describe the same pairs")
        if not self.weight >= 0:
            raise SGMDError(f"teacher pairs need a weight >= 0; got {self.weight}")

    def __len__(self) -> int:
        return self.noise.shape[0]

    def check_student(self, sigmas: torch.Tensor, latent_shape: tuple | None = None) -> None:
        if float(sigmas[0]) != 1.0:
            raise SGMDError(f"teacher pairs train the student's first step at sigma 1; the schedule starts at "
                            f"{float(sigmas[0]):.4g}")
        if latent_shape is not None and tuple(self.noise.shape[1:]) != tuple(latent_shape):
            raise SGMDError(f"teacher pairs are {tuple(self.noise.shape[1:])} latents but the run trains "
                            f"{tuple(latent_shape)}")

    def loss(self, roles: Roles, batch: Batch, sigmas: torch.Tensor, rule: str = "euler") -> torch.Tensor:
        """Draws B pairs (B = the batch's prompts), then with `every_step` the exit step, from `batch.generator`,
        after the objective's own draws."""
        b, device = batch.context.shape[0], batch.context.device
        i = torch.randint(0, len(self), (b,), generator=batch.generator)
        k = int(torch.randint(0, len(sigmas) - 1, (1,), generator=batch.generator)) if self.every_step else 0
        eps, x_t = self.noise[i].to(device), self.target[i].to(device)
        context = self.context[i].to(device, batch.context.dtype)
        x0 = rollout(lambda x, s: roles.generator(x, s, context), eps, sigmas, rule, k, batch.generator)
        return self.weight * (x0 - x_t).pow(2).mean()  # k = 0: (eps - G - x_T)^2 = (G - (eps - x_T))^2

    def passes(self, num_steps: int) -> dict:
        """Extra batch-B passes per generator update."""
        no_grad = (num_steps - 1) / 2 if self.every_step else 0.0
        return {"generator_forward_grad": 1.0, "generator_forward_no_grad": no_grad, "backward_generator": 1.0}
