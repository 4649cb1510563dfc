"""Helpers for the trainer tests: a tiny random Wan teacher on disk and the argument list of a
short run on it (latent 16x2x4x4, LoRA rank 4, 1 prompt per batch)."""
from __future__ import annotations

import os

import torch

from sgmd.wan import WanConfig, WanModel
from sgmd.weights import write_safetensors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_PY = os.path.join(REPO, "training", "run.py")


def write_teacher(path, dim: int = 128, ffn_dim: int = 128, num_layers: int = 1, seed: int = 0,
                  metadata: dict | None = None) -> str:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = WanModel(WanConfig(dim=dim, ffn_dim=ffn_dim, num_layers=num_layers))
    write_safetensors(str(path), model.state_dict(), metadata)
    return str(path)


def run_args(teacher, out, iterations: int = 2, **options) -> list[str]:
    opts = dict(teacher=teacher, out=out, iterations=iterations, batch_size=1, latent_frames=2, latent_height=4,
                latent_width=4, lora_rank=4, lora_alpha=4, samples=2, device="cpu")
    opts.update(options)
    args = []
    for k, v in opts.items():
        flag = "--" + k.replace("_", "-")
        if v is True:
            args.append(flag)
        elif v is False:
            args.append("--no-" + k.replace("_", "-"))
        else:
            args += [flag, str(v)]
    return args


def subprocess_env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    env.pop("WORLD_SIZE", None)
    return env
