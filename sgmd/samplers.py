"""Samplers: classifier-free guidance, the two few-step update rules, backward simulation with a
random exit step (training rollout), and the multi-step CFG teacher sampler.

A `velocity` callable is `f(x, sigma[B]) -> v` (conditioning already bound); `model_velocity`
binds a Wan model and a text context. Everything here is pure tensor math (method doc s1-2)."""
from __future__ import annotations

from typing import Callable

import torch

from .errors import SGMDError
from .schedules import sigma_to_timestep, validate_sigmas

UPDATE_RULES = ("euler", "renoise")
# The teacher's classifier-free guidance scale, standard form: what the CFG teacher is sampled with
# and what a student is distilled toward (the method reference uses 3; the embedded teacher is
# measured at 3, 5 and 7 in docs/tiny-model.md).
DEFAULT_GUIDANCE = 3.0
Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def model_velocity(model, context: torch.Tensor) -> Velocity:
    return lambda x, sigma: model(x, sigma_to_timestep(sigma), context)


def cfg_combine(v_c: torch.Tensor, v_u: torch.Tensor, scale: float) -> torch.Tensor:
    """Standard-form CFG `v_u + w (v_c - v_u)`: the one place the guidance form is written."""
    return v_u + scale * (v_c - v_u)


def still_state(x: torch.Tensor, sigma: torch.Tensor, fixed: torch.Tensor | None = None) -> torch.Tensor:
    """The state `x` `[B, C, F, H, W]` with its frames averaged: the same noisy clip standing still.
    `fixed` `[C, F, H, W]` is a pattern every clean latent carries frame by frame (the toy codec's
    position code); it is taken out before averaging and put back scaled by `1 - sigma`, as noising
    scales it, so the still state still says which frame is which."""
    if fixed is None:
        return x.mean(2, keepdim=True).expand_as(x)
    f = fixed.to(x) * (1 - _b(sigma, x))
    return (x - f).mean(2, keepdim=True).expand_as(x) + f


def guided(call, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor | None,
           scale: float, motion: float = 0.0, fixed: torch.Tensor | None = None) -> torch.Tensor:
    """The teacher's guided velocity, in one batched call of `call(x, sigma, context)`:
    `v_u + w (v_c - v_u) + m (v_c - v_c(still_state(x)))`. The second term is *motion guidance*:
    it pushes away from what the model predicts for the same state with its frames averaged, so a
    clip commits to the motion its state has begun to show. w = 1 drops the uncond pass, m = 0 the
    still pass; both: one plain conditional pass."""
    use_uncond = scale != 1.0 and uncond is not None
    xs, ctx = [x], [cond]
    if use_uncond:
        xs, ctx = xs + [x], ctx + [uncond]
    if motion:
        xs, ctx = xs + [still_state(x, sigma, fixed)], ctx + [cond]
    out = call(torch.cat(xs), sigma.repeat(len(xs)), torch.cat(ctx)).chunk(len(xs))
    v_c = out[0]
    v = cfg_combine(v_c, out[1], scale) if use_uncond else v_c
    return v + motion * (v_c - out[-1]) if motion else v


def motion_guided_denoised(x: torch.Tensor, x0_guided: torch.Tensor, x0_cond: torch.Tensor, x_still: torch.Tensor,
                           x0_still: torch.Tensor, motion: float) -> torch.Tensor:
    """Motion guidance in the denoised domain, as samplers that work on x0 (ComfyUI's post-CFG hooks) see
    it: with x0 = x - s v, `+ m (v_c - v_still)` becomes `+ m ((x0_c - x) - (x0_still - x_still))`."""
    return x0_guided + motion * ((x0_cond - x) - (x0_still - x_still))


def guided_passes(scale: float, motion: float = 0.0) -> int:
    """Cost of one `guided` call (with an uncond) in batch-B forward passes."""
    return 1 + (scale != 1.0) + bool(motion)


def cfg_velocity(model, cond: torch.Tensor, uncond: torch.Tensor | None, scale: float, motion: float = 0.0,
                 fixed: torch.Tensor | None = None) -> Velocity:
    """`guided` with a Wan model: standard-form CFG `v_u + w (v_c - v_u)` plus motion guidance `m`
    (`fixed`: see `still_state`). w = 1 and m = 0 is the plain conditional model (one pass)."""
    if (scale == 1.0 or uncond is None) and not motion:
        return model_velocity(model, cond)
    call = lambda x, s, c: model(x, sigma_to_timestep(s), c)  # noqa: E731
    return lambda x, sigma: guided(call, x, sigma, cond, uncond, scale, motion, fixed)


def denoised(x: torch.Tensor, sigma: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """x0 estimate `x - s v`; sigma is [B] and broadcast over C, F, H, W."""
    return x - _b(sigma, x) * v


def few_step_update(x, v, sigma, sigma_next, rule: str, noise: torch.Tensor | None = None):
    """One student step. `euler`: x + (s' - s) v (SGMD reference, ComfyUI `euler`).
    `renoise`: (1 - s') x0 + s' eps_fresh (DMD2 / Self-Forcing, ComfyUI `lcm`)."""
    if rule == "euler":
        return x + _b(sigma_next - sigma, x) * v
    if rule == "renoise":
        x0 = denoised(x, sigma, v)
        if noise is None:
            raise ValueError("renoise needs fresh noise")
        return (1 - _b(sigma_next, x)) * x0 + _b(sigma_next, x) * noise
    raise SGMDError(f"unknown update rule {rule!r}; choose one of {', '.join(UPDATE_RULES)}")


def sample_few_step(velocity: Velocity, noise: torch.Tensor, sigmas: torch.Tensor, rule: str = "euler",
                    generator: torch.Generator | None = None, callback=None) -> torch.Tensor:
    """Run the whole student schedule from `noise` (at sigmas[0]) to a clean sample."""
    sigmas = validate_sigmas(sigmas.float().cpu())
    x = noise  # pure noise at sigmas[0] (= 1 for text-to-video)
    for i in range(len(sigmas) - 1):
        x, x0 = _step(velocity, x, sigmas, i, rule, generator)
        if callback is not None:
            callback(i, x, x0)
    return x


def _step(velocity, x, sigmas, i, rule, generator):
    b = x.shape[0]
    s = sigmas[i].to(x.device).expand(b)
    s_next = sigmas[i + 1].to(x.device).expand(b)
    v = velocity(x, s)
    noise = None
    if rule == "renoise" and sigmas[i + 1] > 0:
        noise = torch.randn(x.shape, generator=generator, device="cpu", dtype=x.dtype).to(x.device)
    x0 = denoised(x, s, v)
    x_next = x0 if sigmas[i + 1] == 0 else few_step_update(x, v, s, s_next, rule, noise)
    return x_next, x0


def rollout(velocity: Velocity, noise: torch.Tensor, sigmas: torch.Tensor, rule: str, exit_index: int,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Backward simulation: steps 0..k-1 without grad, step k with grad; returns that step's x0
    (the "generator sample"). `exit_index` is drawn by the caller, shared across ranks."""
    n = len(sigmas) - 1
    if not 0 <= exit_index < n:
        raise ValueError(f"exit_index {exit_index} outside 0..{n - 1}")
    x = noise
    with torch.no_grad():
        for i in range(exit_index):
            x, _ = _step(velocity, x, sigmas, i, rule, generator)
    s = sigmas[exit_index].to(x.device).expand(x.shape[0])
    return denoised(x, s, velocity(x, s))


def sample_teacher(velocity: Velocity, noise: torch.Tensor, sigmas: torch.Tensor, callback=None) -> torch.Tensor:
    """Multi-step deterministic Euler (the teacher's sampler; guidance lives in `velocity`). `sigmas` is
    one schedule `[steps + 1]` for the batch, or one per clip `[steps + 1, B]`."""
    x = noise
    for i in range(len(sigmas) - 1):
        s = sigmas[i].to(x.device).expand(x.shape[0])
        v = velocity(x, s)
        if callback is not None:
            callback(i, x, denoised(x, s, v))
        x = x + _b(sigmas[i + 1] - sigmas[i], x).to(x.device) * v
    return x


def x0_sampler(rule: str, check_interrupt=None):
    """The few-step rule as a sampler in the k-diffusion calling convention (ComfyUI's `KSAMPLER`):
    `fn(model, x, sigmas, extra_args=None, callback=None, disable=None)`, where
    `model(x, sigma[B], **extra_args)` returns the denoised x0 (guidance already applied).
    Each step: `v = (x - x0) / s`, then `few_step_update`; the last step (to 0) returns x0.

    `renoise` draws its fresh noise from `torch.Generator("cpu").manual_seed(extra_args["seed"])`
    advanced past one draw of x's shape: the stream of `sgmd.noise.noise_and_generator`, so a clip
    sampled from that seed's noise continues exactly like `sample_few_step` (seed missing -> 0).
    `check_interrupt()` is called before every model call (it may raise to cancel)."""
    if rule not in UPDATE_RULES:
        raise SGMDError(f"unknown update rule {rule!r}; choose one of {', '.join(UPDATE_RULES)}")

    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None, **_):
        extra_args = extra_args or {}
        generator = None
        if rule == "renoise":
            generator = torch.Generator("cpu").manual_seed(int(extra_args.get("seed") or 0))
            torch.randn(x.shape, generator=generator, dtype=torch.float32)  # the initial noise of that seed
        s_in = x.new_ones([x.shape[0]])
        for i in range(len(sigmas) - 1):
            if check_interrupt is not None:
                check_interrupt()
            s, s_next = sigmas[i], sigmas[i + 1]
            x0 = model(x, s * s_in, **extra_args)
            if callback is not None:
                callback({"x": x, "i": i, "sigma": s, "sigma_hat": s, "denoised": x0})
            if s_next == 0:
                x = x0
                continue
            noise = None
            if generator is not None:
                noise = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x)
            x = few_step_update(x, (x - x0) / s, s * s_in, s_next * s_in, rule, noise)
        return x

    return sample


def _b(sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    sigma = torch.as_tensor(sigma, device=like.device, dtype=like.dtype)
    return sigma.reshape(-1, *([1] * (like.ndim - 1))) if sigma.ndim else sigma
