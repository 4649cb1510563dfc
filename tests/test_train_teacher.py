"""The tiny-teacher trainer: a short run writes a Wan-format file that our loader (and so ComfyUI's
UNETLoader, same keys) reads, with its recipe in the metadata; a resumed run equals a straight one."""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "training"))
import train_teacher  # noqa: E402

from sgmd.weights import load_wan, read_safetensors  # noqa: E402


def _run(tmp_path, name, *args):
    out = str(tmp_path / f"{name}.safetensors")
    assert train_teacher.main(["--batch-size", "2", "--out", out, "--checkpoint", str(tmp_path / f"{name}.ckpt.safetensors"),
                               "--threads", "1", *args]) == 0
    return out


def test_short_run_writes_a_loadable_teacher_with_its_recipe(tmp_path):
    out = _run(tmp_path, "t", "--steps", "2")
    model = load_wan(out)
    assert model.cfg == train_teacher.TINY_CONFIG
    _, meta = read_safetensors(out)
    recipe = json.loads(meta["sgmd_teacher"])
    assert recipe["steps"] == 2 and recipe["task"] == "sgmd-toyvideo-v1" and recipe["config"]["dim"] == 128


def test_resume_continues_exactly(tmp_path):
    straight = _run(tmp_path, "a", "--steps", "3")
    _run(tmp_path, "b", "--steps", "2", "--checkpoint-every", "1")
    resumed = _run(tmp_path, "b", "--steps", "3")
    a, _ = read_safetensors(straight)
    b, _ = read_safetensors(resumed)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
