"""Rectified-flow noise levels: shift warp, sigma <-> timestep, student and teacher schedules,
and the noise-level distribution of the score terms (method doc sections 1-3)."""
from __future__ import annotations

import torch

from .errors import SGMDError

TIMESTEP_SCALE = 1000.0  # network input t = 1000 * sigma (Wan / ComfyUI convention)
DEFAULT_STUDENT_TIMESTEPS = (1000, 750, 500, 250)
DEFAULT_STUDENT_SHIFT = 5.0
SCORE_SIGMA_RANGE = (0.02, 0.98)


def warp(u, shift: float):
    """Shift warp `k u / (1 + (k - 1) u)`; maps [0, 1] onto [0, 1], k > 1 pushes toward noise."""
    return shift * u / (1 + (shift - 1) * u)


def sigma_to_timestep(sigma):
    return sigma * TIMESTEP_SCALE


def timestep_to_sigma(t):
    return t / TIMESTEP_SCALE


def validate_sigmas(sigmas: torch.Tensor) -> torch.Tensor:
    """A sampling schedule: 1-D, in [0, 1], strictly decreasing, ending at 0."""
    if sigmas.ndim != 1 or sigmas.numel() < 2:
        raise SGMDError(f"a schedule needs at least one step plus the final 0; got {sigmas.tolist()}")
    if not torch.isfinite(sigmas).all() or sigmas.min() < 0 or sigmas.max() > 1:
        raise SGMDError(f"schedule values must lie in [0, 1] (0 = clean, 1 = pure noise); got {_fmt(sigmas)}")
    if not (sigmas[1:] < sigmas[:-1]).all():
        raise SGMDError(f"schedule must be strictly decreasing; got {_fmt(sigmas)}")
    if sigmas[-1] != 0:
        raise SGMDError(f"schedule must end at 0; got {_fmt(sigmas)}")
    return sigmas


def student_sigmas(timesteps=DEFAULT_STUDENT_TIMESTEPS, shift: float = DEFAULT_STUDENT_SHIFT, use_warp: bool = True) -> torch.Tensor:
    """Few-step schedule: raw timesteps (0..1000] -> sigma, warped by `shift`, then a final 0.
    Default `[1000, 750, 500, 250]` at shift 5 -> `[1, .9375, .8333, .625, 0]`."""
    ts = [float(t) for t in timesteps]
    if not ts or any(not (0 < t <= TIMESTEP_SCALE) for t in ts):
        raise SGMDError(f"student timesteps must lie in (0, 1000]; got {ts}")
    if shift <= 0:
        raise SGMDError(f"shift must be positive; got {shift}")
    u = torch.tensor(ts, dtype=torch.float64) / TIMESTEP_SCALE
    s = warp(u, shift) if use_warp else u
    return validate_sigmas(torch.cat([s, s.new_zeros(1)]).float())


def teacher_sigmas(steps: int, shift: float) -> torch.Tensor:
    """Uniform grid in u from 1 to 0, warped by `shift` (ComfyUI's `simple` schedule for Wan)."""
    if steps < 1:
        raise SGMDError(f"steps must be >= 1; got {steps}")
    u = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return warp(u, shift).float()


def parse_timesteps(text: str) -> list[float]:
    """'1000, 750, 500, 250' -> [1000., 750., 500., 250.] with a one-line error on garbage."""
    try:
        vals = [float(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError:
        raise SGMDError(f"schedule must be a comma-separated list of numbers, e.g. '1000, 750, 500, 250'; got {text!r}") from None
    if not vals:
        raise SGMDError("schedule is empty; e.g. '1000, 750, 500, 250'")
    return vals


def sample_score_sigma(batch: int, generator: torch.Generator | None = None, shift: float = DEFAULT_STUDENT_SHIFT,
                       clamp=SCORE_SIGMA_RANGE, device="cpu") -> torch.Tensor:
    """Noise level of the score terms: t ~ U{0..999}, s = warp(t/1000), clamped (method doc s3)."""
    t = torch.randint(0, 1000, (batch,), generator=generator, device="cpu").to(device)
    return warp(t.float() / TIMESTEP_SCALE, shift).clamp(*clamp)


def _fmt(s: torch.Tensor) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in s.tolist()) + "]"
