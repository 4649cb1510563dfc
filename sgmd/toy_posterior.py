"""The exact denoiser of the toy task: `E[x0 | x_s, prompt]`, computed from the task's own law.

Flow matching's minimiser is the velocity `(x_s - E[x0 | x_s, prompt]) / s`. The toy task's law is
known (`sgmd.toyvideo`), so that minimiser can be computed, and a teacher's distance to it measures
how much of what is learnable it has learned, per noise level, without sampling and without the
noise of a one-clip loss (`training/train_teacher.py --probe-every`).

How: a bank of clips on a grid of start points (`GRID_PX` apart) for every shape, direction and
speed, each with its prior weight under the training law (start uniform on its range, direction
and speed uniform when the prompt leaves them out, "random speed" includes standing still).
Because the codec is affine, `x0 = K0 + 2 m (B c)` with `m` the shape's coverage, `c` the colour
and `K0` the encoding of a black clip, so every Gaussian log-likelihood is one dot product with the
coverage, and the posterior mean is `K0 + 2 sum_c (B c) E[m, colour c | x_s]`. Codec v3 adds
`2 (B_D c) (G m)` with G the time-derivative operator times its amplitude (`codec.time_derivative_matrix`):
still linear in the coverage, so each likelihood gains `<G^T (B_D c . r), m>` and `|B_D c|^2 |G m|^2`
(B c and B_D c are orthogonal: no cross term), and the mean gains `2 (B_D c) G E[m]`.

The grid stands in for the continuous start point while the posterior is wider than a grid step:
at high noise (sigma >= ~0.9 here), where the layout is decided; lower, the posterior is sharper
than the grid and the result is only approximate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import codec, toyvideo

GRID_PX = 0.2  # start-point spacing of the bank (pixels)

_COMBOS = [("still", None)] + [(v, d) for v in toyvideo.NAMED_SPEEDS for d in toyvideo.DIRECTIONS]


def combo_prior(direction: str | None, speed: str | None, unconditional: bool = False) -> dict:
    """P(speed, direction | prompt) under the training law (`toyvideo.random_prompt`,
    `clip_for_prompt`); ("still", None) stands for every standing clip. Unconditional = the empty
    prompt of CFG dropout: the mixture over training prompts (direction and speed each left out
    with probability `toyvideo.LEAVE_OUT`), so P(still) = LEAVE_OUT / 3."""
    dirs = list(toyvideo.DIRECTIONS)
    if unconditional:
        still = toyvideo.LEAVE_OUT / 3
        return {("still", None): still, **{(v, d): (1 - still) / 2 / len(dirs) for v in toyvideo.NAMED_SPEEDS for d in dirs}}
    speeds = [speed] if speed else ["still", *toyvideo.NAMED_SPEEDS]
    ds = [direction] if direction else dirs
    out: dict = {}
    for v in speeds:
        for d in ds:
            key = ("still", None) if v == "still" else (v, d)
            out[key] = out.get(key, 0.0) + 1.0 / (len(speeds) * len(ds))
    return out


def _axis_points(lo: float, hi: float) -> list[float]:
    n = max(1, math.ceil((hi - lo) / GRID_PX - 1e-9))
    return [lo + (k + 0.5) * (hi - lo) / n for k in range(n)]


def _start_range(shape: str, speed: str, d: float) -> tuple[float, float]:
    """The interval `toyvideo.clip_for_prompt` draws a start coordinate from."""
    travel = toyvideo.SPEEDS[speed] * (toyvideo.FRAMES - 1)
    r = toyvideo.half_extent(shape) + 0.5
    lo, hi = r, toyvideo.SIZE - r
    return (lo, hi - d * travel) if d >= 0 else (lo - d * travel, hi)


@dataclass
class Bank:
    """Coverage masks `[K, F*H*W]` of the grid clips and, per clip, its shape, combo and log prior
    weight within its combo (uniform over the combo's grid)."""

    masks: torch.Tensor
    sqnorm: torch.Tensor
    shape: torch.Tensor  # index into toyvideo.SHAPES
    combo: torch.Tensor  # index into _COMBOS
    log_cell: torch.Tensor
    blocks: dict  # (shape index, combo index) -> its rows, a slice (the bank is ordered that way)
    sqnorm_d: torch.Tensor | None = None  # |G m|^2 per clip (codec v3), computed on first use

    def derivative_sqnorm(self, g: torch.Tensor) -> torch.Tensor:
        """`|G m|^2` per clip for the codec's time operator `g` `[F, F]` (there is one), computed once."""
        if self.sqnorm_d is None:
            f = g.shape[0]
            self.sqnorm_d = torch.cat([torch.einsum("tu,kuy->kty", g.float(), m.view(len(m), f, -1)).pow(2).sum((1, 2))
                                       for m in self.masks.split(1024)])
        return self.sqnorm_d


_BANK: Bank | None = None


def _runs(blocks: dict, keys: list) -> list[slice]:
    """The bank rows of these (shape, combo) blocks, adjacent blocks merged into one slice."""
    out: list[slice] = []
    for rows in sorted((blocks[k] for k in keys), key=lambda r: r.start):
        if out and out[-1].stop == rows.start:
            out[-1] = slice(out[-1].start, rows.stop)
        else:
            out.append(rows)
    return out


def bank() -> Bank:
    """Built once per process (about 17k clips, ~140 MB, a few seconds)."""
    global _BANK
    if _BANK is None:
        clips, shape_ix, combo_ix, log_cell, blocks = [], [], [], [], {}
        for si, shape in enumerate(toyvideo.SHAPES):
            for ci, (speed, direction) in enumerate(_COMBOS):
                dx, dy = toyvideo.DIRECTIONS[direction] if direction else (0.0, 0.0)
                xs = _axis_points(*_start_range(shape, speed, dx))
                ys = _axis_points(*_start_range(shape, speed, dy))
                blocks[(si, ci)] = slice(len(clips), len(clips) + len(xs) * len(ys))
                for y in ys:
                    for x in xs:
                        clips.append(toyvideo.Clip("white", shape, direction or "left", speed, x, y))
                        shape_ix.append(si)
                        combo_ix.append(ci)
                        log_cell.append(-math.log(len(xs) * len(ys)))
        masks = torch.cat([toyvideo.render(clips[i:i + 1024])[..., 0].reshape(-1, toyvideo.FRAMES * toyvideo.SIZE ** 2)
                           for i in range(0, len(clips), 1024)])
        _BANK = Bank(masks, masks.pow(2).sum(1), torch.tensor(shape_ix), torch.tensor(combo_ix), torch.tensor(log_cell), blocks)
    return _BANK


@torch.no_grad()
def posterior_mean(x_s: torch.Tensor, sigma: torch.Tensor, prompts: list[str],
                   sharpen: float | list[float] = 1.0, codec_id: str = codec.CODEC_V2) -> torch.Tensor:
    """`E[x0 | x_s, prompt]` for normalised toy latents `x_s` `[N, 16, F, H, W]` at noise levels
    `sigma` `[N]` (in (0, 1]); an empty prompt is the unconditional law. Colour and shape not named
    by a prompt are uniform over the task's values.

    `sharpen` k > 1 multiplies the Gaussian log-likelihood by k (the prior is kept): the posterior
    mean as if the state were less noisy. Exactly, it is the exact mean at `c x_s` and noise level
    `s' = s / (s + sqrt(k) (1 - s))`, `c = (1 - s') / (1 - s)` (tested). A training target
    (`train_teacher.py --exact-sharpen`), not the task's law. A list gives each row its own k.
    `codec_id`: the codec the latents are in (`sgmd.codec`)."""
    b = bank()
    n, _, f, h, w = x_s.shape
    if (f, h, w) != (toyvideo.FRAMES, toyvideo.SIZE, toyvideo.SIZE):
        raise ValueError(f"toy posterior needs latents of {toyvideo.FRAMES}x{toyvideo.SIZE}x{toyvideo.SIZE}; got {f}x{h}x{w}")
    k0 = codec.encode(torch.zeros(1, f, h, w, 3), codec_id)[0].double()  # a black clip: -B 1 + position code
    colours = {name: codec.BASIS.double() @ torch.tensor(rgb, dtype=torch.float64) for name, rgb in toyvideo.COLOURS.items()}
    dbasis = codec.derivative_basis(codec_id)
    if dbasis is not None:
        g_op = codec.DERIVATIVE_AMPLITUDE * codec.time_derivative_matrix(f)  # x0 = K0 + 2 (B c) m + 2 (B_D c) (G m)
        dcolours = {name: dbasis.double() @ torch.tensor(rgb, dtype=torch.float64) for name, rgb in toyvideo.COLOURS.items()}
        sq_d = b.derivative_sqnorm(g_op)
    out = torch.empty(x_s.shape, dtype=torch.float64)
    ks = [float(sharpen)] * n if isinstance(sharpen, (int, float)) else [float(k) for k in sharpen]
    for i in range(n):
        s = float(sigma[i])
        p = toyvideo.Prompt.parse(prompts[i])
        prior = combo_prior(p.direction, p.speed, unconditional=not prompts[i].strip())
        shapes = [toyvideo.SHAPES.index(p.shape)] if p.shape else list(range(len(toyvideo.SHAPES)))
        log_combo = torch.full((len(_COMBOS),), -math.inf, dtype=torch.float64)
        for key, pr in prior.items():
            log_combo[_COMBOS.index(key)] = math.log(pr / len(shapes))
        names = [p.colour] if p.colour else list(toyvideo.COLOURS)
        a = torch.stack([colours[name] for name in names])  # [C, 16]
        r = x_s[i].double() - (1 - s) * k0  # [16, F, H, W]
        rho = torch.einsum("kc,cfhw->fhwk", a, r)  # [F, H, W, C]
        if dbasis is not None:
            a_d = torch.stack([dcolours[name] for name in names])
            rho = rho + torch.einsum("tu,kc,cthw->uhwk", g_op, a_d, r)  # G^T (B_D c . r)
        rho = rho.reshape(-1, len(names)).float()  # [F*H*W, C]
        # |x0 - K0|^2 per colour and clip: |B c|^2 |m|^2 (+ |B_D c|^2 |G m|^2), [C, rows]
        sq = lambda rows: (a * a).sum(1, keepdim=True) * b.sqnorm[rows].double() + (  # noqa: E731
            0 if dbasis is None else (a_d * a_d).sum(1, keepdim=True) * sq_d[rows].double())
        # only the bank's rows the prompt allows, as contiguous views (a fully specified prompt: one
        # shape and one combo in nine); the softmax runs over all of them together
        runs = _runs(b.blocks, [(si, ci) for si in shapes for ci in range(len(_COMBOS)) if log_combo[ci] > -math.inf])
        logits = torch.cat([
            log_combo[b.combo[rows]] + b.log_cell[rows].double()
            + ks[i] * (4 * (1 - s) * (b.masks[rows] @ rho).double().T
                         - 4 * (1 - s) ** 2 * sq(rows)) / (2 * s * s)
            for rows in runs], dim=1) - math.log(len(names))  # [C, K allowed]
        wts = torch.softmax(logits.reshape(-1), 0).reshape(len(names), -1).float()  # over colours and clips
        parts = wts.split([rows.stop - rows.start for rows in runs], dim=1)
        m = sum(w @ b.masks[rows] for w, rows in zip(parts, runs)).double().reshape(len(names), f, h, w)
        out[i] = k0 + 2 * torch.einsum("kc,kfhw->cfhw", a, m)
        if dbasis is not None:
            out[i] += 2 * torch.einsum("kc,tu,kuhw->cthw", a_d, g_op, m)
    return out.to(x_s.dtype)


def velocity(x_s: torch.Tensor, sigma: torch.Tensor, prompts: list[str],
             sharpen: float | list[float] = 1.0, codec_id: str = codec.CODEC_V2) -> torch.Tensor:
    """`E[eps - x0 | x_s, prompt] = (x_s - E[x0 | x_s, prompt]) / sigma`: the minimiser of flow
    matching, i.e. the velocity of a perfectly trained teacher (`sharpen`, `codec_id`: see `posterior_mean`)."""
    return (x_s - posterior_mean(x_s, sigma, prompts, sharpen, codec_id)) / sigma.view(-1, 1, 1, 1, 1)
