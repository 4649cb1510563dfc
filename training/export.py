"""Export the trained generator in files ComfyUI loads natively, with the sampling recipe.

- LoRA mode: `generator_lora.safetensors`, keys `diffusion_model.<module>.lora_down.weight` /
  `.lora_up.weight` / `.alpha` (`LoraLoaderModelOnly` on the teacher).
- `full=True`: `generator.safetensors`, a complete Wan 2.1 state dict with the original keys
  (`UNETLoader`); in LoRA mode the adapter is merged into the teacher's weights.
Both carry `sgmd_recipe` (sigmas, shift, update rule, cfg 1, ...) and the run's config in the
safetensors metadata. With an EMA, the EMA weights are exported."""
from __future__ import annotations

import json
import os
from contextlib import nullcontext

from sgmd.weights import write_safetensors
from training.config import to_json_dict

LORA_FILE = "generator_lora.safetensors"
FULL_FILE = "generator.safetensors"


def export_generator(run, full: bool = False, out_dir: str | None = None) -> str:
    """Write the generator of `run` (a `training.trainer.Run`) and return the path."""
    out_dir = out_dir or run.cfg.out
    meta = {**run.recipe().to_metadata(), "sgmd_config": json.dumps(to_json_dict(run.cfg), sort_keys=True)}
    with run.ema.applied() if run.ema is not None else nullcontext():
        if full:
            tensors, name = run.roles.generator_full_state_dict(), FULL_FILE
        else:
            tensors, name = run.roles.state_dict("generator"), LORA_FILE
            meta["sgmd_lora"] = json.dumps({"rank": run.cfg.lora_rank, "alpha": run.cfg.lora_alpha,
                                            "targets": list(run.cfg.lora_targets)})
    path = os.path.join(out_dir, name)
    write_safetensors(path, tensors, meta)
    return path
