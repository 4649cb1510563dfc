"""The sampling recipe of a distilled generator, carried in its safetensors metadata.

The sigma list, the shift and the update rule are part of a few-step model's identity (method doc
s2): sampling a 4-step student with another schedule or rule gives wrong videos. Every file the
trainer exports records them under one metadata key, `sgmd_recipe` (a JSON object), so loaders
and nodes can set the sampler up without the user guessing."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import torch

from .errors import SGMDError
from .samplers import UPDATE_RULES
from .schedules import validate_sigmas

METADATA_KEY = "sgmd_recipe"
FORMAT = "sgmd-recipe-v1"
COMFY_SAMPLER = {"euler": "euler", "renoise": "lcm"}  # ComfyUI sampler that implements each rule


@dataclass
class SamplingRecipe:
    """How to sample a distilled generator: `sigmas` (ending at 0) with the `update_rule`, CFG off."""

    sigmas: list[float]
    shift: float
    student_timesteps: list[float]
    update_rule: str
    cfg: float = 1.0
    objective: str = ""
    teacher_sha256: str = ""
    iterations: int = 0
    format: str = field(default=FORMAT)

    @property
    def steps(self) -> int:
        return len(self.sigmas) - 1

    @property
    def comfy_sampler(self) -> str:
        return COMFY_SAMPLER[self.update_rule]

    def to_metadata(self) -> dict[str, str]:
        return {METADATA_KEY: json.dumps(asdict(self), sort_keys=True)}

    @classmethod
    def from_metadata(cls, meta: dict | None) -> "SamplingRecipe | None":
        """The recipe in a file's metadata; None if the file has none. Malformed -> SGMDError."""
        if not meta or METADATA_KEY not in meta:
            return None
        try:
            d = json.loads(meta[METADATA_KEY])
        except (TypeError, ValueError):
            raise SGMDError(f"the file's {METADATA_KEY} metadata is not valid JSON; re-export the model") from None
        if not isinstance(d, dict):
            raise SGMDError(f"the file's {METADATA_KEY} metadata is not a JSON object; re-export the model")
        _check_format(d.get("format"))
        try:
            recipe = cls(
                sigmas=[float(s) for s in d["sigmas"]],
                shift=float(d["shift"]),
                student_timesteps=[float(t) for t in d["student_timesteps"]],
                update_rule=str(d["update_rule"]),
                cfg=float(d.get("cfg", 1.0)),
                objective=str(d.get("objective", "")),
                teacher_sha256=str(d.get("teacher_sha256", "")),
                iterations=int(d.get("iterations", 0)),
            )
        except KeyError as e:
            raise SGMDError(f"the file's {METADATA_KEY} metadata lacks {e.args[0]!r}; re-export the model") from None
        except (TypeError, ValueError) as e:
            raise SGMDError(f"the file's {METADATA_KEY} metadata has a bad value ({e}); re-export the model") from None
        return recipe.validate()

    def validate(self) -> "SamplingRecipe":
        validate_sigmas(torch.tensor(self.sigmas, dtype=torch.float32))
        if self.update_rule not in UPDATE_RULES:
            raise SGMDError(f"recipe update rule {self.update_rule!r} is unknown; expected one of {', '.join(UPDATE_RULES)}")
        if not (math.isfinite(self.shift) and self.shift > 0) or not (math.isfinite(self.cfg) and self.cfg >= 0):
            raise SGMDError(f"recipe has a bad shift ({self.shift}) or cfg ({self.cfg})")
        return self


def _check_format(fmt) -> None:
    if fmt == FORMAT:
        return
    prefix = FORMAT.rsplit("v", 1)[0]
    version = fmt[len(prefix):] if isinstance(fmt, str) and fmt.startswith(prefix) else ""
    if version.isdigit() and int(version) > int(FORMAT[len(prefix):]):
        raise SGMDError(f"the model's sampling recipe is {fmt}, newer than this version reads ({FORMAT}); update the SGMD pack")
    raise SGMDError(f"the model's sampling recipe has an unknown format {fmt!r} (expected {FORMAT})")
