"""Exponential moving average of the generator's trainable tensors (on by default, 0.99 from iteration 200: the
export and the samples use it; `--ema none` turns it off)."""
from __future__ import annotations

from contextlib import contextmanager

import torch

from sgmd.errors import SGMDError


class EMA:
    """Shadow copies of `params`; before `start` they follow the weights exactly."""

    def __init__(self, params: list[torch.nn.Parameter], decay: float, start: int):
        self.params, self.decay, self.start = params, decay, start
        self.shadow = [p.detach().clone().float() for p in params]

    @torch.no_grad()
    def update(self, step: int) -> None:
        decay = 0.0 if step < self.start else self.decay
        for s, p in zip(self.shadow, self.params):
            s.lerp_(p.detach().float(), 1 - decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {str(i): s for i, s in enumerate(self.shadow)}

    def load_state_dict(self, tensors: dict) -> None:
        if len(tensors) != len(self.shadow) or any(tensors[str(i)].shape != s.shape for i, s in enumerate(self.shadow)):
            raise SGMDError("the checkpoint's EMA does not match this run's generator (different LoRA settings?)")
        self.shadow = [tensors[str(i)].float().clone().to(s.device) for i, s in enumerate(self.shadow)]

    @contextmanager
    def applied(self):
        """Temporarily put the EMA weights into the generator (samples, export)."""
        saved = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, s in zip(self.params, self.shadow):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, s in zip(self.params, saved):
                    p.copy_(s)
