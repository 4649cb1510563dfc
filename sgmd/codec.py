"""Toy codec: a fixed linear map between RGB frames and the 16-channel Wan 2.1 latent layout.

One latent frame per video frame and one latent pixel per video pixel; decoding upsamples by 8
(Wan's spatial factor) for viewing. Two latent spaces, as in ComfyUI:
- *normalised* latents are what the diffusion model sees (our trainer, our samplers);
- *raw* latents are what a ComfyUI LATENT holds between nodes. ComfyUI's Wan21 latent format maps
  raw -> normalised with `(raw - mean) / std` before sampling and back with `z * std + mean` after,
  so a latent that ComfyUI's sampler makes from our teacher decodes with `decode_raw`.

Colour takes 3 of the 16 channels (`BASIS`). Six of the other 13 carry a fixed *position code*
(`PLACE`, orthogonal to `BASIS`, so decoding ignores it): a cosine ramp and a cosine bump along
time, height and width. Wan has RoPE only, no absolute positions, and the background is one flat
colour, so without this code the model cannot tell the first frame from the last nor an edge from
the centre, and "moving left" (start right, end left) cannot be expressed at high noise. Real VAE
latents are never this stationary; the code stands in for that.

Codec v3 adds, on three more channels (`BASIS_D`, orthogonal to both), the clip's time derivative
(`time_derivative`: central differences, one-sided at the ends). A real VAE's latent sees several
frames at once, so motion shows locally in it; with colour alone a pixel says nothing about where
its shape goes, and the direction-free choice at high noise had to be read across the whole clip
(docs/tiny-model.md, vD3). Decoding reads colour only, so it is the same for both codecs; the codec a
teacher was trained in is recorded in its file (`teacher_sampling.codec_of`) and every encode for it
uses that one.
"""
from __future__ import annotations

import torch

LATENT_CHANNELS = 16
CODEC_V2 = "sgmd-toy-codec-v2"  # v1 (retired): colour only; v2: colour + position code (amplitude 4)
CODEC_V3 = "sgmd-toy-codec-v3"  # v2 + the time derivative (amplitude 2)
CODECS = {"v2": CODEC_V2, "v3": CODEC_V3}  # short names (train_teacher.py --codec) -> ids
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
POSITION_FEATURES = 6
# Strong enough to be read through heavy noise by averaging over a frame or a column (the layout
# is decided around sigma 0.7-0.9); sqrt(2) was too weak: the motion words stayed unused.
POSITION_AMPLITUDE = 4.0


def _place() -> torch.Tensor:
    """16x6 orthonormal columns spanning part of the complement of BASIS (fixed seed)."""
    g = torch.Generator().manual_seed(20261123)
    full = torch.cat([BASIS.double(), torch.randn(LATENT_CHANNELS, POSITION_FEATURES, generator=g, dtype=torch.float64)], 1)
    q, _ = torch.linalg.qr(full)
    return q[:, 3:3 + POSITION_FEATURES].float()


PLACE = _place()


DERIVATIVE_AMPLITUDE = 2.0  # the derivative channels carry BASIS_D (2 a dRGB/dt): a = 2 doubles a colour's scale


def _derivative_basis() -> torch.Tensor:
    """16x3 orthogonal columns of squared norm 16/3 (as BASIS) in the complement of BASIS and PLACE."""
    g = torch.Generator().manual_seed(20261207)
    full = torch.cat([BASIS.double(), PLACE.double(), torch.randn(LATENT_CHANNELS, 3, generator=g, dtype=torch.float64)], 1)
    q, _ = torch.linalg.qr(full)
    return (q[:, 3 + POSITION_FEATURES:6 + POSITION_FEATURES] * (LATENT_CHANNELS / 3) ** 0.5).float()


BASIS_D = _derivative_basis()


def time_derivative_matrix(frames: int) -> torch.Tensor:
    """`[F, F]` float64 matrix D with `(D x)_t` the derivative of x along time at frame t: central
    differences `(x[t+1] - x[t-1]) / 2`, one-sided `x[1] - x[0]` and `x[F-1] - x[F-2]` at the ends (as
    `torch.gradient`). The one operator behind the encoder and the exact posterior."""
    d = torch.zeros(frames, frames, dtype=torch.float64)
    if frames < 2:
        return d
    for t in range(1, frames - 1):
        d[t, t + 1], d[t, t - 1] = 0.5, -0.5
    d[0, 0], d[0, 1] = -1.0, 1.0
    d[-1, -2], d[-1, -1] = -1.0, 1.0
    return d


def time_derivative(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """`time_derivative_matrix` applied along `dim` of `x`."""
    d = time_derivative_matrix(x.shape[dim]).to(x)
    return torch.movedim(torch.tensordot(d, torch.movedim(x, dim, 0), dims=1), 0, dim)


def derivative_basis(codec_id: str) -> torch.Tensor | None:
    """The derivative channels' basis of a codec (None when it has none); unknown ids are an error."""
    if codec_id not in CODECS.values():
        raise ValueError(f"unknown toy codec {codec_id!r}; known: {', '.join(CODECS.values())}")
    return BASIS_D if codec_id == CODEC_V3 else None


def position_code(frames: int, height: int, width: int) -> torch.Tensor:
    """The fixed position code `[16, F, H, W]` added by `encode`: per axis, `a cos(pi u)` (a ramp from
    one end to the other) and `a cos(2 pi u)` (centre vs ends), u = (index + 0.5) / length,
    a = POSITION_AMPLITUDE, mapped through `PLACE`; defined for any latent size."""
    a = POSITION_AMPLITUDE

    def axis(n):
        u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
        return [a * torch.cos(torch.pi * u), a * torch.cos(2 * torch.pi * u)]

    (t1, t2), (h1, h2), (w1, w2) = axis(frames), axis(height), axis(width)
    ones = torch.ones(frames, height, width, dtype=torch.float64)
    feats = torch.stack([ones * t1.view(-1, 1, 1), ones * t2.view(-1, 1, 1), ones * h1.view(1, -1, 1),
                         ones * h2.view(1, -1, 1), ones * w1.view(1, 1, -1), ones * w2.view(1, 1, -1)])
    return torch.einsum("ck,kfhw->cfhw", PLACE.double(), feats).float()


def encode(frames: torch.Tensor, codec_id: str = CODEC_V2) -> torch.Tensor:
    """RGB `[N, F, H, W, 3]` in [0, 1] -> normalised latent `[N, 16, F, H, W]` in codec `codec_id`."""
    dbasis = derivative_basis(codec_id)
    z = torch.einsum("cj,nfhwj->ncfhw", BASIS.to(frames), 2 * frames - 1)
    if dbasis is not None:
        z = z + torch.einsum("cj,nfhwj->ncfhw", dbasis.to(frames), 2 * DERIVATIVE_AMPLITUDE * time_derivative(frames, 1))
    return (z + position_code(*z.shape[2:]).to(z)).contiguous()


def decode(latent: torch.Tensor, upscale: int = 1) -> torch.Tensor:
    """Normalised latent `[N, 16, F, H, W]` -> RGB `[N, F, H*u, W*u, 3]` in [0, 1] (least squares; the
    position code and the derivative channels are orthogonal to the colour basis and drop out: one
    decoder for every codec)."""
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
