"""Wan 2.1 text-to-video diffusion transformer (DiT), written from the architecture description.

State-dict keys are the original Wan / ComfyUI names, so the real Wan 2.1 T2V files (1.3B, 14B)
and our tiny teacher load with the same code. The network predicts the flow velocity
`v ~ eps - x0` for `x_s = (1 - s) x0 + s eps`, with input timestep `t = 1000 s`.

Shapes: latent `x` is `[B, C=16, F, H, W]` (normalised latent space), text `context` is
`[B, L, text_dim=4096]`, `t` is `[B]` in [0, 1000].
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .errors import SGMDError

COMFY_PREFIX = "model.diffusion_model."
HEAD_DIM = 128  # ComfyUI derives num_heads = dim // 128, so the head width is fixed


@dataclass
class WanConfig:
    """Architecture of a Wan 2.1 T2V model; `from_state_dict` infers it from a file."""

    dim: int = 1536
    ffn_dim: int = 8960
    num_layers: int = 30
    in_dim: int = 16
    out_dim: int = 16
    text_dim: int = 4096
    freq_dim: int = 256
    patch_size: tuple = (1, 2, 2)
    eps: float = 1e-6

    @property
    def num_heads(self) -> int:
        return self.dim // HEAD_DIM

    def validate(self) -> "WanConfig":
        if self.dim % HEAD_DIM:
            raise SGMDError(f"Wan dim must be a multiple of {HEAD_DIM} (ComfyUI derives heads = dim // 128); got {self.dim}")
        if min(self.dim, self.ffn_dim, self.num_layers, self.in_dim, self.out_dim, self.text_dim) <= 0:
            raise SGMDError(f"Wan config has a non-positive size: {self}")
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["patch_size"] = list(self.patch_size)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "WanConfig":
        d = dict(d)
        d["patch_size"] = tuple(d.get("patch_size", (1, 2, 2)))
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__}).validate()

    @classmethod
    def from_state_dict(cls, sd: dict) -> "WanConfig":
        """Infer the config from Wan-named keys (prefix already stripped), as ComfyUI does."""
        if not is_wan_state_dict(sd):
            found = ", ".join(sorted(sd)[:4]) or "no tensors"
            raise SGMDError(f"not a Wan 2.1 model file (no head.modulation / patch_embedding; found {found} ...)")
        if any(k.startswith(("img_emb.", "vace_", "control_adapter")) for k in sd) or any(
            ".k_img." in k for k in sd
        ):
            raise SGMDError("this is a Wan image-to-video / VACE / control model; only Wan 2.1 text-to-video is supported")
        scaled = [k for k in sd if k.endswith(("scale_weight", "scaled_fp8", "weight_scale"))]
        if scaled or any(v.dtype in _FP8_DTYPES for v in sd.values()):
            raise SGMDError("fp8 / 'scaled' Wan files are not supported for training; use the fp16, bf16 or fp32 file")
        pe = sd["patch_embedding.weight"]  # [dim, in_dim, pt, ph, pw]
        dim = sd["head.modulation"].shape[-1]
        layers = 1 + max((int(k.split(".")[1]) for k in sd if k.startswith("blocks.")), default=-1)
        if layers == 0:
            raise SGMDError("Wan file has no transformer blocks")
        patch = tuple(pe.shape[2:])
        out_dim = sd["head.head.weight"].shape[0] // math.prod(patch)
        return cls(
            dim=dim,
            ffn_dim=sd["blocks.0.ffn.0.weight"].shape[0],
            num_layers=layers,
            in_dim=pe.shape[1],
            out_dim=out_dim,
            text_dim=sd["text_embedding.0.weight"].shape[1],
            freq_dim=sd["time_embedding.0.weight"].shape[1],
            patch_size=patch,
        ).validate()


_FP8_DTYPES = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n))


def is_wan_state_dict(sd: dict) -> bool:
    """Has the two keys every Wan 2.1 DiT has (prefix already stripped)."""
    return "head.modulation" in sd and "patch_embedding.weight" in sd


def strip_prefix(sd: dict) -> dict:
    """Accept keys with or without ComfyUI's `model.diffusion_model.` prefix."""
    if any(k.startswith(COMFY_PREFIX) for k in sd):
        return {k[len(COMFY_PREFIX):]: v for k, v in sd.items() if k.startswith(COMFY_PREFIX)}
    return dict(sd)


# ---------------------------------------------------------------------------------------------
# building blocks


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Wan's timestep embedding: [cos, sin] of t * 10000^(-i/half), in float64 then fp32."""
    half = dim // 2
    freqs = torch.pow(10000, -torch.arange(half, dtype=torch.float64, device=t.device) / half)
    args = t.to(torch.float64)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1).float()


def rope_frequencies(head_dim: int, max_len: int = 1024, theta: float = 10000.0) -> torch.Tensor:
    """Complex rotary frequencies for the three axes (frames, height, width).

    The head's complex pairs split as [c - 2(c//3), c//3, c//3] with c = head_dim // 2.
    Returns `[max_len, c]` complex64: columns are the F, H, W parts concatenated."""
    c = head_dim // 2
    sizes = (c - 2 * (c // 3), c // 3, c // 3)
    parts = []
    for n in sizes:
        d = 2 * n
        inv = 1.0 / torch.pow(theta, torch.arange(0, d, 2, dtype=torch.float64) / d)
        ang = torch.outer(torch.arange(max_len, dtype=torch.float64), inv)
        parts.append(torch.polar(torch.ones_like(ang), ang))
    return torch.cat(parts, dim=1).to(torch.complex64)


def rope_grid(freqs: torch.Tensor, grid: tuple) -> torch.Tensor:
    """Per-token complex rotation for a (F, H, W) token grid: `[F*H*W, c]`."""
    f, h, w = grid
    c = freqs.shape[1]
    n_h = n_w = c // 3
    n_f = c - n_h - n_w
    ff, fh, fw = freqs.split([n_f, n_h, n_w], dim=1)
    rot = torch.cat(
        [
            ff[:f].view(f, 1, 1, -1).expand(f, h, w, -1),
            fh[:h].view(1, h, 1, -1).expand(f, h, w, -1),
            fw[:w].view(1, 1, w, -1).expand(f, h, w, -1),
        ],
        dim=-1,
    )
    return rot.reshape(f * h * w, c)


def apply_rope(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive channel pairs of `x [B, S, heads, d]` by `rot [S, d/2]` (complex).

    Written in real arithmetic (the same products as the complex multiply) because torch.compile's
    inductor cannot generate code for complex tensors: a complex multiply on every q and k would stay
    an eager kernel inside a compiled step."""
    b, s, n, d = x.shape
    cos, sin = rot.real[None, :, None, :], rot.imag[None, :, None, :]
    pairs = x.float().reshape(b, s, n, d // 2, 2)
    re, im = pairs[..., 0], pairs[..., 1]
    return torch.stack([re * cos - im * sin, re * sin + im * cos], dim=-1).reshape(b, s, n, d).type_as(x)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 (Wan does this for bf16 stability)."""

    def forward(self, x):
        w = None if self.weight is None else self.weight.float()  # bf16/fp16 gains: CPU needs fp32
        b = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).type_as(x)


class Attention(nn.Module):
    """Multi-head attention with Wan's q/k RMS norm over the whole width (across heads)."""

    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = RMSNorm(dim, eps)
        self.norm_k = RMSNorm(dim, eps)

    def _qkv(self, x, context, rot):
        """q, k, v as `[B, heads, tokens, head_dim]`."""
        src = x if context is None else context
        b, s, _ = x.shape
        n = self.num_heads
        q = self.norm_q(self.q(x)).view(b, s, n, -1)
        k = self.norm_k(self.k(src)).view(b, src.shape[1], n, -1)
        v = self.v(src).view(b, src.shape[1], n, -1)
        if rot is not None:
            q, k = apply_rope(q, rot), apply_rope(k, rot)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def forward(self, x, context=None, rot=None):
        out = F.scaled_dot_product_attention(*self._qkv(x, context, rot))
        return self.o(out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1))

    def weights(self, x, context=None, rot=None) -> torch.Tensor:
        """The softmax weights `[B, heads, queries, keys]` that `forward` applies (diagnostics: which
        text tokens a video token reads)."""
        q, k, _ = self._qkv(x, context, rot)
        return torch.softmax((q @ k.transpose(-1, -2)).float() * q.shape[-1] ** -0.5, -1)


class WanBlock(nn.Module):
    def __init__(self, cfg: WanConfig):
        super().__init__()
        dim, eps = cfg.dim, cfg.eps
        self.norm1 = LayerNorm(dim, eps, elementwise_affine=False)
        self.self_attn = Attention(dim, cfg.num_heads, eps)
        self.norm3 = LayerNorm(dim, eps, elementwise_affine=True)  # Wan 2.1 T2V: cross_attn_norm
        self.cross_attn = Attention(dim, cfg.num_heads, eps)
        self.norm2 = LayerNorm(dim, eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(dim, cfg.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def forward(self, x, e, context, rot):
        # e: [B, 6, dim] fp32; modulation math in fp32 as in Wan
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.modulation.float() + e).chunk(6, dim=1)
        y = self.self_attn((self.norm1(x).float() * (1 + scale1) + shift1).type_as(x), rot=rot)
        x = (x.float() + y.float() * gate1).type_as(x)
        x = x + self.cross_attn(self.norm3(x), context=context)
        y = self.ffn((self.norm2(x).float() * (1 + scale2) + shift2).type_as(x))
        return (x.float() + y.float() * gate2).type_as(x)


class WanHead(nn.Module):
    def __init__(self, cfg: WanConfig):
        super().__init__()
        self.norm = LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.head = nn.Linear(cfg.dim, cfg.out_dim * math.prod(cfg.patch_size))
        self.modulation = nn.Parameter(torch.randn(1, 2, cfg.dim) / cfg.dim**0.5)

    def forward(self, x, e):
        shift, scale = (self.modulation.float() + e[:, None]).chunk(2, dim=1)
        return self.head((self.norm(x).float() * (1 + scale) + shift).type_as(x))


class WanModel(nn.Module):
    """Wan 2.1 T2V DiT. `forward(x, t, context) -> velocity` with x's shape."""

    def __init__(self, cfg: WanConfig):
        super().__init__()
        self.cfg = cfg.validate()
        dim = cfg.dim
        self.patch_embedding = nn.Conv3d(cfg.in_dim, dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(cfg.text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim))
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim * 6))
        self.blocks = nn.ModuleList([WanBlock(cfg) for _ in range(cfg.num_layers)])
        self.head = WanHead(cfg)
        self.gradient_checkpointing = False

    @property
    def dtype(self) -> torch.dtype:
        return self.patch_embedding.weight.dtype

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        b, _, f, h, w = x.shape
        pt, ph, pw = cfg.patch_size
        if f % pt or h % ph or w % pw:
            raise SGMDError(f"latent size {f}x{h}x{w} is not divisible by the patch size {cfg.patch_size}")
        grid = (f // pt, h // ph, w // pw)
        tokens = self.patch_embedding(x.to(self.dtype)).flatten(2).transpose(1, 2)  # [B, S, dim]
        # RoPE table built per call (not a buffer: Module.to(dtype) would cast a complex buffer to real)
        rot = rope_grid(rope_frequencies(HEAD_DIM, max_len=max(grid)), grid).to(x.device)
        t = t.reshape(-1).expand(b) if t.numel() == 1 else t.reshape(b)
        with torch.autocast(x.device.type, enabled=False):
            e = self.time_embedding(sinusoidal_embedding(t, cfg.freq_dim).to(self.time_embedding[0].weight.dtype)).float()
            e6 = self.time_projection(e.to(self.time_projection[1].weight.dtype)).float().unflatten(1, (6, cfg.dim))
        ctx = self.text_embedding(context.to(self.dtype))
        for block in self.blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                tokens = checkpoint(block, tokens, e6, ctx, rot, use_reentrant=False)
            else:
                tokens = block(tokens, e6, ctx, rot)
        out = self.head(tokens, e)
        return self.unpatchify(out, grid).to(x.dtype)

    def unpatchify(self, x: torch.Tensor, grid: tuple) -> torch.Tensor:
        b = x.shape[0]
        pt, ph, pw = self.cfg.patch_size
        c = self.cfg.out_dim
        x = x.view(b, *grid, pt, ph, pw, c)
        x = torch.einsum("bfhwpqrc->bcfphqwr", x)
        return x.reshape(b, c, grid[0] * pt, grid[1] * ph, grid[2] * pw)
