"""The distillation CLI end to end on a tiny random teacher: help, SGMD and DMD2 runs and their
outputs, the exported generator against the trained one, and one-line errors for bad inputs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import fields

import numpy as np
import pytest
import torch

from sgmd.lora import attach_lora, export_adapter
from sgmd.recipe import SamplingRecipe
from sgmd.schedules import student_sigmas
from sgmd.wan import WanConfig, WanModel
from sgmd.weights import load_wan, read_safetensors, write_safetensors
from tiny_run import REPO, RUN_PY, run_args, subprocess_env, write_teacher
from training.checkpoint import list_checkpoints, read_checkpoint
from training.config import DistillConfig, config_markdown, parse_config, teacher_recommendations
from training.roles import DistillRoles
from training.run import main

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return write_teacher(tmp_path_factory.mktemp("teacher") / "teacher.safetensors")


@pytest.fixture(scope="module")
def sgmd_run(teacher, tmp_path_factory):
    """A real process: `python training/run.py ...` (SGMD, LoRA, 3 iterations)."""
    out = str(tmp_path_factory.mktemp("sgmd_run"))
    proc = subprocess.run([sys.executable, RUN_PY, *run_args(teacher, out, iterations=3, checkpoint_every=2)],
                          capture_output=True, text=True, env=subprocess_env(), cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_help_lists_every_option_and_docs_are_current():
    proc = subprocess.run([sys.executable, RUN_PY, "--help"], capture_output=True, text=True, env=subprocess_env(),
                          cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for f in fields(DistillConfig):
        assert "--" + f.name.replace("_", "-") in proc.stdout, f.name
    assert "--config" in proc.stdout
    # the options the shipped teacher recommends are what a bare run uses; the help says so beside each default
    shipped = teacher_recommendations(DistillConfig.teacher)
    assert shipped and {k: getattr(parse_config([]), k) for k in shipped} == shipped
    help_text = " ".join(proc.stdout.split())
    for name, value in shipped.items():
        shown = str(value).lower() if isinstance(value, bool) else str(value)
        assert f"the shipped teacher recommends {shown})" in help_text, name
    with open(os.path.join(REPO, "docs", "config.md"), encoding="utf-8") as fh:
        assert fh.read() == config_markdown(), "docs/config.md is stale: python -m training.config docs/config.md"


def test_sgmd_run_writes_metrics_checkpoints_lora_and_samples(sgmd_run):
    with open(os.path.join(sgmd_run, "metrics.jsonl"), encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh]
    assert [r["iteration"] for r in records] == [1, 2, 3]
    for key in ("generator_loss", "fake_loss", "grad_norm_generator", "grad_norm_fake", "lr_generator", "lr_fake",
                "sec_per_iter", "wall_time", "generator/fisher", "fake/flow_matching"):
        assert key in records[-1], key
    assert [s for s, _ in list_checkpoints(sgmd_run)] == [3, 2]

    tensors, meta = read_safetensors(os.path.join(sgmd_run, "generator_lora.safetensors"))
    assert tensors and all(k.startswith("diffusion_model.blocks.") for k in tensors)
    assert all(k.endswith((".lora_down.weight", ".lora_up.weight", ".alpha")) for k in tensors)
    recipe = SamplingRecipe.from_metadata(meta)
    assert recipe.objective == "sgmd" and recipe.update_rule == "euler" and recipe.iterations == 3
    assert recipe.sigmas == pytest.approx(student_sigmas().tolist())

    with np.load(os.path.join(sgmd_run, "samples.npz"), allow_pickle=False) as npz:
        assert npz["videos"].dtype == np.uint8 and npz["videos"].shape == (2, 2, 4, 4, 3)
        assert npz["prompts"].shape == (2,) and npz["prompts"].dtype.kind == "U"
        assert npz["seeds"].tolist() == [0, 1]


def _comfy_merge(base: dict, lora: dict) -> dict:
    """What ComfyUI's LoRA loader does with these keys: W += alpha / rank * up @ down."""
    merged = dict(base)
    for key, down in lora.items():
        if not key.endswith(".lora_down.weight"):
            continue
        mod = key[len("diffusion_model."):-len(".lora_down.weight")]
        up, alpha = lora[f"diffusion_model.{mod}.lora_up.weight"], float(lora[f"diffusion_model.{mod}.alpha"])
        merged[f"{mod}.weight"] = base[f"{mod}.weight"] + alpha / down.shape[0] * up @ down
    return merged


def _probe(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 16, 2, 4, 4, generator=g), torch.tensor([0.9, 0.4]), torch.randn(2, 16, 4096, generator=g)


def test_exported_lora_on_the_base_reproduces_the_trained_generator(sgmd_run, teacher):
    ckpt = read_checkpoint(list_checkpoints(sgmd_run)[0][1])
    roles = DistillRoles(load_wan(teacher), full=False, lora_rank=4, lora_alpha=4)
    roles.load_state_dict("generator", ckpt.roles["generator"])
    lora, _ = read_safetensors(os.path.join(sgmd_run, "generator_lora.safetensors"))
    assert any(v.abs().max() > 0 for k, v in lora.items() if "lora_up" in k), "the generator did not train"
    base, _ = read_safetensors(teacher)
    model = WanModel(WanConfig.from_state_dict(base))
    model.load_state_dict(_comfy_merge(base, lora))
    x, s, ctx = _probe()
    with torch.no_grad():
        expected = roles.generator(x, s, ctx)
        got = model(x, 1000 * s, ctx)
    assert (got - expected).abs().max() <= 1e-5


def test_dmd2_full_run_exports_a_wan_file_equal_to_the_generator(teacher, tmp_path, capsys):
    out = str(tmp_path / "dmd2")
    assert main(run_args(teacher, out, objective="dmd2", full=True)) == 0
    with open(os.path.join(out, "metrics.jsonl"), encoding="utf-8") as fh:
        last = json.loads(fh.readlines()[-1])
    assert last["iteration"] == 2 and last["fake/flow_matching"] is not None
    path = os.path.join(out, "generator.safetensors")
    recipe = SamplingRecipe.from_metadata(read_safetensors(path)[1])
    assert recipe.objective == "dmd2"
    exported = load_wan(path)  # the original Wan keys: what UNETLoader reads
    ckpt = read_checkpoint(list_checkpoints(out)[0][1])
    trained = WanModel(exported.cfg)
    trained.load_state_dict(ckpt.roles["generator"])
    x, s, ctx = _probe(1)
    with torch.no_grad():
        assert torch.equal(exported(x, 1000 * s, ctx), trained(x, 1000 * s, ctx))
    assert os.path.isfile(os.path.join(out, "samples.npz"))


def test_garbage_teacher_fails_in_one_line_from_a_real_process(tmp_path):
    bad = tmp_path / "garbage.safetensors"
    bad.write_bytes(os.urandom(1000))
    proc = subprocess.run([sys.executable, RUN_PY, *run_args(str(bad), str(tmp_path / "out"))], capture_output=True,
                          text=True, env=subprocess_env(), cwd=REPO, timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def _bad_inputs(tmp, teacher, big_teacher, sgmd_run):
    """name -> (argv, a phrase the message must contain)."""
    nonwan = str(tmp / "other.safetensors")
    write_safetensors(nonwan, {"encoder.weight": torch.zeros(3, 3)})
    garbage = tmp / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    empty = tmp / "empty.txt"
    empty.write_text("\n   \n\n")
    big = load_wan(big_teacher)
    attach_lora(big, ("generator",), rank=4, alpha=4)
    big_lora = str(tmp / "big_lora.safetensors")
    write_safetensors(big_lora, export_adapter(big, "generator"))
    bad_key = tmp / "bad.toml"
    bad_key.write_text("iterations = 2\nlearning_rate = 1e-4\n")
    sgmd_ckpt = list_checkpoints(sgmd_run)[0][1]
    out = str(tmp / "out")
    a = lambda **kw: run_args(kw.pop("teacher", teacher), kw.pop("out", out), **kw)  # noqa: E731
    return {
        "missing teacher": (a(teacher=str(tmp / "nope.safetensors")), "not found"),
        "garbage teacher": (a(teacher=str(garbage)), "cannot read"),
        "non-Wan safetensors": (a(teacher=nonwan), "not a Wan 2.1"),
        "LoRA from another model size": (a(init_generator=big_lora), "different model size"),
        "resume from another model size": (a(teacher=big_teacher, resume=sgmd_ckpt), "different model"),
        "non-decreasing schedule": (a(student_timesteps="1000,500,750,250"), "strictly decreasing"),
        "timestep out of range": (a(student_timesteps="1200,750,500,250"), "(0, 1000]"),
        "empty prompt file": (a(prompts=str(empty)), "has no prompts"),
        "odd latent height": (a(latent_height=5), "not divisible"),
        "zero frames": (a(latent_frames=0), "latent_frames must be >= 1"),
        "unknown objective": (a(objective="avdm3"), "unknown objective"),
        "unknown config key": (a() + ["--config", str(bad_key)], "unknown option 'learning_rate'"),
        "bad number": (a(iterations="many"), "bad value for iterations"),
        "gan at a size the toy task does not render": (a(gan=True), "needs real videos"),
        "negative gan weight": (a(gan=True, gan_weight=-1), "gan_weight must be a number >= 0"),
        "existing checkpoints without --resume": (a(out=sgmd_run), "--resume"),
    }


def test_bad_inputs_exit_2_with_one_line(teacher, sgmd_run, tmp_path, capsys):
    big_teacher = write_teacher(tmp_path / "big.safetensors", dim=256, ffn_dim=128)
    for name, (argv, phrase) in _bad_inputs(tmp_path, teacher, big_teacher, sgmd_run).items():
        assert main(argv) == 2, name
        line = _one_line_error(capsys)
        assert phrase in line, f"{name}: {line}"
