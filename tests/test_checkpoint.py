"""Checkpoints and failure handling of the trainer: atomic writes, exact resume after a kill,
damaged checkpoints, non-finite losses, graceful stop, and (slow, opt-in) torchrun on CPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import sgmd.weights
import training.loop
import training.trainer
from sgmd.errors import SGMDError
from tiny_run import REPO, RUN_PY, run_args, subprocess_env, write_teacher
from training.checkpoint import list_checkpoints, read_checkpoint
from training.config import parse_config
from training.loop import StopRequested
from training.run import main
from training.trainer import build, train

torch.set_num_threads(1)
TIMING = ("sec_per_iter", "wall_time")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return write_teacher(tmp_path_factory.mktemp("teacher") / "teacher.safetensors", seed=1)


def _cfg(teacher, out, **options):
    return parse_config(run_args(teacher, str(out), **options))


def _tensors(path) -> dict:
    tensors, _ = sgmd.weights.read_safetensors(path)
    return tensors


def _assert_same_tensors(a: dict, b: dict, skip=()):
    keys = [k for k in a if not k.startswith(skip)] if skip else list(a)
    assert sorted(keys) == sorted(k for k in b if not (skip and k.startswith(skip)))
    for k in keys:
        assert torch.equal(a[k], b[k]), k


def _metrics(out) -> list[dict]:
    with open(os.path.join(out, "metrics.jsonl"), encoding="utf-8") as fh:
        return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in fh]


class Killed(Exception):
    pass


def test_atomic_write_keeps_the_old_checkpoint_when_a_write_fails(teacher, tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(_cfg(teacher, out, iterations=1))
    path = list_checkpoints(str(out))[0][1]
    before = open(path, "rb").read()
    run = build(_cfg(teacher, out, iterations=1, resume=True))

    def broken_save(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"partial")  # the temp file is half written, then the process "dies"
        raise OSError("disk full")

    monkeypatch.setattr(sgmd.weights, "save_file", broken_save)
    with pytest.raises(OSError):
        run.save_checkpoint()
    assert open(path, "rb").read() == before
    assert read_checkpoint(path).step == 1
    assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]  # no temp file left


@pytest.mark.parametrize("objective, rule", [("sgmd", "euler"), ("dmd2", "renoise")])
def test_killed_then_resumed_run_equals_an_uninterrupted_one(teacher, tmp_path, monkeypatch, objective, rule):
    opts = dict(iterations=4, checkpoint_every=2, objective=objective, update_rule=rule, fake_updates=2,
                ema_start=1)  # the default EMA averages across the kill, so its state must resume too
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    train(_cfg(teacher, straight, **opts))

    real_phase = training.loop.run_phase

    def dying_phase(run, role):
        if run.state.step == 2 and role == "fake":  # mid-iteration 3: generator already stepped in memory
            raise Killed
        return real_phase(run, role)

    monkeypatch.setattr(training.loop, "run_phase", dying_phase)
    with pytest.raises(Killed):
        train(_cfg(teacher, killed, **opts))
    monkeypatch.setattr(training.loop, "run_phase", real_phase)
    assert list_checkpoints(str(killed))[0][0] == 2
    train(_cfg(teacher, killed, resume=True, **opts))

    a, b = (_tensors(list_checkpoints(str(d))[0][1]) for d in (straight, killed))
    _assert_same_tensors(a, b)  # generator, fake, both AdamW states, RNG
    _assert_same_tensors(_tensors(straight / "generator_lora.safetensors"), _tensors(killed / "generator_lora.safetensors"))
    assert _metrics(straight) == _metrics(killed)


def test_exported_generator_is_the_ema_of_the_training_weights(teacher, tmp_path):
    """EMA d from --ema-start k on: the iterations before k copy the weights, later ones average them.
    The weights themselves train the same with or without it (p_i: the export of an --ema none run
    stopped after i iterations); with d = 0.5 and k = 2 the export after 3 is 0.25 p1 + 0.25 p2 + 0.5 p3."""
    p = [_tensors(train(_cfg(teacher, tmp_path / f"raw{i}", iterations=i, ema="none"))["generator"]) for i in (1, 2, 3)]
    ema = _tensors(train(_cfg(teacher, tmp_path / "ema", iterations=3, ema=0.5, ema_start=2))["generator"])
    assert sorted(ema) == sorted(p[2])
    moved = 0
    for k in ema:
        expected = 0.25 * p[0][k] + 0.25 * p[1][k] + 0.5 * p[2][k]
        torch.testing.assert_close(ema[k], expected, rtol=1e-5, atol=1e-7, msg=k)
        moved += not torch.equal(p[1][k], p[2][k])
    assert moved  # the weights did move between iterations, so the average is not trivially p3


def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(teacher, tmp_path, capsys):
    out = tmp_path / "run"
    train(_cfg(teacher, out, iterations=3, checkpoint_every=1))
    assert [s for s, _ in list_checkpoints(str(out))] == [3, 2]  # the newest two are kept
    reference = _tensors(out / "generator_lora.safetensors")
    newest = list_checkpoints(str(out))[0][1]
    data = open(newest, "rb").read()
    with open(newest, "wb") as fh:
        fh.write(data[: len(data) // 2])  # a torn write (e.g. a copy interrupted by a crash)
    capsys.readouterr()
    train(_cfg(teacher, out, iterations=3, checkpoint_every=1, resume=True))
    err = capsys.readouterr().err
    assert "skipping damaged checkpoint" in err and "step_00000003" in err
    assert "resumed from" in err and "iteration 2" in err
    _assert_same_tensors(reference, _tensors(out / "generator_lora.safetensors"))


class NaNInjector:
    """Wraps the real objective; the generator (and fake) loss is NaN on the given (1-based) calls."""

    def __init__(self, objective, nan_calls, snapshots, fake_nan_calls=()):
        self.inner, self.nan_calls, self.snapshots, self.calls = objective, nan_calls, snapshots, 0
        self.fake_nan_calls, self.fake_calls = fake_nan_calls, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generator_loss(self, roles, batch):
        self.calls += 1
        self.snapshots.append([p.detach().clone() for p in roles.generator_parameters()])
        out = self.inner.generator_loss(roles, batch)
        if self.calls in self.nan_calls:
            out.loss = out.loss * float("nan")
        return out

    def fake_loss(self, roles, batch):
        self.fake_calls += 1
        out = self.inner.fake_loss(roles, batch)
        if self.fake_calls in self.fake_nan_calls:
            out.loss = out.loss * float("inf")
        return out


def _inject_nan(monkeypatch, nan_calls, fake_nan_calls=()):
    snapshots = []
    real = training.trainer.make_objective
    monkeypatch.setattr(training.trainer, "make_objective",
                        lambda name, **kw: NaNInjector(real(name, **kw), nan_calls, snapshots, fake_nan_calls))
    return snapshots


def test_a_nonfinite_loss_skips_the_step_and_training_goes_on(teacher, tmp_path, monkeypatch, capsys):
    snapshots = _inject_nan(monkeypatch, {2}, fake_nan_calls={3})
    out = tmp_path / "run"
    assert main(run_args(teacher, str(out), iterations=3)) == 0
    err = capsys.readouterr().err
    assert "non-finite generator loss" in err and "non-finite fake loss" in err
    same = lambda a, b: all(torch.equal(x, y) for x, y in zip(a, b))  # noqa: E731
    assert not same(snapshots[0], snapshots[1])  # iteration 1 stepped
    assert same(snapshots[1], snapshots[2])  # iteration 2 was skipped: no update
    m = _metrics(out)
    assert m[1]["skipped_steps"] == 1 and m[1]["grad_norm_generator"] is None
    assert m[2]["skipped_steps"] == 1 and m[2]["fake_loss"] is None and m[2]["grad_norm_generator"] is not None
    assert m[0]["skipped_steps"] == 0
    assert all(torch.isfinite(t).all() for t in _tensors(out / "generator_lora.safetensors").values())


def test_too_many_nonfinite_losses_stop_with_the_last_checkpoint_intact(teacher, tmp_path, monkeypatch, capsys):
    _inject_nan(monkeypatch, set(range(3, 100)))
    out = tmp_path / "run"
    argv = run_args(teacher, str(out), iterations=6, checkpoint_every=2, max_nonfinite=1)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: training diverged") and "step_00000002" in err[-1]
    assert [s for s, _ in list_checkpoints(str(out))] == [2]
    assert read_checkpoint(list_checkpoints(str(out))[0][1]).step == 2
    assert not os.path.exists(out / "generator_lora.safetensors")


def test_stop_request_writes_a_checkpoint_and_the_run_resumes(teacher, tmp_path):
    out = tmp_path / "run"
    polls = []
    with pytest.raises(StopRequested):
        train(_cfg(teacher, out, iterations=4, checkpoint_every=10), should_stop=lambda: polls.append(1) or len(polls) > 2)
    assert [s for s, _ in list_checkpoints(str(out))] == [2]
    outputs = train(_cfg(teacher, out, iterations=4, checkpoint_every=10, resume=True))
    assert outputs["checkpoint"].endswith("step_00000004.safetensors")


def test_resume_refuses_a_checkpoint_with_other_lora_settings(teacher, tmp_path):
    out = tmp_path / "run"
    train(_cfg(teacher, out, iterations=1))
    with pytest.raises(SGMDError, match="lora_rank"):
        build(_cfg(teacher, out, iterations=2, resume=True, lora_rank=8))


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("SGMD_SLOW_TESTS"), reason="multi-process; set SGMD_SLOW_TESTS=1")
def test_torchrun_two_cpu_processes(teacher, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", RUN_PY,
           *run_args(teacher, str(out), iterations=2)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ckpt = read_checkpoint(list_checkpoints(str(out))[0][1])
    assert len(ckpt.rng_states) == 2 and not torch.equal(ckpt.rng_states[0], ckpt.rng_states[1])
    assert (out / "generator_lora.safetensors").is_file() and (out / "samples.npz").is_file()
