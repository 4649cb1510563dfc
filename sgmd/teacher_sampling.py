"""How a teacher file is meant to be sampled, read from its `sgmd_teacher` metadata.

The embedded teachers record their training recipe under `sgmd_teacher`. A `sampling` entry, added
once the file is evaluated (`set_sampling`), says which guidance its published figures were measured
with, so the evaluator samples it that way without the user repeating it (the trainer on request:
`run.py --motion-guidance -1`; the ComfyUI node's default is the shipped file's value, held equal by a
test). Files without one (real Wan weights, older teachers) get plain CFG: motion guidance 0."""
from __future__ import annotations

import json
import math

import torch

from . import codec
from .errors import SGMDError
from .weights import read_metadata, read_safetensors, write_safetensors

KEY = "sgmd_teacher"


def teacher_info(meta: dict) -> dict:
    """The parsed `sgmd_teacher` entry of a file's metadata ({} when absent or unreadable)."""
    try:
        info = json.loads(meta.get(KEY) or "{}")
    except json.JSONDecodeError:
        return {}
    return info if isinstance(info, dict) else {}


def motion_guidance_of(meta: dict) -> float:
    """The motion guidance the file is sampled with (0 when it says none)."""
    value = (teacher_info(meta).get("sampling") or {}).get("motion_guidance", 0.0)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) and value >= 0 else 0.0


def still_pattern_of(meta: dict, frames: int, height: int, width: int) -> torch.Tensor | None:
    """What the still state keeps (`samplers.still_state`): the toy codec's position code when the file
    was trained in that codec, else nothing (a plain frame average)."""
    if teacher_info(meta).get("codec") == codec.CODEC_ID:
        return codec.position_code(frames, height, width)
    return None


def file_motion_guidance(path: str) -> float:
    """`motion_guidance_of` a file, from its header only."""
    return motion_guidance_of(read_metadata(path))


def set_sampling(path: str, motion_guidance: float) -> None:
    """Record in a teacher file's metadata the motion guidance it is sampled with (atomic rewrite;
    weights and the rest of the metadata unchanged)."""
    if not (math.isfinite(motion_guidance) and motion_guidance >= 0):
        raise SGMDError(f"motion guidance must be >= 0; got {motion_guidance}")
    tensors, meta = read_safetensors(path)
    info = teacher_info(meta)
    if not info:
        raise SGMDError(f"{path} has no {KEY} metadata: not a teacher this project trained")
    info["sampling"] = {**(info.get("sampling") or {}), "motion_guidance": float(motion_guidance)}
    write_safetensors(path, tensors, {**meta, KEY: json.dumps(info)})
