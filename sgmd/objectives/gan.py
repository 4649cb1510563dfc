"""Optional DMD2 GAN term (method doc s5; off by default, the video DMD trainers drop it). A plug-in
of either objective: SGMD's generator phase already calls the fake with grad through its input.

A small classifier head reads the fake network's intermediate tokens (one transformer block's
output, captured by a forward hook, on its frames x height x width grid) on noised videos. The fake
side trains head + fake score to tell noised real videos from noised generator samples; the
generator gets the non-saturating loss through the fake network's input. Needs real videos: the
training loop supplies `real_latents(batch) -> [B, C, F, H, W]` clean normalised latents. The head's
parameters are trained with the fake score: add `GANTerm.parameters()` to the fake optimizer."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SGMDError
from .base import Batch, Roles
from .common import noised


def gan_generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss `softplus(-D(fake))`."""
    return F.softplus(-logits_fake).mean()


def gan_discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """`softplus(-D(real)) + softplus(D(fake))` (logistic loss)."""
    return F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean()


class GANHead(nn.Module):
    """Tokens [B, S, dim] on their (frames, height, width) grid -> one logit per sample: two strided 3D
    convolutions over the grid, averaged, then linear (DMD2's head is strided convolutions too). It
    must mix neighbouring tokens across frames: a per-token MLP averaged over tokens, tried first,
    could not tell a real 'quickly' clip from a slow or still one even at noise 0.1 (57-68% after 300
    Adam steps on the teacher's tokens; this head 100% at noise <= 0.5, 90% at 0.85; docs/tiny-model.md)."""

    def __init__(self, dim: int, hidden: int = 64):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.conv1 = nn.Conv3d(dim, hidden, kernel_size=3, stride=2, padding=1)
        self.conv2 = nn.Conv3d(hidden, hidden, kernel_size=3, stride=2, padding=1)
        self.out = nn.Linear(hidden, 1)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        b, s, dim = tokens.shape
        if s != grid[0] * grid[1] * grid[2]:
            raise SGMDError(f"GAN head: {s} tokens do not fill a {grid[0]}x{grid[1]}x{grid[2]} grid")
        x = self.norm(tokens.float()).transpose(1, 2).reshape(b, dim, *grid)  # tokens are (f, h, w) row-major
        x = F.silu(self.conv2(F.silu(self.conv1(x))))
        return self.out(x.mean(dim=(2, 3, 4))).squeeze(-1)


class TokenTap:
    """Forward hooks that keep one block's output tokens and the token grid (the patch embedding's
    output size), only while armed (`with tap:`), so the shared base's generator and teacher passes
    are ignored."""

    def __init__(self, block: nn.Module, patch_embedding: nn.Module):
        self.tokens: torch.Tensor | None = None
        self.grid: tuple[int, int, int] | None = None
        self.armed = False
        self.handles = [block.register_forward_hook(self._keep_tokens),
                        patch_embedding.register_forward_hook(self._keep_grid)]

    def _keep_tokens(self, module, inputs, output):
        if self.armed:
            self.tokens = output

    def _keep_grid(self, module, inputs, output):
        if self.armed:
            self.grid = tuple(output.shape[2:])

    def __enter__(self):
        self.armed, self.tokens, self.grid = True, None, None
        return self

    def __exit__(self, *exc):
        self.armed = False

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


@contextmanager
def _frozen(module: nn.Module):
    """Build graphs without the module's parameters as leaves (the generator phase must not leave
    gradients in the discriminator)."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)


@dataclass
class GANTerm:
    model: nn.Module = field(metadata={"help": "the fake score's WanModel (with LoRA: the shared base)"})
    real_latents: Callable[[Batch], torch.Tensor] = field(metadata={"help": "batch -> clean real latents [B, C, F, H, W]"})
    block_index: int | None = field(default=None, metadata={"help": "block whose output the head reads (default: the middle one)"})
    generator_weight: float = field(default=4e-3, metadata={"help": "weight of the generator's GAN loss (DMD2: 3e-3 to 5e-3)"})
    discriminator_weight: float = field(default=1e-2, metadata={"help": "weight of the discriminator loss (fake loss)"})
    hidden: int = field(default=64, metadata={"help": "channels of the head's convolutions"})

    def __post_init__(self):
        if not (self.generator_weight >= 0 and self.discriminator_weight >= 0):
            raise SGMDError(f"GAN weights must be >= 0; got generator {self.generator_weight}, "
                            f"discriminator {self.discriminator_weight}")
        blocks = getattr(self.model, "blocks", None)
        if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
            raise SGMDError("the GAN head needs a Wan model with transformer blocks")
        i = len(blocks) // 2 if self.block_index is None else self.block_index
        if not -len(blocks) <= i < len(blocks):
            raise SGMDError(f"GAN block_index {i} is outside the model's {len(blocks)} blocks")
        p = next(self.model.parameters())
        self.head = GANHead(self.model.cfg.dim, self.hidden).to(p.device)
        self.tap = TokenTap(blocks[i], self.model.patch_embedding)

    def parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

    def logits(self, train_head: bool) -> torch.Tensor:
        """Head logits on the tokens the tap caught during the last `with term.tap:` fake call."""
        if self.tap.tokens is None:
            raise SGMDError("the GAN head saw no tokens: is GANTerm.model the network the fake role runs?")
        if train_head:
            return self.head(self.tap.tokens, self.tap.grid)
        with _frozen(self.head):
            return self.head(self.tap.tokens, self.tap.grid)

    def generator_term(self, logits_fake: torch.Tensor) -> torch.Tensor:
        return self.generator_weight * gan_generator_loss(logits_fake)

    def discriminator_term(self, roles: Roles, batch: Batch, logits_fake: torch.Tensor, sigma: torch.Tensor,
                           eps: torch.Tensor) -> torch.Tensor:
        """Real videos noised at (sigma, eps) through the fake network and head, vs `logits_fake`."""
        real = self.real_latents(batch).to(batch.context.device)
        if real.shape != eps.shape:
            raise SGMDError(f"real latents have shape {list(real.shape)}, generator samples {list(eps.shape)}; they must match")
        with self.tap:
            roles.fake(noised(real, eps, sigma), sigma, batch.context)
        logits_real = self.logits(train_head=True)
        return self.discriminator_weight * gan_discriminator_loss(logits_real, logits_fake)

    def passes(self, fake_updates: int) -> dict:
        """Extra batch-B passes per iteration: the generator-phase fake call gains grad (counted in
        dmd2), and each fake update adds one fake pass on real videos."""
        return {"fake_forward_grad": float(fake_updates), "backward_fake": float(fake_updates)}
