"""Optional DMD2 GAN term (method doc s5; off by default, the video DMD trainers drop it). A plug-in
of either objective: SGMD's generator phase already calls the fake with grad through its input.

A small classifier head reads the fake network's intermediate tokens (one transformer block's
output, captured by a forward hook) on noised videos. The fake side trains head + fake score to
tell noised real videos from noised generator samples; the generator gets the non-saturating loss
through the fake network's input. Needs real videos: the training loop supplies
`real_latents(batch) -> [B, C, F, H, W]` clean normalised latents. The head's parameters are
trained with the fake score: add `GANTerm.parameters()` to the fake optimizer."""
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
    """Tokens [B, S, dim] -> one logit per sample: per-token MLP, averaged over tokens."""

    def __init__(self, dim: int, hidden: int = 256):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.fc1(self.norm(tokens.float())))
        return self.fc2(h).mean(dim=(1, 2))


class TokenTap:
    """Forward hook on one block that keeps its output, only while armed (`with tap:`), so the
    shared base's generator and teacher passes are ignored."""

    def __init__(self, block: nn.Module):
        self.tokens: torch.Tensor | None = None
        self.armed = False
        self.handle = block.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        if self.armed:
            self.tokens = output

    def __enter__(self):
        self.armed, self.tokens = True, None
        return self

    def __exit__(self, *exc):
        self.armed = False

    def remove(self) -> None:
        self.handle.remove()


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
    hidden: int = field(default=256, metadata={"help": "width of the head's hidden layer"})

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
        self.tap = TokenTap(blocks[i])

    def parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

    def logits(self, train_head: bool) -> torch.Tensor:
        """Head logits on the tokens the tap caught during the last `with term.tap:` fake call."""
        if self.tap.tokens is None:
            raise SGMDError("the GAN head saw no tokens: is GANTerm.model the network the fake role runs?")
        if train_head:
            return self.head(self.tap.tokens)
        with _frozen(self.head):
            return self.head(self.tap.tokens)

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
