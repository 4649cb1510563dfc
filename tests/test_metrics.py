"""The evaluator's measures (sgmd/metrics.py), the seed -> noise rule (sgmd/noise.py) and the
evaluation CLI helpers (training/evaluate.py). Calibration: rendered ground truth scores 100%."""
from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import pytest
import torch

from sgmd import metrics, toyvideo
from sgmd.errors import SGMDError
from sgmd.noise import CLIP_LATENT_SHAPE, noise_and_generator, noise_for_seed, noise_for_seeds
from training import evaluate as ev
from training.eval_set import PARTIAL_PROMPTS

torch.set_num_threads(1)
ACCS = ("colour_accuracy", "shape_accuracy", "direction_accuracy", "speed_accuracy")


def _batch(n, seed):
    return toyvideo.make_batch(n, torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def gt300():
    prompts, videos, clips = _batch(300, 1)
    return prompts, videos, clips, metrics.analyse_clips(videos)


# ------------------------------------------------------------------------------ calibration


def test_ground_truth_is_all_correct(gt300):
    prompts, videos, clips, _ = gt300
    r = metrics.evaluate_clips(videos, prompts, list(range(300)), real_per_clip=1)
    assert r["n_valid"] == 300 and r["n_degenerate"] == 0
    for k in ACCS:
        assert r[k] == 1.0, (k, r)
    assert r["overall_accuracy"] == 1.0 and r["all_correct"] == 1.0
    assert r["n_direction"] > 100 and r["n_speed"] > 100 and r["n_unspecified_speed"] > 30
    assert r["temporal_consistency"] > 0.95
    assert r["fd"] < 0.1


def test_ground_truth_motion_is_measured(gt300):
    _, _, clips, analyses = gt300
    for c, a in zip(clips, analyses):
        vx, vy = (d * toyvideo.SPEEDS[c.speed] for d in toyvideo.DIRECTIONS[c.direction])
        assert abs(a.velocity[0] - vx) < 0.1 and abs(a.velocity[1] - vy) < 0.1, (c, a)
        assert abs(a.speed - toyvideo.SPEEDS[c.speed]) < 0.1
        assert abs(a.start[0] - c.x0) < 0.25 and abs(a.start[1] - c.y0) < 0.25
        assert a.speed_class == c.speed
        assert a.direction == (None if c.speed == "still" else c.direction)
        assert a.colour == c.colour and a.shape == c.shape
    assert sum(c.speed == "still" for c in clips) > 20


def test_heldout_and_eval_set_ground_truth():
    prompts, seeds = ev.eval_prompt_set(4)
    g = torch.Generator().manual_seed(5)
    videos = toyvideo.render([toyvideo.clip_for_prompt(toyvideo.Prompt.parse(p), g) for p in prompts])
    r = metrics.evaluate_clips(videos, prompts, seeds, real_per_clip=1)
    assert all(r[k] == 1.0 for k in ACCS), r
    assert r["n_direction"] >= 14 * 4 and r["n_speed"] == (14 + 4) * 4 and r["n_unspecified_speed"] == 7 * 4


def test_uint8_input_and_codec_roundtrip(gt300):
    from sgmd import codec

    prompts, videos, _, _ = gt300
    u8 = codec.to_uint8(videos[:60])
    rt = codec.decode(codec.encode(videos[:60]))
    for clips in (u8, rt):
        r = metrics.evaluate_clips(clips, prompts[:60], list(range(60)), real_per_clip=1)
        assert all(r[k] == 1.0 for k in ACCS if r[k] is not None), r


def test_mild_background_noise_is_tolerated(gt300):
    prompts, videos, _, _ = gt300
    noisy = (videos[:60] + 0.08 * torch.rand(videos[:60].shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    r = metrics.evaluate_clips(noisy, prompts[:60], list(range(60)), real_per_clip=1)
    assert all(r[k] == 1.0 for k in ACCS if r[k] is not None), r


# ------------------------------------------------------------------------------ wrong answers


def _clips_for(prompts, seed=3, **override):
    g = torch.Generator().manual_seed(seed)
    out = []
    for p in prompts:
        c = toyvideo.clip_for_prompt(toyvideo.Prompt.parse(p), g)
        out.append(dataclasses.replace(c, **{k: (f(c) if callable(f) else f) for k, f in override.items()}))
    return out


HELD = [p.text for p in toyvideo.heldout_prompts()]
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
NEXT_COLOUR = dict(zip(toyvideo.COLOURS, list(toyvideo.COLOURS)[1:] + list(toyvideo.COLOURS)[:1]))


def test_wrong_attributes_are_detected():
    cases = {
        "colour_accuracy": dict(colour=lambda c: NEXT_COLOUR[c.colour]),
        "shape_accuracy": dict(shape=lambda c: "square" if c.shape == "circle" else "circle"),
        "direction_accuracy": dict(direction=lambda c: OPPOSITE[c.direction]),
        "speed_accuracy": dict(speed=lambda c: "quickly" if c.speed == "slowly" else "slowly"),
    }
    for wrong, override in cases.items():
        clips = _clips_for(HELD, **override)
        # opposite direction / other speed may leave the frame from the original start: re-draw starts
        if wrong in ("direction_accuracy", "speed_accuracy"):
            g = torch.Generator().manual_seed(9)
            clips = [toyvideo.clip_for_prompt(toyvideo.Prompt(c.colour, c.shape, c.direction, c.speed), g) for c in clips]
        r = metrics.evaluate_clips(toyvideo.render(clips), HELD, list(range(len(HELD))), real_per_clip=1)
        assert r[wrong] == 0.0, (wrong, r)
        for k in ACCS:
            if k != wrong:
                assert r[k] == 1.0, (wrong, k, r)


def test_static_clips_fail_speed_and_direction():
    clips = _clips_for(HELD, speed="still")
    r = metrics.evaluate_clips(toyvideo.render(clips), HELD, list(range(len(HELD))), real_per_clip=1)
    assert r["speed_accuracy"] == 0.0 and r["direction_accuracy"] == 0.0
    assert r["colour_accuracy"] == 1.0 and r["shape_accuracy"] == 1.0
    assert r["mean_motion"] < 0.05
    # a still clip is a legitimate answer to a prompt with a direction but no speed: not counted
    prompts = ["a red circle moving left"] * 3
    r = metrics.evaluate_clips(toyvideo.render(_clips_for(prompts, speed="still")), prompts, [0, 1, 2], real_per_clip=1)
    assert r["n_direction"] == 0 and r["direction_accuracy"] is None and r["mean_motion_unspecified_speed"] < 0.05


def test_degenerate_clips_never_crash_and_count_wrong():
    t, s = toyvideo.FRAMES, toyvideo.SIZE
    g = torch.Generator().manual_seed(0)
    black = torch.zeros(2, t, s, s, 3)
    noise = torch.rand(2, t, s, s, 3, generator=g)
    pair = [toyvideo.Clip("red", "circle", "left", "still", 4.0, 4.0),
            toyvideo.Clip("red", "circle", "left", "still", 12.0, 11.0)]
    two_blobs = toyvideo.render(pair).sum(0, keepdim=True).clamp(0, 1).repeat(2, 1, 1, 1, 1)
    vanishing = toyvideo.render(_clips_for(HELD[:2]))
    vanishing[:, 3] = 0
    huge = torch.zeros(2, t, s, s, 3)
    huge[:, :, 2:14, 2:14, 0] = 1.0
    nan = torch.full((1, t, s, s, 3), float("nan"))
    videos = torch.cat([black, noise, two_blobs, vanishing, huge, nan])
    prompts = HELD[:2] * 5 + HELD[:1]
    r = metrics.evaluate_clips(videos, prompts, list(range(len(prompts))), return_per_clip=True, real_per_clip=1)
    assert r["n_valid"] == 0 and r["n_degenerate"] == len(prompts)
    for k in ACCS:
        assert r[k] == 0.0, (k, r)
    reasons = [c["reason"] for c in r["per_clip"]]
    assert reasons[:2] == ["no shape"] * 2 and reasons[-1] == "no shape"
    assert reasons[4:6] == ["several blobs"] * 2
    assert reasons[6:8] == ["shape missing in some frames"] * 2
    assert reasons[8:10] == ["implausible size"] * 2
    assert r["mean_motion"] is None and math.isfinite(r["fd"]) and r["fd"] > 1
    assert metrics.analyse_clips(black)[0].consistency == 0.0
    json.dumps(r)  # JSON-safe (no NaN objects needed)
    empty = metrics.evaluate_clips(np.zeros((0, t, s, s, 3), np.uint8), [], [])
    assert empty["n_clips"] == 0 and empty["colour_accuracy"] is None


def test_temporal_consistency_drops_with_flicker(gt300):
    _, videos, _, analyses = gt300
    flicker = videos[:20].clone()
    flicker[:, 1::2] *= 0.4
    base = np.mean([a.consistency for a in analyses[:20]])
    assert base > 0.95
    assert np.mean([a.consistency for a in metrics.analyse_clips(flicker)]) < base - 0.1


def test_paired_accuracy_gaps_match_the_statistics_module():
    """Gap = mean of student - teacher over clips checked in both; se = stdev / sqrt(n), computed here by
    the standard library; a clip unchecked on either side is left out."""
    import random
    import statistics

    rng = random.Random(3)
    t = [{"speed": rng.random() < 0.8, "colour": None} for _ in range(60)]
    s = [{"speed": rng.random() < 0.6, "colour": None} for _ in range(60)]
    t[5]["speed"], s[7]["speed"] = None, None
    d = [float(b["speed"]) - float(a["speed"]) for a, b in zip(t, s) if a["speed"] is not None and b["speed"] is not None]
    g = metrics.paired_accuracy_gaps(t, s, keys=("speed", "colour"))
    assert g["speed"]["n"] == 58 == len(d)
    assert g["speed"]["gap"] == pytest.approx(statistics.fmean(d))
    assert g["speed"]["se"] == pytest.approx(statistics.stdev(d) / math.sqrt(len(d)))
    assert g["colour"] == {"gap": None, "se": None, "n": 0}
    same = metrics.paired_accuracy_gaps(t, t, keys=("speed",))["speed"]
    assert same["gap"] == 0 and same["se"] == 0
    with pytest.raises(ValueError):
        metrics.paired_accuracy_gaps(t, s[:3])


# ------------------------------------------------------------------------------ diversity


def test_same_noise_distance_measures_rendered_offsets():
    """Clips rendered 3 px right and 4 px down of the teacher's (same motion) are 5 px away; an invalid
    clip on either side is left out; velocity offsets are measured the same way."""
    prompt = "a red circle moving right slowly"
    c = _clips_for([prompt])[0]
    c = dataclasses.replace(c, x0=5.0, y0=6.0)
    teacher = metrics.analyse_clips(toyvideo.render([c, c, c]))
    moved = metrics.analyse_clips(toyvideo.render([dataclasses.replace(c, x0=8.0, y0=10.0), c, c]))
    moved[2] = dataclasses.replace(moved[2], valid=False, start=(99.0, 99.0))
    d = metrics.same_noise_distance(teacher, moved)
    assert d["n"] == 2 and d["start"] == pytest.approx(5.0 / 2, abs=0.05) and d["velocity"] == pytest.approx(0, abs=0.02)
    faster = [dataclasses.replace(a, velocity=(a.velocity[0] + 0.6, a.velocity[1] - 0.8)) for a in teacher]
    assert metrics.same_noise_distance(teacher, faster)["velocity"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        metrics.same_noise_distance(teacher, teacher[:2])


def test_diversity_zero_for_identical_and_grows_with_spread():
    prompt = "a red circle moving right slowly"
    c = _clips_for([prompt])[0]
    same = toyvideo.render([c] * 4)
    r = metrics.evaluate_clips(same, [prompt] * 4, [0, 1, 2, 3], real_per_clip=1)
    assert r["diversity"] == pytest.approx(0, abs=1e-9) and r["diversity_pixels"] == pytest.approx(0, abs=1e-9)

    def spread(d):
        ys = [8 - d, 8 - d / 3, 8 + d / 3, 8 + d]
        clips = [dataclasses.replace(c, x0=5.0, y0=y) for y in ys]
        return metrics.evaluate_clips(toyvideo.render(clips), [prompt] * 4, [0, 1, 2, 3], real_per_clip=1)

    small, large = spread(1.0), spread(4.0)
    assert 0 < small["diversity"] < large["diversity"]
    assert 0 < small["diversity_pixels"] < large["diversity_pixels"]
    # distance is in frame units: start points 2/3 px apart -> mean pairwise 10/9 * ... / 16
    assert small["diversity"] == pytest.approx(np.mean([abs(a - b) for i, a in enumerate([-1, -1 / 3, 1 / 3, 1])
                                                        for b in [-1, -1 / 3, 1 / 3, 1][i + 1:]]) / 16, abs=0.01)
    # unspecified speed: the teacher's data mixes still / slow / quick -> more diverse than one speed
    free = ["a red circle"] * 16
    fixed = ["a red circle moving left slowly"] * 16
    df = metrics.evaluate_clips(toyvideo.render(_clips_for(free)), free, list(range(16)), real_per_clip=1)
    dx = metrics.evaluate_clips(toyvideo.render(_clips_for(fixed)), fixed, list(range(16)), real_per_clip=1)
    assert df["diversity"] > dx["diversity"]


# ------------------------------------------------------------------------------ Frechet distance


def test_frechet_closed_form():
    assert metrics.frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx((1 - 3) ** 2 + (2 - 3) ** 2)
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([0.5, 1.0, 0.0])
    s1, s2 = np.array([1.0, 0.25, 4.0]), np.array([2.0, 0.25, 1.0])
    expect = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(s1) - np.sqrt(s2)) ** 2).sum()
    assert metrics.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expect)
    # rotation invariance for full covariances, symmetry, zero on itself, singular covariances
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 5))
    c1, c2 = a @ a.T, np.diag(rng.uniform(0.1, 2, 5))
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    d = metrics.frechet_distance(mu1[:1].repeat(5), c1, mu2[:1].repeat(5), c2)
    assert d == pytest.approx(metrics.frechet_distance(mu2[:1].repeat(5), c2, mu1[:1].repeat(5), c1), rel=1e-6)
    assert d == pytest.approx(metrics.frechet_distance(q @ mu1[:1].repeat(5), q @ c1 @ q.T, q @ mu2[:1].repeat(5),
                                                       q @ c2 @ q.T), rel=1e-6)
    assert metrics.frechet_distance(mu1, np.diag(s1), mu1, np.diag(s1)) == pytest.approx(0, abs=1e-9)
    assert metrics.frechet_distance(np.zeros(2), np.zeros((2, 2)), np.ones(2), np.zeros((2, 2))) == pytest.approx(2)
    # from samples
    x = rng.normal([0, 1], [1, 2], size=(20000, 2))
    y = rng.normal([1, 1], [3, 2], size=(20000, 2))
    assert metrics.feature_frechet_distance(x, y) == pytest.approx(1 + 4, rel=0.05)


def test_fd_same_vs_different_distribution():
    _, a, _ = _batch(500, 11)
    _, b, _ = _batch(500, 12)
    fa, fb = (metrics.feature_matrix(metrics.analyse_clips(v)) for v in (a, b))
    same = metrics.feature_frechet_distance(fa, fb)
    still = toyvideo.render(_clips_for(["a red circle"] * 200, speed="still"))
    diff = metrics.feature_frechet_distance(fa, metrics.feature_matrix(metrics.analyse_clips(still)))
    assert same < 0.02 and diff > 50 * same and diff > 0.5


# ------------------------------------------------------------------------------ noise rule


def test_noise_for_seed_rule():
    n = noise_for_seed(7)
    assert n.shape == CLIP_LATENT_SHAPE and n.dtype == torch.float32
    assert torch.equal(n, torch.randn(CLIP_LATENT_SHAPE, generator=torch.Generator().manual_seed(7)))
    batch = noise_for_seeds([3, 7, 3])
    assert torch.equal(batch[1:2], n) and torch.equal(batch[0], batch[2])
    n2, g = noise_and_generator(7)
    assert torch.equal(n2, n)
    ref = torch.Generator().manual_seed(7)
    torch.randn(CLIP_LATENT_SHAPE, generator=ref)
    assert torch.equal(torch.randn(3, generator=g), torch.randn(3, generator=ref))


# ------------------------------------------------------------------------------ evaluate.py


def test_eval_prompt_set():
    prompts, seeds = ev.eval_prompt_set(4)
    held = [p.text for p in toyvideo.heldout_prompts()]
    assert len(held) == 14 and prompts[: 14 * 4 : 4] == held
    assert len(prompts) == len(seeds) == (14 + len(PARTIAL_PROMPTS)) * 4 and len(set(seeds)) == len(seeds)
    train = {p.text for p in toyvideo.training_prompts()}
    parsed = [toyvideo.Prompt.parse(p) for p in PARTIAL_PROMPTS]
    assert all(p.text in train for p in parsed) and [p.text for p in parsed] == list(PARTIAL_PROMPTS)
    assert sum(p.speed is None for p in parsed) == 7
    assert sum(p.speed is None and p.direction is not None for p in parsed) >= 3
    assert sum(p.speed is not None and p.direction is None for p in parsed) >= 3
    assert ev.eval_prompt_set(4) == (prompts, seeds)
    with pytest.raises(SGMDError):
        ev.eval_prompt_set(0)


def test_samples_npz_round_trip(tmp_path, gt300):
    from sgmd import codec

    prompts, videos, _, _ = gt300
    v = codec.to_uint8(videos[:5])
    path = str(tmp_path / "s.npz")
    ev.write_samples_npz(path, v, prompts[:5], [1, 2, 3, 4, 5])
    v2, p2, s2 = ev.read_samples_npz(path)
    assert np.array_equal(v, v2) and p2 == list(prompts[:5]) and s2 == [1, 2, 3, 4, 5] and v2.dtype == np.uint8
    with pytest.raises(SGMDError):
        ev.write_samples_npz(path, videos[:5].numpy(), prompts[:5], [1, 2, 3, 4, 5])  # float, not uint8
    with pytest.raises(SGMDError):
        ev.write_samples_npz(path, v, prompts[:4], [1, 2, 3, 4, 5])
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(SGMDError):
        ev.read_samples_npz(str(bad))
    np.savez(str(tmp_path / "partial.npz"), videos=v)
    with pytest.raises(SGMDError):
        ev.read_samples_npz(str(tmp_path / "partial.npz"))


def test_quality_bar_and_summary(gt300):
    prompts, videos, _, _ = gt300
    teacher = metrics.evaluate_clips(videos[:100], prompts[:100], list(range(100)), real_per_clip=1)
    checks = ev.quality_checks(teacher, teacher)
    assert all(c["passed"] for c in checks)
    collapsed = dict(teacher, diversity=0.5 * teacher["diversity"], colour_accuracy=0.9)
    failed = {c["measure"] for c in ev.quality_checks(teacher, collapsed) if c["passed"] is False}
    assert failed == {"diversity", "colour_accuracy"}
    text = ev.format_summary(teacher, collapsed)
    assert "FAIL" in text and "student bar" in text and "-10.0 pts" in text and len(text.splitlines()) < 30
    assert "teacher bar" in ev.format_summary(teacher) and "FAIL" not in ev.format_summary(teacher)


def _tiny_model():
    from sgmd.wan import WanConfig, WanModel

    torch.manual_seed(0)
    return WanModel(WanConfig(dim=128, ffn_dim=64, num_layers=1)).eval()


def test_generation_is_per_seed_and_batch_independent():
    model = _tiny_model()
    prompts, seeds = ["a red circle", "a blue square moving up", "a red circle"], [5, 6, 5]
    a = ev.generate_teacher(model, prompts, seeds, steps=2, cfg=3.0, batch_size=3)
    b = ev.generate_teacher(model, prompts, seeds, steps=2, cfg=3.0, batch_size=1)
    assert a.shape == (3, toyvideo.FRAMES, toyvideo.SIZE, toyvideo.SIZE, 3) and a.dtype == np.uint8
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1 and np.array_equal(a[0], a[2])
    sig = torch.tensor([1.0, 0.5, 0.0])
    for rule in ("euler", "renoise"):
        s = ev.generate_student(model, prompts, seeds, sig, rule)
        assert s.shape == a.shape and np.abs(s[0].astype(int) - s[2].astype(int)).max() <= 1


def test_cli_on_sample_files(tmp_path, gt300):
    from sgmd import codec

    prompts, videos, _, _ = gt300
    v = codec.to_uint8(videos[:40])
    t_path, s_path = str(tmp_path / "t.npz"), str(tmp_path / "s.npz")
    ev.write_samples_npz(t_path, v, prompts[:40], list(range(40)))
    ev.write_samples_npz(s_path, v, prompts[:40], list(range(40)))
    out = tmp_path / "out"
    rc = ev.main(["--model", "unused.safetensors", "--teacher-samples", t_path, "--samples", s_path, "--out", str(out),
                  "--strict"])
    assert rc == 0
    rep = json.loads((out / "metrics.json").read_text())
    assert rep["teacher_bar"] == "PASS" and rep["student_bar"] == "PASS"
    assert rep["student"]["colour_accuracy"] == 1.0 and rep["student"]["fd_to_teacher"] == pytest.approx(0, abs=1e-9)
    assert rep["student"]["same_noise_distance"] == {"start": 0.0, "velocity": 0.0, "n": rep["student"]["n_valid"]}
    assert rep["student"]["accuracy_gaps"]["colour"] == {"gap": 0.0, "se": 0.0, "n": 40}
    assert "+0.0 ±0.0 pts" in (out / "summary.txt").read_text()
    assert os.path.exists(out / "summary.txt")
    assert ev.main(["--model", "missing.safetensors", "--seeds", "1"]) == 2  # one-line error, no traceback


def _eased_clip(colour="red", shape="circle", x_first=4.5, x_last=11.5, y=8.0):
    """A clip whose centre follows a cosine ease from x_first to x_last (slow ends, fast middle)."""
    u = np.arange(toyvideo.FRAMES) / (toyvideo.FRAMES - 1)
    xs = x_first + (x_last - x_first) * 0.5 * (1 - np.cos(np.pi * u))
    frames = [toyvideo.render([toyvideo.Clip(colour, shape, "right", "still", float(x), y)])[0, 0] for x in xs]
    return torch.stack(frames)[None], xs


def test_step_profile_is_even_on_the_data_and_exposes_an_eased_clip(gt300):
    prompts, videos, _, analyses = gt300
    r = metrics.evaluate_clips(videos, prompts, list(range(300)), real_per_clip=1)
    assert len(r["step_profile"]) == toyvideo.FRAMES - 1
    assert max(abs(v - 1) for v in r["step_profile"]) < 0.03 and abs(r["end_speed_ratio"] - 1) < 0.03
    clip, xs = _eased_clip()
    a = metrics.analyse_clips(clip)[0]
    steps = np.diff(xs)
    assert a.valid and np.allclose(a.steps, steps, atol=0.08)  # tracked steps = the rendered ones
    expect = 0.5 * (steps[0] + steps[-1]) / steps.mean()  # closed form of the cosine ease: 0.22 at 8 frames
    profile = metrics.step_profile([a])
    assert abs(0.5 * (profile[0] + profile[-1]) - expect) < 0.03
    assert a.speed > (xs[-1] - xs[0]) / (toyvideo.FRAMES - 1)  # easing inflates the fitted speed
    still = [dataclasses.replace(x, steps=(0.1, -0.1, 0.0, 0.1, 0.0, -0.1, 0.0)) for x in analyses[:3]]
    assert metrics.step_profile(still) is None  # clips that do not travel are left out


def test_the_exact_denoiser_samples_what_its_prompts_say():
    """`--exact-teacher`: the sampler driven by the task's exact denoiser (no learned weights) must
    render every named attribute right, including "slowly" with no direction (which trained teachers
    leave still): an end-to-end check of the posterior, the CFG form, the codec and the measures."""
    prompts = ["a red circle moving left slowly", "a blue square moving up quickly", "a green circle moving slowly",
               "a white square moving down"]
    videos = ev.generate_exact(prompts, [0, 1, 2, 3], steps=20, cfg=3.0, batch_size=4)
    analyses = metrics.analyse_clips(videos)
    for p, a in zip(prompts, analyses):
        checks = metrics.attribute_checks(p, a)
        assert all(ok is not False for ok in checks.values()), (p, checks)
    assert analyses[2].speed_class == "slowly"


def test_evaluate_needs_a_model_unless_the_teacher_is_exact_or_given(tmp_path):
    assert ev.main(["--seeds", "1"]) == 2  # no teacher at all
    assert ev.main(["--exact-teacher", "--lora", "g.safetensors", "--seeds", "1"]) == 2  # a LoRA needs its base
    assert ev.main(["--exact-teacher", "--teacher-samples", "t.npz", "--seeds", "1"]) == 2  # two teachers


@pytest.mark.parametrize("seeds", [4, 16])
def test_shipped_teacher_clips_are_what_the_evaluator_samples(seeds):
    """Each shipped cache holds the evaluation set in order (`eval_prompt_set`), and two of its clips
    (the first, and one from the last seeds) resampled here with the shipped teacher's settings match."""
    from sgmd.teacher_sampling import motion_guidance_of, still_pattern_of
    from sgmd.weights import load_wan, read_metadata

    teacher = os.path.join(os.path.dirname(ev.SHIPPED_EVAL_DIR), "diffusion_models", "sgmd_tiny_teacher.safetensors")
    path = ev.teacher_cache_path(teacher, seeds)
    assert os.path.dirname(path) == ev.SHIPPED_EVAL_DIR, f"no shipped clips for {seeds} seeds"
    videos, prompts, clip_seeds = ev.read_samples_npz(path)
    assert (prompts, clip_seeds) == tuple(map(list, ev.eval_prompt_set(seeds)))
    meta = read_metadata(teacher)
    motion = motion_guidance_of(meta)
    model = load_wan(teacher, torch.float32, "cpu").eval()
    pick = [0, len(prompts) - 1]
    again = ev.generate_teacher(model, [prompts[i] for i in pick], [clip_seeds[i] for i in pick], motion=motion,
                                still_pattern=still_pattern_of(meta, *CLIP_LATENT_SHAPE[2:]))
    diff = np.abs(again.astype(int) - videos[pick].astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.01


def test_teacher_clip_cache_is_the_shipped_one_or_outside_the_checkout(tmp_path, monkeypatch):
    """The shipped teacher's evaluation clips are read from `models/eval/`; another teacher's cache
    path lies in the user cache ($XDG_CACHE_HOME), never in the repo, named by the file's hash."""
    from sgmd.weights import file_sha256, write_safetensors

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    shipped = os.path.join(os.path.dirname(ev.SHIPPED_EVAL_DIR), "diffusion_models", "sgmd_tiny_teacher.safetensors")
    path = ev.teacher_cache_path(shipped, 4)
    assert os.path.dirname(path) == ev.SHIPPED_EVAL_DIR and os.path.isfile(path)
    other = str(tmp_path / "other.safetensors")
    write_safetensors(other, {"w": torch.zeros(2)})
    path = ev.teacher_cache_path(other, 4)
    assert os.path.dirname(path) == str(tmp_path / "cache" / "sgmd" / "eval")
    assert file_sha256(other) in os.path.basename(path) and not os.path.exists(path)
