"""SGMD / DMD2 objectives: closed-form gradients of the pure losses, randomness and pass counts with
toy linear roles, and the two training phases on a tiny real Wan with LoRA adapters."""
import pytest
import torch
from torch import nn

from sgmd.errors import SGMDError
from sgmd.lora import AdapterRoles, adapter_parameters, attach_lora, base_state_dict
from sgmd.objectives import (
    DMD2,
    OBJECTIVE_NAMES,
    SGMD,
    Batch,
    GANTerm,
    TeacherAnchor,
    TeacherPairs,
    dmd_loss,
    flow_matching_loss,
    make_objective,
    sgmd_generator_loss,
)
from sgmd.objectives.common import guided_teacher_velocity, noised
from sgmd.samplers import still_state
from sgmd.wan import WanConfig, WanModel

SHAPE = (2, 1, 2, 2)  # C, F, H, W of the toy tensors: 8 numbers per sample
D = 8

# ---------------------------------------------------------------------------------------------
# closed forms (pure functions, float64)


def linear_denoiser(A):
    """D(x) = x - s v(x) with v(x) = A x_flat: input Jacobian J = I - s A."""
    def d(x, s):
        v = (x.flatten(1) @ A.T).view_as(x)
        return x - s.view(-1, 1, 1, 1, 1) * v
    return d


@pytest.fixture
def toy_terms():
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(D, D, generator=gen, dtype=torch.float64) * 0.5
    T = torch.randn(D, D, generator=gen, dtype=torch.float64) * 0.5
    g = torch.randn(2, *SHAPE, generator=gen, dtype=torch.float64, requires_grad=True)
    eps = torch.randn(2, *SHAPE, generator=gen, dtype=torch.float64)
    s = torch.tensor([0.3, 0.85], dtype=torch.float64)
    return A, T, g, eps, s


def test_sgmd_gradient_matches_closed_form(toy_terms):
    A, T, g, eps, s = toy_terms
    lam = 0.1
    x = noised(g, eps, s)
    d_fake = linear_denoiser(A)(x, s)
    d_teacher = linear_denoiser(T)(x, s).detach()
    loss, terms = sgmd_generator_loss(g, s, d_fake, d_teacher, lam)
    (grad,) = torch.autograd.grad(loss, g)

    N = g.numel()
    sb = s.view(-1, 1, 1, 1, 1)
    n = (g - d_teacher).abs().mean(dim=(1, 2, 3, 4), keepdim=True).detach()
    inner = ((d_fake - d_teacher) / n - lam * (d_fake - g) / sb).detach().flatten(1)
    want = torch.stack([(1 - s[b]) / N * (torch.eye(D, dtype=A.dtype) - s[b] * A).T @ inner[b] for b in range(2)])
    assert (grad.flatten(1) - want).abs().max() <= 1e-5 * max(1.0, want.abs().max().item())
    assert torch.allclose(grad.flatten(1), want, rtol=1e-6, atol=1e-12)
    # values: L_fish and L_NR = 0.5 mean r^2
    r = (d_fake - g) / sb
    assert torch.isclose(terms["neg_residual"], 0.5 * r.pow(2).mean())
    assert torch.isclose(terms["fisher"], (0.5 * (d_fake - d_teacher).pow(2) / n).mean())


def test_dmd_gradient_matches_closed_form(toy_terms):
    A, T, g, eps, s = toy_terms
    with torch.no_grad():
        x = noised(g, eps, s)
        d_fake, d_teacher = linear_denoiser(A)(x, s), linear_denoiser(T)(x, s)
    loss, _ = dmd_loss(g, d_fake, d_teacher)
    (grad,) = torch.autograd.grad(loss, g)
    n = (g - d_teacher).abs().mean(dim=(1, 2, 3, 4), keepdim=True).detach()
    assert torch.allclose(grad, (d_fake - d_teacher) / (n * g.numel()), rtol=1e-6, atol=1e-12)
    # a NaN in the fake's estimate must not poison the step
    d_bad = d_fake.clone()
    d_bad[0, 0, 0, 0, 0] = float("nan")
    (grad,) = torch.autograd.grad(dmd_loss(g, d_bad, d_teacher)[0], g)
    assert torch.isfinite(grad).all()


def test_fake_loss_gradient_is_flow_matching(toy_terms):
    _, _, g, eps, _ = toy_terms
    v = torch.randn_like(eps, requires_grad=True)
    (grad,) = torch.autograd.grad(flow_matching_loss(v, eps, g.detach()), v)
    assert torch.allclose(grad, (v - (eps - g)).detach() / v.numel(), rtol=1e-6, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# objectives on toy roles: randomness, pass counts, plug-ins


class ToyRoles:
    """Linear velocity networks that log every call as (role, grad enabled, batch / B)."""

    def __init__(self, b=2, teacher_velocity=None):
        torch.manual_seed(0)
        self.gen_net, self.fake_net, self.teacher_net = (nn.Linear(D, D) for _ in range(3))
        self.b, self.teacher_velocity, self.calls = b, teacher_velocity, []

    def _run(self, role, net, x, sigma, context):
        self.calls.append((role, torch.is_grad_enabled(), x.shape[0] / self.b))
        return (net(x.flatten(1)) + context.mean(dim=(1, 2))[:, None]).view_as(x)

    def generator(self, x, sigma, context):
        return self._run("generator", self.gen_net, x, sigma, context)

    def fake(self, x, sigma, context):
        return self._run("fake", self.fake_net, x, sigma, context)

    def teacher(self, x, sigma, context):
        if self.teacher_velocity is not None:
            self.calls.append(("teacher", torch.is_grad_enabled(), x.shape[0] / self.b))
            return self.teacher_velocity.repeat(x.shape[0] // self.teacher_velocity.shape[0], 1, 1, 1, 1)
        return self._run("teacher", self.teacher_net, x, sigma, context)

    def count(self):
        out = {}
        for role, grad, k in self.calls:
            key = f"{role}_forward_{'grad' if grad else 'no_grad'}"
            out[key] = out.get(key, 0.0) + k
        self.calls = []
        return out


def toy_batch(seed=0, b=2):
    gen = torch.Generator().manual_seed(seed)
    return Batch(context=torch.randn(b, 3, 5, generator=gen), uncond=torch.zeros(b, 3, 5), latent_shape=SHAPE, generator=gen)


def toy_pairs(n=5, weight=0.05, every_step=False):
    gen = torch.Generator().manual_seed(7)
    return TeacherPairs(noise=torch.randn(n, *SHAPE, generator=gen), context=torch.randn(n, 3, 5, generator=gen),
                        target=torch.randn(n, *SHAPE, generator=gen), weight=weight, every_step=every_step)


@pytest.mark.parametrize("name,options", [("sgmd", {}), ("dmd2", {}), ("sgmd", {"diversity": True}),
                                          ("dmd2", {"cfg_scale": 1.0, "rule": "renoise"}),
                                          ("sgmd", {"motion_guidance": 0.5, "diversity": True}),
                                          ("dmd2", {"pairs": toy_pairs()}), ("sgmd", {"pairs": toy_pairs(), "diversity": True})])
def test_pass_counts_match_calls(name, options):
    """Count the real calls for every exit index; their mean is `passes_per_iteration`."""
    obj = make_objective(name, **options)
    roles, n = ToyRoles(), obj.num_steps
    exits = range(obj.min_exit_index, n)
    total = {}
    for k in exits:
        obj.draw_exit_index = lambda batch, k=k: k
        out = obj.generator_loss(roles, toy_batch())
        gen_phase = roles.count()
        assert out.logs["exit_index"] == k and torch.isfinite(out.loss)
        assert gen_phase.get("generator_forward_no_grad", 0) == k
        for _ in range(obj.fake_updates_per_generator_update):
            obj.fake_loss(roles, toy_batch(1))
            fake_phase = roles.count()
            assert "teacher_forward_no_grad" not in fake_phase  # the fake phase never runs the teacher
            assert fake_phase == {"generator_forward_no_grad": k + 1, "fake_forward_grad": 1}
            gen_phase = {key: gen_phase.get(key, 0) + fake_phase.get(key, 0) for key in set(gen_phase) | set(fake_phase)}
        for key, v in gen_phase.items():
            total[key] = total.get(key, 0) + v / len(exits)
    want = obj.passes_per_iteration()
    for key, v in total.items():
        assert want[key] == pytest.approx(v), key
    assert want["forward_total"] == pytest.approx(sum(total.values()))


def test_pass_table_values():
    sg, dm = SGMD().passes_per_iteration(4), DMD2().passes_per_iteration(4)
    assert (sg["forward_total"], sg["backward_total"]) == (9.0, 3.0)
    assert (dm["forward_total"], dm["backward_total"]) == (23.0, 6.0)
    assert sg["teacher_forward_no_grad"] == dm["teacher_forward_no_grad"] == 2.0  # one batched CFG pass


def test_randomness_comes_from_batch_generator():
    roles = ToyRoles()
    for obj in (SGMD(), DMD2(rule="renoise")):
        a = obj.generator_loss(roles, toy_batch(5)).loss
        b = obj.generator_loss(roles, toy_batch(5)).loss
        c = obj.generator_loss(roles, toy_batch(6)).loss
        assert torch.equal(a, b) and not torch.equal(a, c)


def test_sgmd_objective_gradient_reaches_generator_only_through_losses():
    """Fake params frozen (as the loop does): the generator loss still trains the generator."""
    roles, obj = ToyRoles(), SGMD()
    obj.draw_exit_index = lambda batch: 2
    for p in roles.fake_net.parameters():
        p.requires_grad_(False)
    obj.generator_loss(roles, toy_batch()).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in roles.gen_net.parameters())
    assert all(p.grad is None for p in roles.fake_net.parameters())
    assert all(p.grad is None for p in roles.teacher_net.parameters())
    roles.gen_net.zero_grad()
    for p in roles.fake_net.parameters():
        p.requires_grad_(True)
    obj.fake_loss(roles, toy_batch()).loss.backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in roles.gen_net.parameters())
    assert all(p.grad is not None for p in roles.fake_net.parameters())


def test_motion_guidance_in_the_teacher_target():
    """With motion guidance the objective's teacher target is CFG plus m (v_c - v_c(still state)), the
    still state keeping the given per-frame pattern; 0 is plain CFG; negative is refused."""
    roles, batch = ToyRoles(), toy_batch()
    g = torch.Generator().manual_seed(5)
    shape = (2, 2, 1, 2)  # C, F, H, W: two frames to average, 8 numbers as the toy networks take
    x, sigma = torch.randn(2, *shape, generator=g), torch.tensor([0.8, 0.4])
    fixed = torch.randn(*shape, generator=g)
    obj = make_objective("sgmd", motion_guidance=0.5, still_pattern=fixed)
    with torch.no_grad():
        v_c, v_u = roles.teacher(x, sigma, batch.context), roles.teacher(x, sigma, batch.uncond)
        v_s = roles.teacher(still_state(x, sigma, fixed), sigma, batch.context)
    assert (v_c - v_s).abs().max() > 0.01  # the term is not empty here
    want = x - sigma.view(-1, 1, 1, 1, 1) * (v_u + 3.0 * (v_c - v_u) + 0.5 * (v_c - v_s))
    assert torch.allclose(obj.teacher_denoised(roles, x, sigma, batch), want, atol=1e-5)
    plain = make_objective("sgmd")
    assert torch.allclose(plain.teacher_denoised(roles, x, sigma, batch),
                          x - sigma.view(-1, 1, 1, 1, 1) * (v_u + 3.0 * (v_c - v_u)), atol=1e-5)
    with pytest.raises(SGMDError, match="motion_guidance"):
        make_objective("sgmd", motion_guidance=-1.0)


def test_teacher_anchor():
    # a straight-line teacher (constant velocity u) makes the anchor target exactly u
    u = torch.randn(2, *SHAPE)
    roles, anchor = ToyRoles(teacher_velocity=u), TeacherAnchor()
    batch = toy_batch()
    noise = torch.randn(2, *SHAPE)
    teacher = lambda x, s: guided_teacher_velocity(roles, x, s, batch.context, batch.uncond, 3.0)  # noqa: E731
    assert torch.allclose(anchor.target_velocity(teacher, noise), u, atol=1e-5)
    assert float(anchor.anchor_sigmas()[-1]) == pytest.approx(5 * (25 / 30) / (1 + 4 * (25 / 30)))
    obj = make_objective("sgmd", diversity={"weight": 0.05})
    exits = {obj.generator_loss(ToyRoles(), toy_batch(i)).logs["exit_index"] for i in range(30)}
    assert 0 not in exits and exits == {1, 2, 3}
    out = obj.generator_loss(ToyRoles(), toy_batch())
    assert out.logs["diversity"] > 0
    assert SGMD().min_exit_index == 0
    with pytest.raises(SGMDError):
        make_objective("sgmd", diversity=True, sigmas=[0.9, 0.5, 0.0])  # anchor needs sigma 1 first


def test_teacher_pairs():
    """The pair term is `w MSE(G(eps_i, 1, c_i), eps_i - x_i)` on pairs drawn after the objective's own draws,
    which it leaves as they were (same exit step and Fisher term as without it)."""
    pairs = toy_pairs(weight=0.3)
    roles, sigmas_seen = ToyRoles(), []
    generator = roles.generator
    roles.generator = lambda x, s, c: (sigmas_seen.append(s), generator(x, s, c))[1]
    for name in ("sgmd", "dmd2"):
        plain, with_pairs = make_objective(name), make_objective(name, pairs=pairs)
        batch = toy_batch(5)
        ref = plain.generator_loss(roles, batch)
        i = torch.randint(0, len(pairs), (2,), generator=batch.generator)
        with torch.no_grad():
            v = generator(pairs.noise[i], torch.ones(2), pairs.context[i])
        expected = 0.3 * (v - (pairs.noise[i] - pairs.target[i])).pow(2).mean()
        sigmas_seen.clear()
        out = with_pairs.generator_loss(roles, toy_batch(5))
        assert out.logs["pairs"] == pytest.approx(float(expected), rel=1e-6)
        assert out.logs["exit_index"] == ref.logs["exit_index"]
        assert float(out.loss.detach()) == pytest.approx(float(ref.loss.detach()) + float(expected), rel=1e-5)
        assert torch.equal(sigmas_seen[-1], torch.ones(2))  # the pairs call: the student's first step
    # every step: the student's own Euler rollout from the pair's noise, exit step k drawn after the pairs
    deep = toy_pairs(weight=0.3, every_step=True)
    obj, sigmas = make_objective("sgmd", pairs=deep), make_objective("sgmd").sigmas
    seen = set()
    for seed in range(12):
        batch = toy_batch(seed)
        make_objective("sgmd").generator_loss(roles, batch)
        i = torch.randint(0, len(deep), (2,), generator=batch.generator)
        k = int(torch.randint(0, 4, (1,), generator=batch.generator))
        seen.add(k)
        x, c = deep.noise[i], deep.context[i]
        with torch.no_grad():
            for j in range(k + 1):
                s = sigmas[j].expand(2)
                x0 = x - s.view(-1, 1, 1, 1, 1) * generator(x, s, c)
                x = x + (sigmas[j + 1] - sigmas[j]) * generator(x, s, c)
        expected = 0.3 * (x0 - deep.target[i]).pow(2).mean()
        roles.count()
        out = obj.generator_loss(roles, toy_batch(seed))
        assert out.logs["pairs"] == pytest.approx(float(expected), rel=1e-5)
        assert roles.count().get("generator_forward_no_grad", 0) == out.logs["exit_index"] + k  # the pairs' rollout: k
    assert seen == {0, 1, 2, 3}
    assert deep.passes(4) == {"generator_forward_grad": 1.0, "generator_forward_no_grad": 1.5, "backward_generator": 1.0}
    with pytest.raises(SGMDError, match="first step"):
        make_objective("sgmd", pairs=pairs, sigmas=[0.9, 0.5, 0.0])
    with pytest.raises(SGMDError, match="same pairs"):
        TeacherPairs(noise=pairs.noise, context=pairs.context[:2], target=pairs.target)
    with pytest.raises(SGMDError, match="run trains"):
        pairs.check_student(torch.tensor([1.0, 0.0]), (2, 1, 4, 4))


def test_make_objective_and_options():
    assert set(OBJECTIVE_NAMES) == {"sgmd", "dmd2"}
    assert make_objective("SGMD").fake_updates_per_generator_update == 1
    assert make_objective("dmd2").fake_updates_per_generator_update == 5
    assert make_objective("dmd2", fake_updates_per_generator_update=3).fake_updates_per_generator_update == 3
    assert make_objective("sgmd").cfg_scale == 3.0 and make_objective("sgmd").lambda_nr == 0.1
    torch.testing.assert_close(make_objective("sgmd").sigmas, torch.tensor([1.0, 0.9375, 0.8333333, 0.625, 0.0]))
    for bad in (dict(name="dmd"), dict(name="sgmd", lambda_NR=0.1), dict(name="dmd2", lambda_nr=0.1),
                dict(name="sgmd", rule="lcm"), dict(name="sgmd", sigmas=[1.0, 0.5]), dict(name="sgmd", cfg_scale=0)):
        with pytest.raises(SGMDError):
            make_objective(**bad)


# ---------------------------------------------------------------------------------------------
# tiny real Wan, one shared base with generator and fake adapters


@pytest.fixture
def wan_setup():
    torch.manual_seed(0)
    model = WanModel(WanConfig(dim=128, ffn_dim=128, num_layers=1))
    attach_lora(model, rank=4, alpha=4, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():  # non-zero ups so every adapter shapes the output and gets gradients
        for name in ("generator", "fake"):
            for p in adapter_parameters(model, name)[1::2]:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return model, CountingRoles(model)


class CountingRoles(AdapterRoles):
    def __init__(self, model):
        super().__init__(model)
        self.teacher_calls = 0

    def teacher(self, x, sigma, context):
        self.teacher_calls += 1
        return super().teacher(x, sigma, context)


def wan_batch(seed):
    gen = torch.Generator().manual_seed(seed)
    return Batch(context=torch.randn(2, 4, 4096, generator=gen), uncond=torch.zeros(2, 4, 4096),
                 latent_shape=(16, 2, 4, 4), generator=gen)


def _clone(params):
    return [p.detach().clone() for p in params]


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def _opt_state(opt):
    return [{k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()} for s in opt.state.values()]


@pytest.mark.parametrize("objective", [SGMD(), DMD2()], ids=["sgmd", "dmd2"])
def test_phases_touch_only_their_own_role(wan_setup, objective):
    model, roles = wan_setup
    gen_params, fake_params = adapter_parameters(model, "generator"), adapter_parameters(model, "fake")
    opt_g = torch.optim.AdamW(gen_params, lr=1e-3, betas=(0.0, 0.999))
    opt_f = torch.optim.AdamW(fake_params, lr=1e-3, betas=(0.0, 0.999))

    def fake_phase(seed):
        out = objective.fake_loss(roles, wan_batch(seed))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(fake_params, 10.0)
        opt_f.step()
        opt_f.zero_grad(set_to_none=True)

    fake_phase(10)  # the fake optimizer now has state that must survive the generator phase
    base = {k: v.clone() for k, v in base_state_dict(model).items()}
    fake_before, fake_state = _clone(fake_params), _opt_state(opt_f)
    gen_before = _clone(gen_params)

    # generator phase, as the loop runs it: fake frozen, only the generator optimizer steps
    for p in fake_params:
        p.requires_grad_(False)
    roles.teacher_calls = 0
    out = objective.generator_loss(roles, wan_batch(11))
    assert torch.isfinite(out.loss) and roles.teacher_calls == 1  # one batched CFG pass
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(gen_params, 10.0)
    opt_g.step()
    opt_g.zero_grad(set_to_none=True)
    for p in fake_params:
        p.requires_grad_(True)
    assert not _same(gen_before, gen_params)
    assert _same(fake_before, fake_params) and all(p.grad is None for p in fake_params)
    assert all(torch.equal(a[k], b[k]) for a, b in zip(fake_state, _opt_state(opt_f)) for k in a)
    assert all(torch.equal(v, base[k]) for k, v in base_state_dict(model).items())
    assert all(p.grad is None for n, p in model.named_parameters() if ".lora_" not in n)

    # fake phase: generator untouched, no teacher pass
    gen_before = _clone(gen_params)
    roles.teacher_calls = 0
    for i in range(objective.fake_updates_per_generator_update):
        fake_phase(20 + i)
    assert roles.teacher_calls == 0
    assert _same(gen_before, gen_params) and all(p.grad is None for p in gen_params)
    assert not _same(fake_before, fake_params)
    assert all(torch.equal(v, base[k]) for k, v in base_state_dict(model).items())


def test_dmd2_runs_five_fake_updates_sgmd_one():
    assert DMD2().fake_updates_per_generator_update == 5
    assert SGMD().fake_updates_per_generator_update == 1


def test_sgmd_generator_gradient_same_with_gradient_checkpointing(wan_setup):
    model, roles = wan_setup
    gen_params = adapter_parameters(model, "generator")
    for p in adapter_parameters(model, "fake"):
        p.requires_grad_(False)
    objective = SGMD()
    objective.draw_exit_index = lambda batch: 1

    def grads(ckpt):
        model.gradient_checkpointing = ckpt
        objective.generator_loss(roles, wan_batch(4)).loss.backward()
        out = [p.grad.clone() for p in gen_params]
        model.zero_grad(set_to_none=True)
        return out

    for a, b in zip(grads(False), grads(True)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-8)
    model.gradient_checkpointing = False


def _generator_grads(model, roles, objective, seed):
    """Generator adapter gradients of one generator phase (fake frozen, as the loop runs it)."""
    for p in adapter_parameters(model, "fake"):
        p.requires_grad_(False)
    out = objective.generator_loss(roles, wan_batch(seed))
    out.loss.backward()
    grads = [p.grad.clone() for p in adapter_parameters(model, "generator")]
    model.zero_grad(set_to_none=True)
    for p in adapter_parameters(model, "fake"):
        p.requires_grad_(True)
    return out, grads


def test_gan_head_reads_the_token_grid(wan_setup):
    """The head sees the tokens on their frames x height x width grid (a non-cubic latent here) and
    mixes neighbours: shuffling the tokens changes its logit, where a per-token head averaged over
    tokens (the first design, blind to speed) would give the same."""
    model, roles = wan_setup
    gan = GANTerm(model, real_latents=lambda batch: None)
    x, ctx = torch.randn(2, 16, 4, 6, 8), torch.randn(2, 4, 4096)
    roles.fake(x, torch.full((2,), 0.5), ctx)  # unarmed: nothing kept
    assert gan.tap.tokens is None and gan.tap.grid is None
    with gan.tap:
        roles.fake(x, torch.full((2,), 0.5), ctx)
    assert gan.tap.grid == (4, 3, 4) and gan.tap.tokens.shape == (2, 48, model.cfg.dim)
    tokens = gan.tap.tokens.detach()
    shuffled = tokens[:, torch.randperm(48, generator=torch.Generator().manual_seed(0))]
    with torch.no_grad():
        a, b = gan.head(tokens, gan.tap.grid), gan.head(shuffled, gan.tap.grid)
    assert a.shape == (2,) and (a - b).abs().min() > 1e-4
    with pytest.raises(SGMDError, match="do not fill"):
        gan.head(tokens, (4, 3, 5))
    gan.tap.remove()


@pytest.mark.parametrize("name,fake_passes", [("sgmd", 3), ("dmd2", 11)])
def test_gan_head_on_either_objective(wan_setup, name, fake_passes):
    """The GAN plug-in adds exactly the gradient of `w softplus(-D(fake tokens))` to the generator's
    update (same draws, so weight 0 changes nothing), never trains its head in the generator phase,
    and trains it in the fake phase on real against generated videos."""
    model, roles = wan_setup
    real = torch.randn(2, 16, 2, 4, 4)
    plain = make_objective(name)
    gan = GANTerm(model, real_latents=lambda batch: real, generator_weight=0.0)
    objective = make_objective(name, gan=gan)
    assert objective.extra_fake_parameters() == gan.parameters() and plain.extra_fake_parameters() == []
    for obj in (plain, objective):
        obj.draw_exit_index = lambda batch: 1

    _, without = _generator_grads(model, roles, plain, 1)
    out, at_zero = _generator_grads(model, roles, objective, 1)
    assert out.logs["gan_generator"] == 0.0 and all(p.grad is None for p in gan.parameters())
    for a, b in zip(without, at_zero):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-9)

    # the added gradient: that of the generator term alone, through the same fake call on the same x
    gan.generator_weight = 0.5
    out, with_gan = _generator_grads(model, roles, objective, 1)
    assert out.logs["gan_generator"] > 0
    batch = wan_batch(1)
    for p in adapter_parameters(model, "fake"):
        p.requires_grad_(False)
    _, _, g, s, eps = objective.draw_generator_sample(roles, batch, grad=True)
    with gan.tap:
        roles.fake(noised(g, eps, s), s, batch.context)
    gan.generator_term(gan.logits(train_head=False)).backward()
    term = [p.grad.clone() for p in adapter_parameters(model, "generator")]
    model.zero_grad(set_to_none=True)
    for p in adapter_parameters(model, "fake"):
        p.requires_grad_(True)
    assert any(t.abs().max() > 0 for t in term)
    for a, b, t in zip(without, with_gan, term):
        torch.testing.assert_close(b - a, t, rtol=1e-3, atol=1e-8)

    out = objective.fake_loss(roles, wan_batch(2))
    out.loss.backward()
    assert "gan_discriminator" in out.logs and all(p.grad is not None for p in gan.parameters())
    model.zero_grad(set_to_none=True)
    p = objective.passes_per_iteration(4)
    # SGMD: D_F with input grad + 1 fake update + its real-video pass; DMD2: the generator phase's D_F
    # gains grad, and each of the 5 updates a real-video pass
    assert p["fake_forward_grad"] == p["backward_fake"] == fake_passes and p["fake_forward_no_grad"] == 0
