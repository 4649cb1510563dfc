"""The training loop, one for every objective.

Per iteration: a generator phase (fake parameters frozen; `objective.generator_loss`; backward
over `grad_accum` micro-batches; clip; step), then `fake_updates` fake phases on fresh batches
(generator frozen; `objective.fake_loss`). One CPU `torch.Generator` (per process) draws
everything random: prompts, noise, exit steps, noise levels; its state is checkpointed, so a
resumed run continues exactly where an uninterrupted one would be.

`<out>/metrics.jsonl`, one JSON object per `log_every` iterations: iteration, generator_loss,
fake_loss (mean over the fake updates), grad_norm_* (before clipping), lr_*, skipped_steps,
sec_per_iter (mean since the last line), wall_time (cumulative training seconds over resumes,
without checkpoint/sample writing), and the objective's own logs as `generator/<name>` and
`fake/<name>`. Non-finite values are written as null.

A phase whose loss or gradient is not finite is skipped (no optimizer step) with a warning; more
than `max_nonfinite` in a row stops the run with a one-line error, leaving the last checkpoint as
it was."""
from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from sgmd.errors import SGMDError
from sgmd.objectives.base import Batch
from training import distributed
from training.checkpoint import list_checkpoints
from training.console import warn

METRICS_FILE = "metrics.jsonl"


@dataclass
class TrainState:
    """What advances during training (besides weights and optimizer states)."""

    step: int = 0
    rng: torch.Generator = field(default_factory=torch.Generator)
    wall_time: float = 0.0  # cumulative training seconds over all resumes (time-to-quality)
    nonfinite_streak: dict = field(default_factory=lambda: {"generator": 0, "fake": 0})  # consecutive, per phase


@dataclass
class PhaseResult:
    loss: float
    logs: dict
    grad_norm: float
    skipped: bool


class StopRequested(Exception):
    """The user asked to stop (Ctrl-C or a `should_stop` hook); a checkpoint was written."""


def draw_batch(run) -> Batch:
    cfg = run.cfg
    texts, context, uncond = run.source.draw(cfg.batch_size, run.state.rng)
    shape = (run.roles.teacher_model.cfg.in_dim, cfg.latent_frames, cfg.latent_height, cfg.latent_width)
    return Batch(context.to(run.device), uncond.to(run.device), shape, run.state.rng, texts)


def run_phase(run, role: str) -> PhaseResult:
    """One optimizer step of `role` ("generator" or "fake") over grad_accum micro-batches."""
    cfg, objective = run.cfg, run.objective
    other = "fake" if role == "generator" else "generator"
    params, opt = run.params[role], run.optimizers[role]
    loss_fn = objective.generator_loss if role == "generator" else objective.fake_loss
    opt.zero_grad(set_to_none=True)
    losses, logs, bad = [], {}, False
    with _frozen(run.params[other]):
        for _ in range(cfg.grad_accum):
            out = loss_fn(run.roles, draw_batch(run))
            value = float(out.loss.detach())
            losses.append(value)
            for k, v in out.logs.items():
                if isinstance(v, (int, float)):
                    logs[k] = logs.get(k, 0.0) + float(v) / cfg.grad_accum
            if math.isfinite(value):
                (out.loss / cfg.grad_accum).backward()
            else:
                bad = True  # keep going: every rank must run the same collectives
    bad = distributed.any_rank(bad, run.device)
    norm = float("nan")
    if not bad:
        distributed.average_gradients(params)
        norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
        bad = not math.isfinite(norm)
    if bad:
        opt.zero_grad(set_to_none=True)
    else:
        opt.step()
        opt.zero_grad(set_to_none=True)
    return PhaseResult(sum(losses) / len(losses), logs, norm, bad)


def train_loop(run, should_stop=None, on_metrics=None) -> None:
    """Train `run` (see `training.trainer.Run`) from `run.state.step` to `cfg.iterations`."""
    cfg, state = run.cfg, run.state
    n_fake = cfg.fake_updates if cfg.fake_updates is not None else run.objective.fake_updates_per_generator_update
    metrics = MetricsLog(os.path.join(cfg.out, METRICS_FILE), keep_until=state.step) if distributed.is_main() else None
    bar = tqdm(total=cfg.iterations, initial=state.step, desc=run.objective.name, unit="it", file=sys.stderr,
               dynamic_ncols=True, disable=not distributed.is_main() or None)
    window: list[float] = []
    try:
        with _interrupt_flag() as interrupted:
            while state.step < cfg.iterations:
                stop = interrupted.is_set() or (should_stop is not None and should_stop())
                if distributed.any_rank(stop, run.device):
                    path = run.save_checkpoint()
                    raise StopRequested(f"stopped at iteration {state.step}; checkpoint {path}; continue with --resume")
                t0 = time.perf_counter()
                gen = run_phase(run, "generator")
                fakes = [run_phase(run, "fake") for _ in range(n_fake)]
                state.step += 1
                if run.ema is not None:
                    run.ema.update(state.step)
                elapsed = time.perf_counter() - t0
                state.wall_time += elapsed
                window.append(elapsed)
                _count_nonfinite(run, gen, fakes)
                record = _record(run, gen, fakes, window)
                fake_loss = sum(f.loss for f in fakes) / len(fakes) if fakes else float("nan")
                bar.set_postfix(g=f"{gen.loss:.4g}", f=f"{fake_loss:.4g}", refresh=False)
                bar.update(1)
                if state.step % cfg.log_every == 0 or state.step == cfg.iterations:
                    if metrics is not None:
                        metrics.append(record)
                    if on_metrics is not None:
                        on_metrics(record)
                    window = []
                if state.step % cfg.checkpoint_every == 0 or state.step == cfg.iterations:
                    run.save_checkpoint()
                if cfg.sample_every and state.step % cfg.sample_every == 0 and state.step < cfg.iterations:
                    run.write_samples()
    finally:
        bar.close()


def _count_nonfinite(run, gen: PhaseResult, fakes: list[PhaseResult]) -> None:
    """Consecutive skipped steps, per phase (a generator that is NaN every iteration must stop the
    run even when the fake score's steps are fine)."""
    state, cfg = run.state, run.cfg
    for role, result in [("generator", gen)] + [("fake", f) for f in fakes]:
        state.nonfinite_streak[role] = skip_streak(
            state.nonfinite_streak[role], result.skipped, f"{role} ", f"iteration {state.step}", result.loss,
            cfg.max_nonfinite, lambda: found[0][1] if (found := list_checkpoints(cfg.out)) else "none written yet",
            "lower --lr-generator / --lr-fake (or use --dtype fp32) and --resume")


def skip_streak(streak: int, skipped: bool, what: str, at: str, loss: float, limit: int, last_checkpoint,
                advice: str) -> int:
    """The rule of every trainer here for steps not taken because a loss or gradient was not finite:
    the new count of them in a row (0 after a step taken), a warning for each, and a one-line
    `SGMDError` once more than `limit` come in a row. `what` prefixes "steps" ("generator ", or "");
    `last_checkpoint()` names the checkpoint left as it was, asked only then."""
    if not skipped:
        return 0
    streak += 1
    warn(f"non-finite {what}loss or gradient at {at} (loss {loss:.4g}); step skipped ({streak} in a row, stop "
         f"after {limit})")
    if streak > limit:
        raise SGMDError(f"training diverged: {streak} consecutive non-finite {what}steps up to {at}; last good "
                        f"checkpoint: {last_checkpoint()}; {advice}")
    return streak


def _record(run, gen: PhaseResult, fakes: list[PhaseResult], window: list[float]) -> dict:
    state = run.state
    fake_loss = sum(f.loss for f in fakes) / len(fakes) if fakes else float("nan")
    rec = {
        "iteration": state.step,
        "generator_loss": gen.loss,
        "fake_loss": fake_loss,
        "grad_norm_generator": gen.grad_norm,
        "grad_norm_fake": sum(f.grad_norm for f in fakes) / len(fakes) if fakes else float("nan"),
        "lr_generator": run.optimizers["generator"].param_groups[0]["lr"],
        "lr_fake": run.optimizers["fake"].param_groups[0]["lr"],
        "skipped_steps": int(gen.skipped) + sum(f.skipped for f in fakes),
        "sec_per_iter": sum(window) / len(window),
        "wall_time": state.wall_time,
    }
    rec.update({f"generator/{k}": v for k, v in gen.logs.items()})
    for k in {k for f in fakes for k in f.logs}:
        rec[f"fake/{k}"] = sum(f.logs.get(k, 0.0) for f in fakes) / len(fakes)
    return {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in rec.items()}


class MetricsLog:
    """Append-only JSON lines; on resume, lines past the checkpoint's step (written by the killed
    run after its last checkpoint) are dropped so the log matches an uninterrupted run."""

    def __init__(self, path: str, keep_until: int):
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                lines = [line for line in f if _iteration(line) is not None and _iteration(line) <= keep_until]
            with open(path, "w", encoding="utf-8") as f:
                f.writelines(lines)

    def append(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def _iteration(line: str):
    try:
        return int(json.loads(line)["iteration"])
    except (ValueError, KeyError, TypeError):
        return None


@contextmanager
def _frozen(params):
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)


@contextmanager
def _interrupt_flag():
    """First Ctrl-C: finish the iteration, checkpoint, stop. Second: stop at once."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag  # e.g. a ComfyUI background job: it stops through `should_stop`
        return

    def handler(signum, frame):
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()
        warn("interrupt: finishing this iteration and writing a checkpoint (Ctrl-C again to abort)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)
