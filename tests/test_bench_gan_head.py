"""bench/gan_head.py: its pairs differ in speed only, and it reports both heads at every level."""
import importlib.util
import os

import torch

from sgmd import toyvideo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("gan_head", os.path.join(ROOT, "bench", "gan_head.py"))
gan_head = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gan_head)
travel_spec = importlib.util.spec_from_file_location("travel_drift", os.path.join(ROOT, "bench", "travel_drift.py"))
travel_drift = importlib.util.module_from_spec(travel_spec)
travel_spec.loader.exec_module(travel_drift)


def test_pairs_are_quick_against_slow_or_still():
    real, fake, ctx = gan_head.pairs(6, torch.Generator().manual_seed(0))
    assert real.shape == fake.shape and ctx.shape[0] == 6
    quick, slow = toyvideo.expected_travel("quickly"), toyvideo.expected_travel("slowly")
    torch.testing.assert_close(travel_drift.travel(real), torch.full((6,), quick), atol=0.25, rtol=0)
    want = torch.tensor([0.0 if i % 2 == 0 else slow for i in range(6)])  # still, slowly, still, ...
    torch.testing.assert_close(travel_drift.travel(fake), want, atol=0.25, rtol=0)


def test_reports_both_heads_at_each_level(capsys):
    assert gan_head.main(["--steps", "2", "--eval-pairs", "4", "--sigmas", "0.3,0.9", "--threads", "1"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [r[0] for r in rows] == ["0.30", "0.90"]
    for r in rows:
        assert len(r) == 3 and all(0.0 <= float(a) <= 1.0 for a in r[1:])
