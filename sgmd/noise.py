"""The seed -> noise rule shared by the evaluator, the trainer's sample previews and the ComfyUI nodes.

Rule (one clip, one seed): the initial noise of the clip with seed `s` is
`torch.randn([1, C, F, H, W], generator=torch.Generator("cpu").manual_seed(s), dtype=float32)`,
drawn on the CPU and only then moved to the target device and dtype. This is what ComfyUI's
`comfy.sample.prepare_noise` does for a batch of one, so a seed means the same clip in our tools
and in a ComfyUI workflow. A batch of clips is the concatenation of the per-clip noises, so a
clip never depends on the batch it was generated in.

Stochastic samplers (the `renoise` rule) draw their fresh noise from the same per-clip generator,
continuing after the initial draw (`noise_and_generator`); run such clips one at a time to keep
them batch-independent.
"""
from __future__ import annotations

import torch

from .codec import LATENT_CHANNELS
from .toyvideo import FRAMES, SIZE

CLIP_LATENT_SHAPE = (1, LATENT_CHANNELS, FRAMES, SIZE, SIZE)


def clip_generator(seed: int) -> torch.Generator:
    """The clip's random stream: a CPU generator seeded with `seed`."""
    return torch.Generator("cpu").manual_seed(int(seed))


def noise_and_generator(seed: int, shape=CLIP_LATENT_SHAPE, device="cpu", dtype=torch.float32):
    """Initial noise of one clip plus its generator (positioned after that draw)."""
    g = clip_generator(seed)
    noise = torch.randn(tuple(shape), generator=g, dtype=torch.float32, device="cpu")
    return noise.to(device=device, dtype=dtype), g


def noise_for_seed(seed: int, shape=CLIP_LATENT_SHAPE, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """Initial noise of one clip (`shape` includes the batch dimension of 1)."""
    return noise_and_generator(seed, shape, device, dtype)[0]


def noise_for_seeds(seeds, shape=CLIP_LATENT_SHAPE, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """Per-clip noises concatenated along the batch dimension: `[len(seeds), *shape[1:]]`."""
    seeds = [int(s) for s in seeds]
    if not seeds:
        return torch.empty((0, *tuple(shape)[1:]), device=device, dtype=dtype)
    return torch.cat([noise_for_seed(s, shape, "cpu") for s in seeds]).to(device=device, dtype=dtype)
