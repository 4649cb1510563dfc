"""What SGMD and DMD2 share: the pure tensor math (noising, normaliser, flow matching, guided
teacher) and the draws every distillation objective makes from a `Batch` (exit index, generator
sample, score noise level), plus the fake-score loss both use (method doc sections 2-5).

Random draws come from `batch.generator` (CPU) in a fixed order: exit index, initial noise,
rollout re-noise (rule `renoise` only), score sigma, score noise. The exit index is the first
draw, so ranks that share that generator's seed agree on it, as the method requires."""
from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

import torch

from ..errors import SGMDError
from ..samplers import UPDATE_RULES, denoised, guided, guided_passes, rollout
from ..schedules import DEFAULT_STUDENT_SHIFT, sample_score_sigma, student_sigmas, validate_sigmas
from .base import Batch, LossOutput, Roles
from .diversity import TeacherAnchor
from .pairs import TeacherPairs

if TYPE_CHECKING:
    from .gan import GANTerm

NORMALISER_EPS = 1e-8

# ---------------------------------------------------------------------------------------------
# pure tensor math


def per_sample(sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[B] -> [B, 1, ..., 1] to broadcast over C, F, H, W."""
    return sigma.to(like.device, like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def noised(x0: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """`(1 - s) x0 + s eps`; differentiable in x0 (SGMD needs that, DMD calls it under no_grad)."""
    s = per_sample(sigma, x0)
    return (1 - s) * x0 + s * eps


def score_normaliser(g: torch.Tensor, d_teacher: torch.Tensor) -> torch.Tensor:
    """Per-sample `stopgrad(mean_{C,F,H,W} |g - D_T|)`, shaped [B, 1, 1, 1, 1]."""
    return (g - d_teacher).abs().mean(dim=tuple(range(1, g.ndim)), keepdim=True).detach()


def flow_matching_loss(v_pred: torch.Tensor, eps: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """`0.5 mean((v - (eps - x0))^2)`: the fake score's loss on generator samples (L_RC)."""
    return 0.5 * (v_pred - (eps - x0)).pow(2).mean()


def guided_teacher_velocity(roles: Roles, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor,
                            uncond: torch.Tensor | None, scale: float, motion: float = 0.0,
                            fixed: torch.Tensor | None = None) -> torch.Tensor:
    """`samplers.guided` with the teacher role, under no_grad: standard-form CFG `v_u + w (v_c - v_u)`
    plus motion guidance `m`, in one batched call (w = 1 and m = 0: one plain conditional call)."""
    with torch.no_grad():
        return guided(roles.teacher, x, sigma, cond, uncond, scale, motion, fixed)


def expected_exit_index(num_steps: int, min_exit: int = 0) -> float:
    """Mean of the exit index, uniform over min_exit..num_steps-1."""
    return (min_exit + num_steps - 1) / 2


# ---------------------------------------------------------------------------------------------
# the shared part of an objective


@dataclass
class DistillationSetup:
    """Options every distillation objective has: the student's sampler, the teacher's guidance,
    the score noise level and the optional plug-ins (teacher anchor, teacher pairs, GAN head). SGMD and DMD2 add
    their own fields."""

    sigmas: torch.Tensor = field(default_factory=student_sigmas, metadata={
        "help": "student schedule with the final 0 (default: timesteps 1000,750,500,250 at shift 5)"})
    rule: str = field(default="euler", metadata={
        "help": "student update rule, identical in training and inference: euler (SGMD reference) or renoise (DMD2 / lcm)"})
    cfg_scale: float = field(default=3.0, metadata={
        "help": "teacher classifier-free guidance, standard form (1 = no guidance)"})
    motion_guidance: float = field(default=0.0, metadata={
        "help": "teacher motion guidance m: + m (v_c - v_c(the state with its frames averaged)); 0 = off"})
    still_pattern: torch.Tensor | None = field(default=None, metadata={
        "help": "[C, F, H, W] pattern every clean latent carries per frame, kept when frames are averaged (toy codec: its position code)"})
    score_shift: float = field(default=DEFAULT_STUDENT_SHIFT, metadata={
        "help": "shift of the noise-level distribution of the score terms: s = warp(U{0..999}/1000), clamped to [0.02, 0.98]"})
    diversity: TeacherAnchor | None = field(default=None, metadata={
        "help": "teacher-anchor diversity term (True, a dict of TeacherAnchor options, or None = off)"})
    gan: "GANTerm | None" = field(default=None, metadata={
        "help": "optional GAN term on the fake network's tokens (needs real videos); None = off"})
    pairs: TeacherPairs | None = field(default=None, metadata={
        "help": "optional teacher-pair regression of the student's first step (precomputed teacher samples); None = off"})

    def __post_init__(self):
        self.sigmas = validate_sigmas(torch.as_tensor(self.sigmas, dtype=torch.float32).detach().cpu().reshape(-1))
        if self.rule not in UPDATE_RULES:
            raise SGMDError(f"unknown update rule {self.rule!r}; choose one of {', '.join(UPDATE_RULES)}")
        if not self.cfg_scale > 0:
            raise SGMDError(f"cfg_scale must be positive (1 = no guidance); got {self.cfg_scale}")
        if not math.isfinite(self.motion_guidance) or self.motion_guidance < 0:
            raise SGMDError(f"motion_guidance must be >= 0 (0 = off); got {self.motion_guidance}")
        if not self.score_shift > 0:
            raise SGMDError(f"score_shift must be positive; got {self.score_shift}")
        self.diversity = TeacherAnchor.from_option(self.diversity)
        if self.diversity is not None:
            self.diversity.check_student(self.sigmas)
        if self.pairs is not None:
            self.pairs.check_student(self.sigmas)

    @classmethod
    def option_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @property
    def num_steps(self) -> int:
        return len(self.sigmas) - 1

    @property
    def min_exit_index(self) -> int:
        return self.diversity.min_exit_index if self.diversity is not None else 0

    # draws ----------------------------------------------------------------------------------

    def draw_exit_index(self, batch: Batch) -> int:
        """Uniform over the student steps (never 0 with the teacher anchor on)."""
        return int(torch.randint(self.min_exit_index, self.num_steps, (1,), generator=batch.generator).item())

    def draw_noise(self, batch: Batch) -> torch.Tensor:
        shape = (batch.context.shape[0], *batch.latent_shape)
        return torch.randn(shape, generator=batch.generator).to(batch.context.device)

    def draw_score_sigma(self, batch: Batch) -> torch.Tensor:
        return sample_score_sigma(batch.context.shape[0], batch.generator, self.score_shift, device=batch.context.device)

    def generator_sample(self, roles: Roles, batch: Batch, noise: torch.Tensor, exit_index: int) -> torch.Tensor:
        """Backward simulation: grad flows only through the exit step (wrap in no_grad for none)."""
        velocity = lambda x, sigma: roles.generator(x, sigma, batch.context)  # noqa: E731
        return rollout(velocity, noise, self.sigmas, self.rule, exit_index, batch.generator)

    def draw_generator_sample(self, roles: Roles, batch: Batch, grad: bool):
        """The random draws both phases start with, in one fixed order: exit index k, initial
        noise, the rollout to the generator sample g (grad through the exit step only if `grad`),
        then the score sigma s and noise eps. Returns (k, noise, g, s, eps)."""
        k = self.draw_exit_index(batch)
        noise = self.draw_noise(batch)
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            g = self.generator_sample(roles, batch, noise, k)
        s = self.draw_score_sigma(batch)
        eps = self.draw_noise(batch)
        return k, noise, g, s, eps

    def teacher_velocity(self, roles: Roles, x: torch.Tensor, sigma: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The guided teacher velocity (CFG and motion guidance as set), no grad."""
        return guided_teacher_velocity(roles, x.detach(), sigma, batch.context, batch.uncond, self.cfg_scale,
                                       self.motion_guidance, self.still_pattern)

    def teacher_passes(self) -> int:
        """Batch-B forward passes of one guided teacher call."""
        return guided_passes(self.cfg_scale, self.motion_guidance)

    def teacher_denoised(self, roles: Roles, x: torch.Tensor, sigma: torch.Tensor, batch: Batch) -> torch.Tensor:
        """`stopgrad(x - s G(T)(x, s, c))`, G = CFG (and motion guidance when on)."""
        x = x.detach()
        return denoised(x, sigma, self.teacher_velocity(roles, x, sigma, batch))

    def regression_terms(self, roles: Roles, batch: Batch, noise: torch.Tensor, logs: dict) -> torch.Tensor | float:
        """The plug-ins that regress the student on the teacher's sample from a given noise: the anchor
        (this update's noise, first step) and the teacher pairs (their own noises, drawn last)."""
        loss = 0.0
        if self.diversity is not None:
            term = self.diversity.loss(roles, batch, noise, lambda x, s: self.teacher_velocity(roles, x, s, batch))
            logs["diversity"] = float(term.detach())
            loss = loss + term
        if self.pairs is not None:
            term = self.pairs.loss(roles, batch, self.sigmas, self.rule)
            logs["pairs"] = float(term.detach())
            loss = loss + term
        return loss

    # the GAN plug-in (method doc s5; its generator side rides on the generator phase's fake call) --

    def extra_fake_parameters(self) -> list:
        """Parameters the fake optimizer must also own (the GAN head)."""
        return self.gan.parameters() if self.gan is not None else []

    def gan_tap(self):
        """Arm the GAN head's token tap around the generator phase's fake call (a no-op when off)."""
        return self.gan.tap if self.gan is not None else nullcontext()

    def gan_generator_term(self, logs: dict) -> torch.Tensor | float:
        """Non-saturating generator loss on the tokens of the fake call made inside `gan_tap()`; that
        call must keep its graph to g."""
        if self.gan is None:
            return 0.0
        term = self.gan.generator_term(self.gan.logits(train_head=False))
        logs["gan_generator"] = float(term.detach())
        return term

    # the fake-score loss both objectives use ------------------------------------------------

    def fake_loss(self, roles: Roles, batch: Batch) -> LossOutput:
        """Flow matching of the fake score on a fresh, fully stop-gradient generator sample (no teacher
        pass: the fake phase needs none); with the GAN on, plus the discriminator loss (real videos
        against these generator samples, read from the same fake call)."""
        k, _, g, s, eps = self.draw_generator_sample(roles, batch, grad=False)
        with self.gan_tap():
            v = roles.fake(noised(g, eps, s), s, batch.context)
        loss = flow_matching_loss(v, eps, g)
        logs = {"flow_matching": float(loss.detach()), "exit_index": k, "score_sigma": float(s.mean())}
        if self.gan is not None:
            logits_fake = self.gan.logits(train_head=True)
            d = self.gan.discriminator_term(roles, batch, logits_fake, self.draw_score_sigma(batch), self.draw_noise(batch))
            logs["gan_discriminator"] = float(d.detach())
            loss = loss + d
        logs["loss"] = float(loss.detach())
        return LossOutput(loss, logs)

    # cost accounting -----------------------------------------------------------------------

    def _rollout_passes(self, num_steps: int | None, fake_updates: int) -> dict:
        """Generator passes of the two phases plus the teacher's; the objective adds the fake's."""
        n = num_steps or self.num_steps
        ek = expected_exit_index(n, self.min_exit_index)
        return {
            "generator_forward_no_grad": ek + (ek + 1) * fake_updates,  # gen phase k steps; each fake update k+1
            "generator_forward_grad": 1.0,  # the exit step of the generator phase
            "teacher_forward_no_grad": float(self.teacher_passes()),
            "backward_generator": 1.0,
        }

    def _add_plugin_passes(self, p: dict, fake_updates: int) -> dict:
        """Add the plug-ins' passes (the GAN's real-video fake passes, the anchor's teacher steps, the
        pairs' generator pass) and the totals."""
        if self.gan is not None:
            for k, v in self.gan.passes(fake_updates).items():
                p[k] += v
        if self.diversity is not None:
            for k, v in self.diversity.passes(self.teacher_passes()).items():
                p[k] = p.get(k, 0.0) + v
        if self.pairs is not None:
            for k, v in self.pairs.passes(self.num_steps).items():
                p[k] = p.get(k, 0.0) + v
        p["forward_total"] = sum(v for k, v in p.items() if "_forward_" in k)
        p["backward_total"] = sum(v for k, v in p.items() if k.startswith("backward_"))
        return p
