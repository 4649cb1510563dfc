"""Trainer inputs: config files vs command line, value checking, and the prompt sources."""
from __future__ import annotations

import json
import os

import pytest
import torch

from sgmd.errors import SGMDError
from sgmd.text import encode_text
from sgmd.weights import write_safetensors
from tiny_run import run_args, write_teacher
from training.config import DistillConfig, parse_config
from training.data import EmbeddingSource, ToyPromptSource, make_prompt_source
from training.trainer import train

torch.set_num_threads(1)


@pytest.mark.parametrize("name, text", [
    ("run.toml", 'objective = "dmd2"\nlr_fake = 1e-5\nstudent_timesteps = [1000, 500]\nfull = true\nema = 0.99\n'),
    ("run.yaml", "objective: dmd2\nlr-fake: 1.0e-5\nstudent_timesteps: [1000, 500]\nfull: yes\nema: 0.99\n"),
])
def test_config_file_then_command_line(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    cfg = parse_config(["--config", str(path), "--lr-fake", "3e-5", "--no-full", "--betas", "0.1", "0.9"])
    assert cfg.objective == "dmd2" and cfg.student_timesteps == [1000.0, 500.0] and cfg.ema == 0.99
    assert cfg.lr_fake == 3e-5 and cfg.full is False and cfg.betas == (0.1, 0.9)  # the command line wins
    assert cfg.lr_generator == DistillConfig().lr_generator


def test_resume_flag_forms():
    assert parse_config([]).resume is False
    assert parse_config(["--resume"]).resume is True
    assert parse_config(["--resume", "runs/x/checkpoints/step_00000010.safetensors"]).resume.endswith(".safetensors")


@pytest.mark.parametrize("argv, phrase", [
    (["--betas", "0.9"], "betas"),
    (["--lr-generator", "-1"], "lr_generator must be a positive"),
    (["--ema", "1.5"], "ema must be"),
    (["--dtype", "fp8"], "unknown dtype"),
    (["--update-rule", "heun"], "unknown update_rule"),
    (["--no-such-flag"], "unrecognized arguments"),
    (["--full", "--config", "missing.toml"], "config file not found"),
])
def test_bad_values_are_one_line_errors(argv, phrase):
    with pytest.raises(SGMDError, match=phrase) as e:
        parse_config(argv)
    assert "\n" not in str(e.value)


def test_prompt_sources(tmp_path):
    g = torch.Generator().manual_seed(0)
    toy = make_prompt_source("")
    assert isinstance(toy, ToyPromptSource)
    texts, ctx, uncond = toy.draw(3, g)
    assert ctx.shape == (3, 16, 4096) and torch.equal(ctx, encode_text(texts)) and not uncond.any()

    lines = tmp_path / "prompts.txt"
    lines.write_text("a red circle\n\n  a blue square moving up  \n")
    src = make_prompt_source(str(lines))
    assert src.prompts == ["a red circle", "a blue square moving up"]
    assert src.fixed(3)[0] == ["a red circle", "a blue square moving up", "a red circle"]

    emb = tmp_path / "emb.safetensors"
    context = torch.randn(3, 5, 4096)
    write_safetensors(str(emb), {"context": context}, {"prompts": json.dumps(["x", "y", "x"])})
    src = make_prompt_source(str(emb))
    assert isinstance(src, EmbeddingSource) and src.prompts == ["x", "y", "x #2"]
    texts, ctx, uncond = src.draw(4, g)
    assert all(torch.equal(c, context[src.prompts.index(t)]) for t, c in zip(texts, ctx))
    assert uncond.shape == (4, 5, 4096) and not uncond.any()

    bad = tmp_path / "bad.safetensors"
    write_safetensors(str(bad), {"context": torch.zeros(2, 5, 4096)}, {"prompts": json.dumps(["only one"])})
    with pytest.raises(SGMDError, match="JSON list of 2"):
        make_prompt_source(str(bad))


def test_training_on_precomputed_embeddings(tmp_path):
    teacher = write_teacher(tmp_path / "t.safetensors")
    emb = tmp_path / "emb.safetensors"
    write_safetensors(str(emb), {"context": torch.randn(2, 7, 4096), "uncond": torch.zeros(1, 7, 4096)})
    outputs = train(parse_config(run_args(teacher, str(tmp_path / "out"), prompts=str(emb))))
    assert os.path.isfile(outputs["generator"]) and os.path.isfile(outputs["samples"])


def test_config_does_not_load_the_evaluator():
    """The run config names the evaluation's default seed count from `training.eval_set`, so parsing
    a run's options does not import the evaluator (samplers, metrics, codec) in a fresh process."""
    import subprocess
    import sys
    code = ("import sys; from training.config import parse_config, DEFAULT_EVAL_SEEDS; parse_config([]); "
            "from training.eval_set import DEFAULT_SEEDS; assert DEFAULT_EVAL_SEEDS == DEFAULT_SEEDS; "
            "print('training.evaluate' in sys.modules)")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
