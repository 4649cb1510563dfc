"""bench/pullback.py: its gradients are DMD's `r` and SGMD's `(1-s) J_F^T [...]` in the same units
(closed form with a linear fake denoiser), and its finite-difference directional derivative is exact
on a quadratic map up to rounding."""
import importlib.util
import os

import torch

from sgmd.objectives.common import NORMALISER_EPS, noised

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("pullback", os.path.join(ROOT, "bench", "pullback.py"))
pullback = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pullback)

SHAPE = (2, 1, 2, 2)
D = 8


def _linear_denoiser(A, s):
    return lambda x: x - s.view(-1, 1, 1, 1, 1) * (x.flatten(1) @ A.T).view_as(x)


def test_gradients_are_dmd_residual_and_its_pull_back():
    gen = torch.Generator().manual_seed(0)
    A, T = (torch.randn(D, D, generator=gen, dtype=torch.float64) * 0.5 for _ in range(2))
    g = torch.randn(3, *SHAPE, generator=gen, dtype=torch.float64)
    eps = torch.randn(3, *SHAPE, generator=gen, dtype=torch.float64)
    s = torch.tensor([0.2, 0.6, 0.95], dtype=torch.float64)
    lam = 0.1
    r, pull_fisher, pull_full = pullback.generator_gradients(g, eps, s, _linear_denoiser(A, s), _linear_denoiser(T, s), lam)

    x = noised(g, eps, s)
    d_fake, d_teacher = _linear_denoiser(A, s)(x), _linear_denoiser(T, s)(x)
    n = (g - d_teacher).abs().mean(dim=(1, 2, 3, 4), keepdim=True)
    want_r = (d_fake - d_teacher) / n
    assert torch.allclose(r, want_r, rtol=1e-12, atol=1e-12)
    nr = (d_fake - g) / s.view(-1, 1, 1, 1, 1)
    inner = (d_fake - d_teacher) / (n + NORMALISER_EPS)  # the loss's normaliser carries its epsilon
    for b in range(3):
        jt = (torch.eye(D, dtype=A.dtype) - s[b] * A).T  # J_F^T of the linear fake
        assert torch.allclose(pull_fisher[b].flatten(), (1 - s[b]) * jt @ inner[b].flatten(), rtol=1e-10, atol=1e-12)
        want_full = (1 - s[b]) * jt @ (inner[b] - lam * nr[b]).flatten()
        assert torch.allclose(pull_full[b].flatten(), want_full, rtol=1e-10, atol=1e-12)
    # the printed measures: cosine 1 and ratio (1 - s) when J_F = I (A = 0)
    r0, p0, _ = pullback.generator_gradients(g, eps, s, _linear_denoiser(A * 0, s), _linear_denoiser(T, s), lam)
    assert torch.allclose(pullback._cos(p0, r0), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(pullback._ratio(p0, r0), 1 - s, rtol=1e-6)


def test_directional_derivative_of_a_quadratic():
    gen = torch.Generator().manual_seed(1)
    M = torch.randn(D, D, generator=gen, dtype=torch.float64)
    f = lambda x: (x.flatten(1) @ M.T).pow(2).view_as(x)  # noqa: E731  J v = 2 (M x) * (M v)
    x = torch.randn(2, *SHAPE, generator=gen, dtype=torch.float64)
    v = torch.randn(2, *SHAPE, generator=gen, dtype=torch.float64) * 100  # scale must not matter
    want = (2 * (x.flatten(1) @ M.T) * (v.flatten(1) @ M.T)).view_as(x)
    got = pullback.directional_derivative(f, x, v)
    assert torch.allclose(got, want, rtol=1e-8, atol=1e-8)


def test_toward_named_speed_uses_the_other_speed_word_and_skips_unnamed():
    from sgmd import toyvideo
    from sgmd.toy_posterior import posterior_mean
    prompts = ["a red circle moving left slowly", "a blue square", "a white square moving up quickly"]
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, 16, toyvideo.FRAMES, toyvideo.SIZE, toyvideo.SIZE, generator=gen)
    s = torch.full((3,), 0.95)
    named = [0, 2]
    delta = (posterior_mean(x[named], s[named], [prompts[i] for i in named])
             - posterior_mean(x[named], s[named], ["a red circle moving left quickly", "a white square moving up slowly"])).float()
    r = torch.randn(x.shape, generator=gen)
    r[named] = -delta  # DMD's update -r is exactly the direction toward the named speed
    pull = torch.randn(x.shape, generator=gen)
    pull[named] = delta  # SGMD's update -pull is exactly away from it
    out = pullback.toward_named_speed(prompts, x, s, r, pull)
    assert out["speed_clips"] == 2
    assert torch.allclose(out["speed_dmd"], torch.ones(2), atol=1e-5)
    assert torch.allclose(out["speed_sgmd"], -torch.ones(2), atol=1e-5)
    assert pullback.toward_named_speed(["a red circle", "a blue square moving left"], x[:2], s[:2], r[:2], pull[:2]) == {}
