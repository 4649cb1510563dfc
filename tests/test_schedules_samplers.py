"""Flow-matching toolkit: schedules (closed forms, validation, score-noise distribution) and samplers
(CFG, update rules, exact recovery on an analytic velocity field, training rollout)."""
from __future__ import annotations

import math

import pytest
import torch

from sgmd.errors import SGMDError
from sgmd.samplers import (cfg_velocity, denoised, guided, guided_passes, motion_guided_denoised, still_state, few_step_update, model_velocity, rollout, sample_few_step,
                           sample_teacher)
from sgmd.schedules import (parse_timesteps, sample_score_sigma, sigma_to_timestep, student_sigmas, teacher_sigmas,
                            timestep_to_sigma, validate_sigmas, warp)

torch.set_num_threads(1)


def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert msg and "\n" not in msg, msg
    return msg


def _warp_inv(s, k):
    """Inverse of warp: u = s / (k - (k - 1) s)."""
    return s / (k - (k - 1) * s)


# ---------------------------------------------------------------------------------------------
# schedules


@pytest.mark.parametrize("u,k,want", [
    (0.0, 5.0, 0.0), (1.0, 5.0, 1.0), (0.5, 5.0, 2.5 / 3.0), (0.75, 5.0, 0.9375), (0.25, 5.0, 0.625),
    (0.5, 8.0, 8.0 / 9.0), (0.25, 8.0, 8.0 / 11.0), (0.75, 8.0, 0.96), (0.3, 1.0, 0.3), (0.5, 0.5, 1.0 / 3.0),
])
def test_warp_values(u, k, want):
    assert warp(u, k) == pytest.approx(want, abs=1e-12)
    assert warp(torch.tensor([u], dtype=torch.float64), k).item() == pytest.approx(want, abs=1e-12)


def test_warp_monotone_inverse_and_composition():
    u = torch.linspace(0, 1, 1001, dtype=torch.float64)
    for k in (1.0, 3.0, 5.0, 8.0):
        s = warp(u, k)
        assert (s[1:] > s[:-1]).all() and s[0] == 0 and s[-1] == 1
        assert torch.allclose(_warp_inv(s, k), u, atol=1e-12)
        assert (s >= u - 1e-15).all()  # k >= 1 pushes toward noise
    assert torch.allclose(warp(warp(u, 2.0), 4.0), warp(u, 8.0), atol=1e-12)  # warps compose by product


def test_sigma_timestep_conversion():
    assert sigma_to_timestep(0.25) == 250.0
    assert timestep_to_sigma(750.0) == 0.75
    s = torch.rand(10, dtype=torch.float64)
    assert torch.allclose(timestep_to_sigma(sigma_to_timestep(s)), s)


def test_student_sigmas_default_and_shift8():
    assert student_sigmas().tolist() == pytest.approx([1.0, 0.9375, 5.0 / 6.0, 0.625, 0.0], abs=1e-6)
    assert student_sigmas(shift=8).tolist() == pytest.approx([1.0, 0.96, 8.0 / 9.0, 8.0 / 11.0, 0.0], abs=1e-6)
    assert student_sigmas(use_warp=False).tolist() == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0], abs=1e-7)
    assert student_sigmas([1000, 500], shift=3).tolist() == pytest.approx([1.0, 0.75, 0.0], abs=1e-7)
    s = student_sigmas()
    assert s.dtype == torch.float32 and s.ndim == 1


def test_student_sigmas_errors():
    for bad in ([], [0, 500], [1200, 500], [-5]):
        with pytest.raises(SGMDError) as e:
            student_sigmas(bad)
        _one_line(e)
    with pytest.raises(SGMDError) as e:
        student_sigmas(shift=0)
    _one_line(e)
    with pytest.raises(SGMDError) as e:  # not decreasing -> validate_sigmas
        student_sigmas([500, 750])
    _one_line(e)


@pytest.mark.parametrize("steps,shift", [(1, 5.0), (4, 5.0), (20, 8.0), (50, 1.0)])
def test_teacher_sigmas(steps, shift):
    s = teacher_sigmas(steps, shift)
    assert s.shape == (steps + 1,)
    assert s[0] == 1 and s[-1] == 0
    validate_sigmas(s)
    u = torch.linspace(1, 0, steps + 1, dtype=torch.float64)
    want = shift * u / (1 + (shift - 1) * u)
    assert torch.allclose(s.double(), want, atol=1e-6)


def test_teacher_sigmas_match_comfyui_simple_at_4_steps():
    # ComfyUI BasicScheduler("simple", 4) at shift 5 == the default student schedule
    assert torch.allclose(teacher_sigmas(4, 5.0), student_sigmas(), atol=1e-6)
    with pytest.raises(SGMDError) as e:
        teacher_sigmas(0, 5.0)
    _one_line(e)


@pytest.mark.parametrize("bad,word", [
    ([1.0, 0.5, 0.5, 0.0], "decreasing"),
    ([0.5, 1.0, 0.0], "decreasing"),
    ([1.2, 0.5, 0.0], "[0, 1]"),
    ([1.0, -0.1, 0.0], "[0, 1]"),
    ([1.0, float("nan"), 0.0], "[0, 1]"),
    ([1.0, 0.5, 0.1], "end at 0"),
    ([0.0], "at least"),
])
def test_validate_sigmas_errors(bad, word):
    with pytest.raises(SGMDError) as e:
        validate_sigmas(torch.tensor(bad))
    assert word in _one_line(e)


def test_validate_sigmas_errors_2d():
    with pytest.raises(SGMDError) as e:
        validate_sigmas(torch.tensor([[1.0, 0.0]]))
    _one_line(e)
    ok = torch.tensor([1.0, 0.3, 0.0])
    assert validate_sigmas(ok) is ok


def test_parse_timesteps():
    assert parse_timesteps("1000, 750, 500, 250") == [1000.0, 750.0, 500.0, 250.0]
    assert parse_timesteps(" 1000;750 ,500, ") == [1000.0, 750.0, 500.0]
    assert parse_timesteps("999.5") == [999.5]
    for bad in ("abc", "1000, x", "1000 750", "", " , ;", "[1000, 500]"):
        with pytest.raises(SGMDError) as e:
            parse_timesteps(bad)
        _one_line(e)


@pytest.mark.parametrize("shift", [5.0, 8.0, 1.0])
def test_sample_score_sigma_distribution(shift):
    """t ~ U{0..999}, s = clamp(warp(t / 1000), 0.02, 0.98): a warped discrete uniform.
    Closed-form CDF for 0.02 <= y < 0.98: F(y) = (floor(1000 warp^-1(y)) + 1) / 1000."""
    n = 100_000
    g = torch.Generator().manual_seed(1234)
    s = sample_score_sigma(n, g, shift=shift).double()
    assert s.shape == (n,)
    assert s.min() >= 0.02 - 1e-7 and s.max() <= 0.98 + 1e-7

    # deterministic given the generator
    again = sample_score_sigma(n, torch.Generator().manual_seed(1234), shift=shift).double()
    assert torch.equal(s, again)

    # every value is an atom of the support: clamped ends, else warp(j / 1000) for an integer j
    inner = s[(s > 0.02 + 1e-6) & (s < 0.98 - 1e-6)]
    j = 1000 * _warp_inv(inner, shift)
    assert (j - j.round()).abs().max() < 1e-3

    # empirical CDF vs closed form at the midpoints between atoms (KS-style bound)
    mids = warp((torch.arange(1000, dtype=torch.float64) + 0.5) / 1000, shift)
    y = mids[(mids >= 0.02) & (mids < 0.98)]
    want = (torch.floor(1000 * _warp_inv(y, shift)) + 1) / 1000
    emp = torch.searchsorted(s.sort().values, y, right=True).double() / n  # fraction of samples <= y
    ks = (emp - want).abs().max().item()
    assert ks < 1.95 / math.sqrt(n) + 1e-3, ks  # 99.9% KS quantile; seed is fixed so this is exact

    # the clamped atoms carry the closed-form masses
    p_low = (math.floor(1000 * _warp_inv(0.02, shift)) + 1) / 1000
    p_high = 1 - math.ceil(1000 * _warp_inv(0.98, shift)) / 1000
    assert (s <= 0.02 + 1e-7).double().mean().item() == pytest.approx(p_low, abs=4 / math.sqrt(n))
    assert (s >= 0.98 - 1e-7).double().mean().item() == pytest.approx(p_high, abs=4 / math.sqrt(n))


# ---------------------------------------------------------------------------------------------
# samplers


class CountingModel(torch.nn.Module):
    """A fake Wan: v = a x + t / 1000 + mean(context); records each call's batch size and grad mode."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(0.7))
        self.calls = []

    def forward(self, x, t, context):
        self.calls.append((x.shape[0], torch.is_grad_enabled()))
        b = [-1] + [1] * (x.ndim - 1)
        return self.a * x + (t / 1000).reshape(b) + context.mean(dim=(1, 2)).reshape(b)


def _xs(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 4, 2, 3, 3, generator=g)
    cond = torch.randn(b, 5, 8, generator=g)
    uncond = torch.zeros(b, 5, 8)
    sigma = torch.tensor([0.9, 0.3])[:b]
    return x, cond, uncond, sigma


def test_model_velocity_uses_timestep_1000_sigma():
    m = CountingModel()
    x, cond, _, sigma = _xs()
    v = model_velocity(m, cond)(x, sigma)
    assert torch.equal(v, m(x, 1000 * sigma, cond))


def test_cfg_w1_is_exactly_the_conditional_in_one_pass():
    m = CountingModel()
    x, cond, uncond, sigma = _xs()
    with torch.no_grad():
        want = m(x, sigma_to_timestep(sigma), cond)
        m.calls.clear()
        got = cfg_velocity(m, cond, uncond, 1.0)(x, sigma)
        assert torch.equal(got, want)
        assert m.calls == [(2, False)]  # one pass, no doubled batch
        m.calls.clear()
        assert torch.equal(cfg_velocity(m, cond, None, 3.0)(x, sigma), want)  # no negative -> conditional
        assert len(m.calls) == 1


def test_cfg_w3_standard_form():
    m = CountingModel()
    x, cond, uncond, sigma = _xs()
    with torch.no_grad():
        v_c = m(x, sigma_to_timestep(sigma), cond)
        v_u = m(x, sigma_to_timestep(sigma), uncond)
        m.calls.clear()
        got = cfg_velocity(m, cond, uncond, 3.0)(x, sigma)
    assert torch.allclose(got, v_u + 3.0 * (v_c - v_u), atol=1e-6)
    assert m.calls == [(4, False)]  # one batched pass over [cond; uncond]


def test_cfg_w3_with_a_real_wan_model():
    from sgmd.wan import WanConfig, WanModel

    torch.manual_seed(0)
    model = WanModel(WanConfig(dim=128, ffn_dim=128, num_layers=1, text_dim=8, freq_dim=16)).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 16, 2, 4, 4, generator=g)
    cond, uncond = torch.randn(2, 3, 8, generator=g), torch.zeros(2, 3, 8)
    sigma = torch.tensor([0.8, 0.4])
    with torch.no_grad():
        v_c = model(x, 1000 * sigma, cond)
        v_u = model(x, 1000 * sigma, uncond)
        got = cfg_velocity(model, cond, uncond, 3.0)(x, sigma)
        assert torch.allclose(got, v_u + 3.0 * (v_c - v_u), atol=1e-5)
        assert torch.equal(cfg_velocity(model, cond, uncond, 1.0)(x, sigma), v_c)


def test_still_state_averages_the_frames_and_keeps_the_fixed_pattern():
    g = torch.Generator().manual_seed(3)
    x, _, _, sigma = _xs()
    assert torch.allclose(still_state(x, sigma), x.mean(2, keepdim=True).expand_as(x))
    # a clip whose content stands still, plus the fixed per-frame pattern, noised with noise that is the
    # same in every frame: its still state is itself, at any sigma
    fixed = torch.randn(4, 2, 3, 3, generator=g)
    content, eps = torch.randn(2, 4, 1, 3, 3, generator=g), torch.randn(2, 4, 1, 3, 3, generator=g)
    s = sigma.view(-1, 1, 1, 1, 1)
    still = (1 - s) * (content + fixed) + s * eps
    assert torch.allclose(still_state(still, sigma, fixed), still, atol=1e-6)
    # a moving clip: the content's frames are averaged, the pattern is kept at its noised scale
    moving = torch.randn(2, 4, 2, 3, 3, generator=g)
    x = (1 - s) * (moving + fixed) + s * eps
    want = (1 - s) * (moving.mean(2, keepdim=True) + fixed) + s * eps
    assert torch.allclose(still_state(x, sigma, fixed), want, atol=1e-6)


def _motion_case(seed):
    """A counting model, inputs, a fixed per-frame pattern, and the model's cond / uncond / still-state velocities."""
    m = CountingModel()
    x, cond, uncond, sigma = _xs()
    fixed = torch.randn(4, 2, 3, 3, generator=torch.Generator().manual_seed(seed))
    t = sigma_to_timestep(sigma)
    with torch.no_grad():
        v = (m(x, t, cond), m(x, t, uncond), m(still_state(x, sigma, fixed), t, cond))
    m.calls.clear()
    return m, x, cond, uncond, sigma, fixed, v


def test_motion_guidance_closed_form_in_one_batched_pass():
    m, x, cond, uncond, sigma, fixed, (v_c, v_u, v_still) = _motion_case(4)
    with torch.no_grad():
        got = cfg_velocity(m, cond, uncond, 3.0, 0.5, fixed)(x, sigma)
        assert m.calls == [(6, False)]  # [cond; uncond; cond on the still state] in one pass
        assert torch.allclose(got, v_u + 3.0 * (v_c - v_u) + 0.5 * (v_c - v_still), atol=1e-6)
        m.calls.clear()
        got = cfg_velocity(m, cond, uncond, 1.0, 0.5, fixed)(x, sigma)  # no CFG: cond and still only
        assert m.calls == [(4, False)]
        assert torch.allclose(got, v_c + 0.5 * (v_c - v_still), atol=1e-6)
    assert (guided_passes(3.0), guided_passes(3.0, 0.5), guided_passes(1.0, 0.5), guided_passes(1.0)) == (2, 3, 2, 1)


def test_motion_guidance_in_the_denoised_domain_matches_the_velocity_form():
    m, x, cond, uncond, sigma, fixed, (v_c, v_u, v_s) = _motion_case(6)
    xs = still_state(x, sigma, fixed)
    with torch.no_grad():
        want = denoised(x, sigma, cfg_velocity(m, cond, uncond, 3.0, 0.7, fixed)(x, sigma))
    got = motion_guided_denoised(x, denoised(x, sigma, v_u + 3.0 * (v_c - v_u)), denoised(x, sigma, v_c), xs,
                                 denoised(xs, sigma, v_s), 0.7)
    assert torch.allclose(got, want, atol=1e-5)


def test_motion_guidance_is_zero_for_a_model_that_reads_no_motion():
    class StillModel(torch.nn.Module):  # sees only the frame mean of its input: no motion to amplify
        def forward(self, x, t, context):
            return 0.5 * x.mean(2, keepdim=True).expand_as(x) + context.mean(dim=(1, 2)).view(-1, 1, 1, 1, 1)

    x, cond, uncond, sigma = _xs()
    with torch.no_grad():
        plain = cfg_velocity(StillModel(), cond, uncond, 3.0)(x, sigma)
        assert torch.allclose(guided(lambda a, s, c: StillModel()(a, s, c), x, sigma, cond, uncond, 3.0, 2.0), plain,
                              atol=1e-6)


def test_denoised_and_update_rules():
    x, _, _, sigma = _xs()
    v = torch.randn_like(x)
    sb = sigma.view(-1, 1, 1, 1, 1)
    assert torch.allclose(denoised(x, sigma, v), x - sb * v)
    s_next = torch.tensor([0.5, 0.1])
    nb = s_next.view(-1, 1, 1, 1, 1)
    assert torch.allclose(few_step_update(x, v, sigma, s_next, "euler"), x + (nb - sb) * v)
    eps = torch.randn_like(x)
    assert torch.allclose(few_step_update(x, v, sigma, s_next, "renoise", eps), (1 - nb) * (x - sb * v) + nb * eps)
    with pytest.raises(SGMDError) as e:
        few_step_update(x, v, sigma, s_next, "heun")
    _one_line(e)
    with pytest.raises(ValueError):
        few_step_update(x, v, sigma, s_next, "renoise", None)


# Analytic field. If the data is a single point x0*, then x_s = (1 - s) x0* + s eps, so
# eps = (x_s - (1 - s) x0*) / s and the exact velocity is v = eps - x0* = (x_s - x0*) / s.
# Euler: x' = x + (s' - s)(x - x0*)/s = x0* + (s'/s)(x - x0*): it stays on the straight line and
# lands on x0* at s' = 0, from any noise. The x0 estimate x - s v = x0* at every step.


def _point_field(x0_star):
    return lambda x, s: (x - x0_star) / s.view(-1, *([1] * (x.ndim - 1)))


@pytest.mark.parametrize("rule", ["euler", "renoise"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_few_step_sampler_recovers_single_point_exactly(rule, seed):
    g = torch.Generator().manual_seed(seed)
    x0_star = torch.randn(2, 4, 3, 4, 4, generator=g, dtype=torch.float64)
    noise = 3.0 * torch.randn(2, 4, 3, 4, 4, generator=g, dtype=torch.float64)
    for sigmas in (student_sigmas(), student_sigmas(shift=8), torch.tensor([1.0, 0.0]), teacher_sigmas(7, 3.0)):
        seen = []
        out = sample_few_step(_point_field(x0_star), noise, sigmas, rule=rule,
                              generator=torch.Generator().manual_seed(9), callback=lambda i, x, x0: seen.append((i, x, x0)))
        assert torch.allclose(out, x0_star, atol=1e-10, rtol=0)
        assert [i for i, _, _ in seen] == list(range(len(sigmas) - 1))
        for i, x_next, x0 in seen:
            assert torch.allclose(x0, x0_star, atol=1e-10, rtol=0)
            if rule == "euler":  # on the straight line from this noise: x = (1 - s') x0* + s' noise
                s1 = sigmas[i + 1].double()
                assert torch.allclose(x_next, (1 - s1) * x0_star + s1 * noise, atol=1e-6, rtol=0)


def test_teacher_sampler_recovers_single_point_exactly():
    g = torch.Generator().manual_seed(5)
    x0_star = torch.randn(1, 4, 2, 4, 4, generator=g, dtype=torch.float64)
    noise = torch.randn(1, 4, 2, 4, 4, generator=g, dtype=torch.float64)
    out = sample_teacher(_point_field(x0_star), noise, teacher_sigmas(25, 8.0))
    assert torch.allclose(out, x0_star, atol=1e-10, rtol=0)


def test_renoise_uses_fresh_noise_and_generator():
    g = torch.Generator().manual_seed(0)
    x0_star = torch.randn(1, 4, 1, 2, 2, generator=g)
    noise = torch.randn(1, 4, 1, 2, 2, generator=g)
    xs = {}
    for seed in (1, 1, 2):
        seen = []
        sample_few_step(_point_field(x0_star), noise, student_sigmas(), rule="renoise",
                        generator=torch.Generator().manual_seed(seed), callback=lambda i, x, x0: seen.append(x))
        xs.setdefault(seed, []).append(seen[0])
    assert torch.equal(xs[1][0], xs[1][1])  # reproducible
    assert not torch.allclose(xs[1][0], xs[2][0])  # the re-noise draws come from the generator


def test_sample_few_step_rejects_bad_schedule():
    with pytest.raises(SGMDError) as e:
        sample_few_step(lambda x, s: x, torch.zeros(1, 1), torch.tensor([1.0, 0.5]))
    _one_line(e)


class GradProbe:
    """A velocity with a parameter; records whether grad mode was on at each call."""

    def __init__(self):
        self.p = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
        self.q = torch.tensor(-0.2, dtype=torch.float64, requires_grad=True)
        self.grad_modes = []

    def __call__(self, x, s):
        self.grad_modes.append(torch.is_grad_enabled())
        sb = s.view(-1, *([1] * (x.ndim - 1)))
        return self.p * x + self.q * sb + torch.sin(x)


@pytest.mark.parametrize("rule", ["euler", "renoise"])
def test_rollout_exit_step_x0_and_gradient_path(rule):
    sigmas = student_sigmas().double()
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(2, 4, 2, 3, 3, generator=g, dtype=torch.float64)
    n = len(sigmas) - 1
    # reference: the deterministic (given the generator) sampler's intermediate x and x0
    ref = GradProbe()
    trace = []
    with torch.no_grad():
        sample_few_step(ref, noise, sigmas.float(), rule=rule, generator=torch.Generator().manual_seed(11),
                        callback=lambda i, x, x0: trace.append((x, x0)))
    for k in range(n):
        probe = GradProbe()
        out = rollout(probe, noise, sigmas, rule, exit_index=k, generator=torch.Generator().manual_seed(11))
        # steps 0..k-1 without grad, the exit step with grad
        assert probe.grad_modes == [False] * k + [True]
        assert out.requires_grad
        assert torch.allclose(out, trace[k][1], atol=1e-6), k
        # the gradient is that of the exit step only: x_k is a constant
        (out * out).sum().backward()
        x_k = noise if k == 0 else trace[k - 1][0]
        s_k = sigmas[k]
        # out = x_k - s_k (p x_k + q s_k + sin x_k)
        d_out = 2 * out.detach()
        assert torch.allclose(probe.p.grad, (d_out * (-s_k * x_k)).sum(), rtol=1e-6)
        assert torch.allclose(probe.q.grad, (d_out * (-s_k * s_k)).sum(), rtol=1e-6)


def test_rollout_exit_index_range():
    for k in (-1, 4):
        with pytest.raises(ValueError):
            rollout(lambda x, s: x, torch.zeros(1, 2), student_sigmas(), "euler", exit_index=k)


def test_rollout_recovers_single_point_at_every_exit():
    g = torch.Generator().manual_seed(8)
    x0_star = torch.randn(1, 4, 2, 2, 2, generator=g, dtype=torch.float64)
    noise = torch.randn(1, 4, 2, 2, 2, generator=g, dtype=torch.float64)
    for rule in ("euler", "renoise"):
        for k in range(4):
            out = rollout(_point_field(x0_star), noise, student_sigmas().double(), rule, k,
                          generator=torch.Generator().manual_seed(0))
            assert torch.allclose(out, x0_star, atol=1e-10, rtol=0)
