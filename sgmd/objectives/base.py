"""The objective interface. The training loop is objective-agnostic: an objective says how many
fake-score updates it wants per generator update and computes its two losses from the roles.
SGMD and DMD2 are siblings behind this interface; adding a method adds a file."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch


class Roles(Protocol):
    """The three networks, each `f(x, sigma[B], context) -> velocity`.

    `teacher` is frozen and called under no_grad by objectives; `fake` is the fake score;
    `generator` is the few-step student. With LoRA they share one base (adapters switch)."""

    def generator(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor) -> torch.Tensor: ...
    def fake(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor) -> torch.Tensor: ...
    def teacher(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor) -> torch.Tensor: ...


@dataclass
class Batch:
    """One batch of conditioning plus the randomness an objective draws from."""

    context: torch.Tensor  # [B, L, text_dim]
    uncond: torch.Tensor  # [B, L, text_dim] (empty-prompt embedding) for teacher CFG
    latent_shape: tuple  # (C, F, H, W)
    generator: torch.Generator  # CPU generator: noise, exit index, score sigma
    prompts: list = field(default_factory=list)


@dataclass
class LossOutput:
    loss: torch.Tensor
    logs: dict = field(default_factory=dict)  # floats for metrics.jsonl


class Objective(Protocol):
    name: str
    fake_updates_per_generator_update: int

    def generator_loss(self, roles: Roles, batch: Batch) -> LossOutput: ...
    def fake_loss(self, roles: Roles, batch: Batch) -> LossOutput: ...
