"""Toy codec: a fixed linear map between RGB frames and the 16-channel Wan 2.1 latent layout.

One latent frame per video frame and one latent pixel per video pixel; decoding upsamples by 8
(Wan's spatial factor) for viewing. Two latent spaces, as in ComfyUI:
- *normalised* latents are what the diffusion model sees (our trainer, our samplers);
- *raw* latents are what a ComfyUI LATENT holds between nodes. ComfyUI's Wan21 latent format maps
  raw -> normalised with `(raw - mean) / std` before sampling and back with `z * std + mean` after,
  so a latent that ComfyUI's sampler makes from our teacher decodes with `decode_raw`.
"""
from __future__ import annotations

import torch

LATENT_CHANNELS = 16
VIEW_UPSCALE = 8

# ComfyUI comfy/latent_formats.py Wan21 (scale_factor 1.0): per-channel statistics of the Wan VAE.
WAN21_LATENT_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                     0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
WAN21_LATENT_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)


def _basis() -> torch.Tensor:
    """16x3 matrix with orthogonal columns of squared norm 16/3: a unit-RMS latent for a +-1 colour."""
    g = torch.Generator().manual_seed(20260521)
    q, _ = torch.linalg.qr(torch.randn(LATENT_CHANNELS, 3, generator=g, dtype=torch.float64))
    return (q * (LATENT_CHANNELS / 3) ** 0.5).float()


BASIS = _basis()


def encode(frames: torch.Tensor) -> torch.Tensor:
    """RGB `[N, F, H, W, 3]` in [0, 1] -> normalised latent `[N, 16, F, H, W]`."""
    z = torch.einsum("cj,nfhwj->ncfhw", BASIS.to(frames), 2 * frames - 1)
    return z.contiguous()


def decode(latent: torch.Tensor, upscale: int = 1) -> torch.Tensor:
    """Normalised latent `[N, 16, F, H, W]` -> RGB `[N, F, H*u, W*u, 3]` in [0, 1] (least squares)."""
    basis = BASIS.to(latent)
    rgb = torch.einsum("cj,ncfhw->nfhwj", basis, latent.float()) / (LATENT_CHANNELS / 3)
    rgb = ((rgb + 1) / 2).clamp(0, 1)
    if upscale > 1:
        rgb = rgb.repeat_interleave(upscale, dim=2).repeat_interleave(upscale, dim=3)
    return rgb


def _stats(like: torch.Tensor):
    shape = (1, LATENT_CHANNELS, 1, 1, 1)
    mean = torch.tensor(WAN21_LATENT_MEAN, dtype=like.dtype, device=like.device).view(shape)
    std = torch.tensor(WAN21_LATENT_STD, dtype=like.dtype, device=like.device).view(shape)
    return mean, std


def to_raw(latent: torch.Tensor) -> torch.Tensor:
    """Normalised -> raw (ComfyUI LATENT) space: `z * std + mean`."""
    mean, std = _stats(latent)
    return latent * std + mean


def from_raw(raw: torch.Tensor) -> torch.Tensor:
    """Raw (ComfyUI LATENT) -> normalised space: `(raw - mean) / std`."""
    mean, std = _stats(raw)
    return (raw - mean) / std


def decode_raw(raw: torch.Tensor, upscale: int = VIEW_UPSCALE) -> torch.Tensor:
    return decode(from_raw(raw), upscale)


def to_uint8(frames: torch.Tensor):
    """[..., 3] float in [0, 1] -> numpy uint8."""
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
