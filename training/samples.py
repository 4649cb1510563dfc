"""Sample videos of the generator with its few-step recipe, for looking at progress.

Fixed (prompt, seed) pairs (the source's sample prompts, seeds 0..N-1; the seed -> noise rule of
`sgmd.noise`), one clip at a time. Written as `samples.npz` (`videos` uint8 [N, T, H, W, 3] at the
latent resolution, `prompts` str [N], `seeds` int64 [N]: the evaluator's format, written by its
`write_samples_npz`) plus an MP4 per clip, upscaled x8 for viewing, when imageio-ffmpeg is
available."""
from __future__ import annotations

import os
from contextlib import nullcontext

import numpy as np
import torch

from sgmd import codec
from sgmd.noise import noise_and_generator
from sgmd.samplers import sample_few_step
from training.console import warn
from training.evaluate import write_samples_npz

SAMPLES_FILE = "samples.npz"
FPS = 8


@torch.no_grad()
def generate_samples(run) -> tuple[np.ndarray, list[str], np.ndarray]:
    cfg = run.cfg
    prompts, context = run.source.fixed(cfg.samples)
    seeds = np.arange(cfg.samples, dtype=np.int64)
    shape = (1, run.roles.teacher_model.cfg.in_dim, cfg.latent_frames, cfg.latent_height, cfg.latent_width)
    videos = []
    with run.ema.applied() if run.ema is not None else nullcontext():
        for i, seed in enumerate(seeds.tolist()):
            noise, g = noise_and_generator(seed, shape, device=run.device)
            ctx = context[i:i + 1].to(run.device)
            velocity = lambda x, s: run.roles.generator(x, s, ctx)  # noqa: E731
            latent = sample_few_step(velocity, noise, run.sigmas, cfg.update_rule, generator=g)
            videos.append(codec.to_uint8(codec.decode(latent.float().cpu(), upscale=1))[0])
    return np.stack(videos), prompts, seeds


def write_samples(out: str, step: int, videos: np.ndarray, prompts: list[str], seeds: np.ndarray, final: bool) -> str:
    """`<out>/samples/step_XXXXXXXX.npz` (+ MP4s); the final samples also go to `<out>/samples.npz`."""
    folder = os.path.join(out, "samples")
    os.makedirs(folder, exist_ok=True)
    stem = f"step_{step:08d}"
    path = os.path.join(folder, stem + ".npz")
    write_samples_npz(path, videos, prompts, seeds)
    if final:
        path = os.path.join(out, SAMPLES_FILE)
        write_samples_npz(path, videos, prompts, seeds)
    write_mp4s(folder, stem, videos)
    return path


def write_mp4s(folder: str, stem: str, videos: np.ndarray) -> None:
    try:
        import imageio.v2 as imageio
    except ImportError:
        return
    try:
        for i, video in enumerate(videos):
            big = video.repeat(codec.VIEW_UPSCALE, axis=1).repeat(codec.VIEW_UPSCALE, axis=2)
            imageio.mimwrite(os.path.join(folder, f"{stem}_{i}.mp4"), list(big), fps=FPS, macro_block_size=1)
    except Exception as e:  # no ffmpeg binary, codec trouble: previews are optional
        warn(f"could not write MP4 previews ({type(e).__name__}: {str(e)[:100]})")
