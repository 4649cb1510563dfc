"""bench/travel_drift.py: its travel measure reads a clip's travel in closed form, and with the exact
denoiser as the model the two columns agree at every watched level."""
import importlib.util
import os

import torch

from sgmd import codec, samplers, toy_posterior, toyvideo
from sgmd.noise import CLIP_LATENT_SHAPE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("travel_drift", os.path.join(ROOT, "bench", "travel_drift.py"))
travel_drift = importlib.util.module_from_spec(spec)
spec.loader.exec_module(travel_drift)


def test_travel_is_the_distance_the_centre_covers():
    g = torch.Generator().manual_seed(0)
    prompts = [toyvideo.Prompt("green", s, d, v) for s in toyvideo.SHAPES for d in ("left", "down") for v in ("slowly", "quickly")]
    clips = [toyvideo.clip_for_prompt(p, g) for p in prompts]
    got = travel_drift.travel(codec.encode(toyvideo.render(clips)))
    want = torch.tensor([toyvideo.expected_travel(c.speed) for c in clips])
    torch.testing.assert_close(got, want, atol=0.25, rtol=0)  # two centres, each within the 1/4-px grid's 1/8
    half = travel_drift.travel(codec.encode(toyvideo.render([toyvideo.shortened(c, 0.5) for c in clips])))
    torch.testing.assert_close(half, want / 2, atol=0.25, rtol=0)


def test_with_the_exact_denoiser_as_the_model_both_columns_agree():
    prompts = ["a red circle moving slowly", "a blue square moving up quickly"]
    noise = torch.randn(2, *CLIP_LATENT_SHAPE[1:], generator=torch.Generator().manual_seed(1))
    sigmas = torch.tensor([1.0, 0.97, 0.93, 0.9, 0.0])

    def exact_velocity(x, s):
        return toy_posterior.velocity(x, s, prompts)

    rows = travel_drift.drift(lambda x, s: samplers.denoised(x, s, exact_velocity(x, s)), exact_velocity, noise,
                              prompts, sigmas, [0.97, 0.9])
    assert [round(s, 2) for s, _, _ in rows] == [0.97, 0.9]
    for _, model, exact in rows:
        torch.testing.assert_close(model, exact, atol=1e-4, rtol=1e-4)
    # by 0.9 the exact sampler has settled on a clip that covers its prompt's travel
    assert rows[-1][2][1] > 0.8 * toyvideo.expected_travel("quickly")
