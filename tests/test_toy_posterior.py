"""The toy task's posterior mean (sgmd/toy_posterior.py) against brute force and the data law."""
import collections
import math

import pytest
import torch

from sgmd import codec, toy_posterior as tp, toyvideo


def _brute_force(x_s, s, prompt, sharpen=1.0, codec_id=codec.CODEC_V2):
    """Independent: encode every bank clip in full for every admissible colour and shape, weight it
    by prior x Gaussian likelihood of the whole latent (its log times `sharpen`), average."""
    b = tp.bank()
    p = toyvideo.Prompt.parse(prompt)
    prior = tp.combo_prior(p.direction, p.speed, unconditional=not prompt)
    colours = [p.colour] if p.colour else list(toyvideo.COLOURS)
    shapes = [p.shape] if p.shape else list(toyvideo.SHAPES)
    top, total, acc = -math.inf, 0.0, torch.zeros(x_s.shape, dtype=torch.float64)  # streaming weighted mean
    for shape in shapes:
        rows = (b.shape == toyvideo.SHAPES.index(shape)).nonzero().flatten()
        keys = [tp._COMBOS[int(b.combo[k])] for k in rows]
        keep = torch.tensor([k in prior for k in keys])
        rows = rows[keep]
        lp = torch.tensor([math.log(prior[k]) for k, ok in zip(keys, keep) if ok], dtype=torch.float64)
        lp = lp + b.log_cell[rows].double() - math.log(len(shapes) * len(colours))
        for c in colours:
            for chunk in torch.split(torch.arange(len(rows)), 1024):
                frames = b.masks[rows[chunk]].view(-1, toyvideo.FRAMES, toyvideo.SIZE, toyvideo.SIZE, 1) * torch.tensor(
                    toyvideo.COLOURS[c])
                x0 = codec.encode(frames, codec_id).double()
                logw = lp[chunk] - sharpen * ((x_s.double() - (1 - s) * x0) ** 2).sum((1, 2, 3, 4)) / (2 * s * s)
                new_top = max(top, float(logw.max()))
                scale = math.exp(top - new_top) if top > -math.inf else 0.0
                w = torch.exp(logw - new_top)
                acc = acc * scale + (w.view(-1, 1, 1, 1, 1) * x0).sum(0)
                total = total * scale + float(w.sum())
                top = new_top
    return acc / total


@pytest.mark.parametrize("codec_id", [codec.CODEC_V2, codec.CODEC_V3])
def test_posterior_mean_matches_brute_force(codec_id):
    g = torch.Generator().manual_seed(3)
    # named colour and shape; an unnamed speed (still / slow / quick); an unnamed colour; an unnamed shape
    prompts = ["a red circle moving left quickly", "a cyan square moving up", "a circle moving down slowly",
               "a red moving quickly"]
    frames = toyvideo.render([toyvideo.clip_for_prompt(toyvideo.Prompt("blue", "square", "up", "quickly"), g)] * len(prompts))
    x0 = codec.encode(frames, codec_id)
    sigma = torch.tensor([0.95, 0.9, 0.97, 0.93])
    eps = torch.randn(x0.shape, generator=g)
    x_s = (1 - sigma.view(-1, 1, 1, 1, 1)) * x0 + sigma.view(-1, 1, 1, 1, 1) * eps
    got = tp.posterior_mean(x_s, sigma, prompts, codec_id=codec_id)
    for i, p in enumerate(prompts):
        want = _brute_force(x_s[i], float(sigma[i]), p, codec_id=codec_id)
        assert (got[i].double() - want).abs().max() < 1e-4, p
    if codec_id != codec.CODEC_V2:  # the derivative channels carry evidence: the v2 posterior misreads the state
        assert (tp.posterior_mean(x_s, sigma, prompts) - got).abs().max() > 0.1


def test_sharpened_posterior_mean_matches_brute_force_and_a_lower_noise_level():
    """`sharpen` k multiplies the log-likelihood (brute force), which is the exact mean of the state
    rescaled to the noise level s' = s / (s + sqrt(k) (1 - s)) (the docstring's identity)."""
    g = torch.Generator().manual_seed(4)
    prompts = ["a green circle moving quickly", "a white square"]
    frames = toyvideo.render([toyvideo.clip_for_prompt(toyvideo.Prompt("green", "circle", "left", "quickly"), g)] * 2)
    x0 = codec.encode(frames)
    sigma = torch.tensor([0.95, 0.9])
    x_s = (1 - sigma.view(-1, 1, 1, 1, 1)) * x0 + sigma.view(-1, 1, 1, 1, 1) * torch.randn(x0.shape, generator=g)
    k = 4.0
    got = tp.posterior_mean(x_s, sigma, prompts, sharpen=k)
    for i, p in enumerate(prompts):
        assert (got[i].double() - _brute_force(x_s[i], float(sigma[i]), p, sharpen=k)).abs().max() < 1e-4, p
    s2 = sigma / (sigma + k ** 0.5 * (1 - sigma))
    c = ((1 - s2) / (1 - sigma)).view(-1, 1, 1, 1, 1)
    assert (got - tp.posterior_mean(c * x_s, s2, prompts)).abs().max() < 1e-4
    assert (got - tp.posterior_mean(x_s, sigma, prompts)).abs().max() > 0.05  # it does sharpen


def test_posterior_mean_finds_the_clip_at_low_noise():
    """Little noise: the posterior mean is (close to) the clip itself, which sits on the grid."""
    b = tp.bank()
    k = 1234
    frames = b.masks[k].view(1, toyvideo.FRAMES, toyvideo.SIZE, toyvideo.SIZE, 1) * torch.tensor(toyvideo.COLOURS["green"])
    x0 = codec.encode(frames)
    shape = toyvideo.SHAPES[int(b.shape[k])]
    speed, direction = tp._COMBOS[int(b.combo[k])]
    words = f"a green {shape} moving {direction} {speed}" if direction else f"a green {shape}"
    x_s = 0.9 * x0 + 0.1 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    got = tp.posterior_mean(x_s, torch.tensor([0.1]), [words])
    assert (got - x0).abs().max() < 1e-3


def test_combo_prior_matches_the_data_law():
    """Frequencies of (speed, direction) drawn by toyvideo.clip_for_prompt vs combo_prior."""
    g = torch.Generator().manual_seed(1)
    for prompt in ["a red circle", "a red circle moving left", "a red circle moving quickly"]:
        p = toyvideo.Prompt.parse(prompt)
        n = 6000
        counts = collections.Counter()
        for _ in range(n):
            c = toyvideo.clip_for_prompt(p, g)
            counts[("still", None) if c.speed == "still" else (c.speed, c.direction)] += 1
        prior = tp.combo_prior(p.direction, p.speed)
        assert set(counts) == set(prior)
        for key, pr in prior.items():
            assert abs(counts[key] / n - pr) < 4 * math.sqrt(pr * (1 - pr) / n) + 1e-9, (prompt, key)
    unc = tp.combo_prior(None, None, unconditional=True)
    assert abs(sum(unc.values()) - 1) < 1e-12 and abs(unc[("still", None)] - 0.1) < 1e-12


def test_bank_covers_every_start_range():
    """Every grid clip stays inside the frame, and each combo's grid spans its start range."""
    b = tp.bank()
    assert b.masks.shape[1] == toyvideo.FRAMES * toyvideo.SIZE ** 2
    area = b.masks.view(-1, toyvideo.FRAMES, toyvideo.SIZE ** 2).sum(-1)
    full = torch.where(b.shape == 0, math.pi * toyvideo.CIRCLE_RADIUS ** 2, (2 * toyvideo.SQUARE_HALF) ** 2)
    # inside the frame in every frame: the whole area, up to the 4x supersampling of the renderer
    assert ((area / full.view(-1, 1) - 1).abs() < 0.1).all()
    for shape in toyvideo.SHAPES:
        lo, hi = tp._start_range(shape, "quickly", -1.0)
        pts = tp._axis_points(lo, hi)
        assert lo < pts[0] and pts[-1] < hi and pts[1] - pts[0] <= tp.GRID_PX + 1e-9


def test_posterior_mean_is_the_least_squares_denoiser():
    """The defining property, checked statistically on clips drawn from the task: the posterior
    mean predicts x0 better than the mean under a wrong law (direction word swapped) or a wrong
    noise level (overconfident)."""
    g = torch.Generator().manual_seed(7)
    specified = {p for p in toyvideo.training_prompts() if p.direction and p.speed}
    prompts, frames, _ = toyvideo.make_batch(40, g, specified)
    x0 = codec.encode(frames)
    sigma = torch.full((40,), 0.95)
    x_s = 0.05 * x0 + 0.95 * torch.randn(x0.shape, generator=g)
    err = lambda m: float((m - x0).pow(2).mean())  # noqa: E731
    best = err(tp.posterior_mean(x_s, sigma, prompts))
    swap = {"left": "right", "right": "left", "up": "down", "down": "up"}
    wrong_words = [" ".join(swap.get(w, w) for w in p.split()) for p in prompts]
    assert best < err(tp.posterior_mean(x_s, sigma, wrong_words))
    assert best < err(tp.posterior_mean(x_s, torch.full((40,), 0.9), prompts))
    assert best < err(tp.posterior_mean(x_s, sigma, [""] * 40))  # the prompt carries information
