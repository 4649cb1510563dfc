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


def codec_of(meta: dict) -> str | None:
    """The toy codec a file was trained in (`sgmd.codec`), None when it names no codec we know (real Wan
    weights, foreign files)."""
    name = teacher_info(meta).get("codec")
    return name if name in codec.CODECS.values() else None


def file_codec(path: str) -> str:
    """The toy codec of a teacher file, from its header only; the v2 codec for a file that names none
    (the toy tools' assumption before v3 existed: they need a toy teacher anyway)."""
    return codec_of(read_metadata(path)) or codec.CODEC_V2


def still_pattern_of(meta: dict, frames: int, height: int, width: int) -> torch.Tensor | None:
    """What the still state keeps (`samplers.still_state`): the toy codecs' position code when the file
    was trained in one (v3's derivative channels are averaged like the rest: a frame average of a
    clip's derivative is its net travel, which a still clip does not have, so at m > 0 the still
    state of a v3 teacher is slightly less still than a v2 one's), else nothing (a plain frame
    average)."""
    if codec_of(meta):
        return codec.position_code(frames, height, width)
    return None


def file_motion_guidance(path: str) -> float:
    """`motion_guidance_of` a file, from its header only."""
    return motion_guidance_of(read_metadata(path))


def distill_defaults_of(meta: dict) -> dict:
    """The distillation options the file recommends for itself (`set_distill_defaults`; {} when none):
    `training.config` uses them where neither a config file nor the command line sets the option."""
    value = teacher_info(meta).get("distill")
    return dict(value) if isinstance(value, dict) else {}


def _update_info(path: str, key: str, entry: dict) -> None:
    """Merge `entry` into the `sgmd_teacher` metadata's `key` (atomic rewrite; weights and the rest of
    the metadata unchanged)."""
    tensors, meta = read_safetensors(path)
    info = teacher_info(meta)
    if not info:
        raise SGMDError(f"{path} has no {KEY} metadata: not a teacher this project trained")
    info[key] = {**(info.get(key) or {}), **entry}
    write_safetensors(path, tensors, {**meta, KEY: json.dumps(info)})


def set_sampling(path: str, motion_guidance: float) -> None:
    """Record in a teacher file's metadata the motion guidance it is sampled with."""
    if not (math.isfinite(motion_guidance) and motion_guidance >= 0):
        raise SGMDError(f"motion guidance must be >= 0; got {motion_guidance}")
    _update_info(path, "sampling", {"motion_guidance": float(motion_guidance)})


def set_distill_defaults(path: str, options: dict) -> None:
    """Record in a teacher file's metadata the distillation options measured best for it (option name
    -> value, as `training/config.py` names them; checked there when used). The reference does the
    same per model: its diversity term is on for one Wan size only."""
    _update_info(path, "distill", dict(options))
