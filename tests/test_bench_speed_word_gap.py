"""bench/speed_word_gap.py: with the exact denoiser as the model its columns agree with the exact ones,
and on clips that cover part of their travel the exact "slowly" travels on while its absence does not."""
import importlib.util
import os

import torch

from sgmd import text, toy_posterior, toyvideo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("speed_word_gap", os.path.join(ROOT, "bench", "speed_word_gap.py"))
speed_word_gap = importlib.util.module_from_spec(spec)
spec.loader.exec_module(speed_word_gap)


class ExactModel:
    """The exact denoiser behind the model call: the prompt is read back from its (deterministic) embedding."""

    def __init__(self, word):
        prompts = [p.text for p in toyvideo.training_prompts() if p.speed == word and not p.direction]
        prompts += [toyvideo.without(p, "speed") for p in prompts]
        self.known = [(text.encode_text([p])[0], p) for p in prompts]

    def __call__(self, x, t, ctx):
        return toy_posterior.velocity(x, t / 1000, [next(p for e, p in self.known if torch.equal(e, c)) for c in ctx])


def test_exact_model_matches_the_exact_columns_and_slowly_travels_on_where_its_absence_does_not():
    rows = speed_word_gap.gap(ExactModel("slowly"), "slowly", 6, [0.3], [0.85], torch.Generator().manual_seed(5))
    assert len(rows) == 1
    share, sigma, model, exact, model0, exact0 = rows[0]
    assert (share, sigma) == (0.3, 0.85)
    assert abs(model - exact) < 1e-3 and abs(model0 - exact0) < 1e-3
    # a clip at 30% of its travel: "slowly" points on to the full 3.15 px, no speed word to about where it is
    assert exact > 0.8 * toyvideo.expected_travel("slowly") and exact0 < 0.5 * toyvideo.expected_travel("slowly")
