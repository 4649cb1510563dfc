"""bench/text_units.py: its count is the closed form of the first layer, and a word it reports at zero
units is read by the model exactly as its absence."""
import importlib.util
import os

import torch

from sgmd import text
from sgmd.wan import WanConfig, WanModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("text_units", os.path.join(ROOT, "bench", "text_units.py"))
text_units = importlib.util.module_from_spec(spec)
spec.loader.exec_module(text_units)


def _model():
    torch.manual_seed(0)
    return WanModel(WanConfig(dim=128, ffn_dim=256, num_layers=2)).eval()


def test_count_is_the_units_whose_pre_activation_clears_the_floor():
    model = _model()
    first = model.text_embedding[0]
    with torch.no_grad():
        first.weight.zero_()
        first.bias.copy_(torch.linspace(-5, 5, 128))  # 64 units above 0, 83 above -1.5 (bias only)
    counts = text_units.units_reached(model, ["slowly", "zzz"], floor=-1.5)
    want = int((torch.linspace(-5, 5, 128) > -1.5).sum())
    assert counts == {"slowly": want, "zzz": want}
    assert text_units.units_reached(model, ["slowly"], floor=0.0) == {"slowly": 64}


def test_a_word_with_no_unit_left_is_read_as_its_absence():
    model = _model()
    v = text.word_vector("slowly")
    with torch.no_grad():  # every unit far below zero for "slowly", near zero for any other word
        model.text_embedding[0].weight.copy_(-100 * v.expand(128, -1) / v.dot(v))
        model.text_embedding[0].bias.zero_()
    counts = text_units.units_reached(model, ["slowly", "quickly", "left"])
    assert counts["slowly"] == 0 and counts["quickly"] > 100 and counts["left"] > 100
    x = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([900.0])
    run = lambda p: model(x, t, text.encode_text([p]))  # noqa: E731
    torch.testing.assert_close(run("a red circle moving slowly"), run("a red circle moving"), atol=1e-6, rtol=0)
    assert (run("a red circle moving quickly") - run("a red circle moving")).abs().max() > 1e-3
