"""Checkpoints: everything needed to continue a run exactly, in one safetensors file.

Contents: the generator's and the fake score's trainable tensors (LoRA adapters in the ComfyUI
layout, or full Wan weights), both AdamW states (tensors flattened, structure as JSON), the EMA if
any, the CPU random generator of every process, the step, the cumulative training time and the
run's config (JSON). Never pickle. Files are `<out>/checkpoints/step_XXXXXXXX.safetensors`, written
atomically (temp file, fsync, rename: a kill at any moment leaves the previous file intact); the
newest `KEEP` are kept. Resuming takes the newest file that reads back completely and skips a
damaged one with a warning."""
from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass, field

import torch

from sgmd.errors import SGMDError
from sgmd.weights import read_safetensors, write_safetensors
from training.console import warn

FORMAT = "sgmd-checkpoint-v1"
FOLDER = "checkpoints"
KEEP = 2
_NAME = re.compile(r"^step_(\d+)\.safetensors$")


@dataclass
class Checkpoint:
    step: int
    roles: dict  # "generator" / "fake" -> {key: tensor}
    optimizers: dict  # "generator" / "fake" -> torch optimizer state dict
    rng_states: list  # uint8 tensors, one per process
    meta: dict  # config, model_config, teacher_sha256, mode, wall_time, nonfinite_streak (JSON-able)
    ema: dict | None = None
    path: str = ""
    extra: dict = field(default_factory=dict)


def checkpoint_dir(out: str) -> str:
    return os.path.join(out, FOLDER)


def list_checkpoints(out: str) -> list[tuple[int, str]]:
    """(step, path), newest first."""
    found = []
    for path in glob.glob(os.path.join(checkpoint_dir(out), "step_*.safetensors")):
        m = _NAME.match(os.path.basename(path))
        if m:
            found.append((int(m.group(1)), path))
    return sorted(found, reverse=True)


def write_checkpoint(out: str, ckpt: Checkpoint, keep: int = KEEP) -> str:
    tensors = {}
    for role, sd in ckpt.roles.items():
        tensors.update({f"{role}/{k}": v for k, v in sd.items()})
    structure = {}
    for name, opt_sd in ckpt.optimizers.items():
        flat, structure[name] = flatten_optimizer(opt_sd, f"optimizer/{name}")
        tensors.update(flat)
    for i, state in enumerate(ckpt.rng_states):
        tensors[f"rng/{i}"] = state
    if ckpt.ema is not None:
        tensors.update({f"ema/{k}": v for k, v in ckpt.ema.items()})
    meta = {"format": FORMAT, "step": str(ckpt.step), "optimizers": json.dumps(structure),
            "state": json.dumps(ckpt.meta, sort_keys=True)}
    path = os.path.join(checkpoint_dir(out), f"step_{ckpt.step:08d}.safetensors")
    write_safetensors(path, tensors, meta)
    for _, old in list_checkpoints(out)[keep:]:
        os.remove(old)
    return path


def read_checkpoint(path: str) -> Checkpoint:
    """A complete checkpoint or a one-line SGMDError saying why not."""
    tensors, meta = read_safetensors(path)
    fmt = meta.get("format")
    if fmt != FORMAT:
        raise SGMDError(f"{path} is not an SGMD training checkpoint (format {fmt!r}, expected {FORMAT})")
    try:
        step = int(meta["step"])
        structure = json.loads(meta["optimizers"])
        state = json.loads(meta["state"])
        groups: dict[str, dict] = {}
        for key, value in tensors.items():
            kind, _, rest = key.partition("/")
            groups.setdefault(kind, {})[rest] = value
        optimizers = {name: unflatten_optimizer(groups.get("optimizer", {}), s, name) for name, s in structure.items()}
        rng = [groups["rng"][str(i)] for i in range(len(groups["rng"]))]
        roles = {r: groups[r] for r in ("generator", "fake")}
        roles["fake_extra"] = groups.get("fake_extra", {})
        _check_state(state)
    except (KeyError, ValueError, TypeError) as e:
        raise SGMDError(f"{path} is an incomplete checkpoint ({type(e).__name__}: {e})") from None
    return Checkpoint(step, roles, optimizers, rng, state, groups.get("ema"), path)


def _check_state(state: dict) -> None:
    kinds = {"config": dict, "model_config": dict, "nonfinite_streak": dict, "wall_time": (int, float), "mode": str}
    for key, kind in kinds.items():
        if not isinstance(state.get(key), kind):
            raise ValueError(f"field {key!r} missing or malformed")


def latest_checkpoint(out: str) -> Checkpoint | None:
    """The newest checkpoint that reads back completely; damaged newer ones are skipped with a warning."""
    for _, path in list_checkpoints(out):
        try:
            return read_checkpoint(path)
        except SGMDError as e:
            warn(f"skipping damaged checkpoint: {e}")
    return None


def remove_temp_files(out: str) -> None:
    """Temp files a killed write left behind (never a finished checkpoint)."""
    for path in glob.glob(os.path.join(checkpoint_dir(out), ".tmp_*.safetensors")):
        try:
            os.remove(path)
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------
# optimizer state <-> flat tensors + JSON


def flatten_optimizer(sd: dict, prefix: str) -> tuple[dict, dict]:
    flat, state = {}, {}
    for pid, st in sd["state"].items():
        state[str(pid)] = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                flat[f"{prefix}/{pid}/{k}"] = v
                state[str(pid)][k] = {"tensor": True}
            else:
                state[str(pid)][k] = {"value": v}
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in sd["param_groups"]]
    return flat, {"state": state, "param_groups": groups}


def unflatten_optimizer(flat: dict, structure: dict, name: str) -> dict:
    state = {}
    for pid, st in structure["state"].items():
        state[int(pid)] = {k: flat[f"{name}/{pid}/{k}"] if v.get("tensor") else v["value"] for k, v in st.items()}
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in structure["param_groups"]]
    return {"state": state, "param_groups": groups}
