"""Toy text encoder: deterministic word embeddings at Wan's text width, no learned weights.

Each word gets a fixed Gaussian vector seeded from its SHA-256 (so unknown words work too, and the
same word always maps to the same vector on every machine). Sequences are padded with zeros to
`MAX_TOKENS`; the empty prompt is all zeros and serves as the unconditional (CFG) input."""
from __future__ import annotations

import hashlib
import re

import torch

TEXT_DIM = 4096  # Wan 2.1's umT5 width
MAX_TOKENS = 16


def tokenize(prompt: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", prompt.lower())[:MAX_TOKENS]


def word_vector(word: str, dim: int = TEXT_DIM) -> torch.Tensor:
    seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little") & ((1 << 63) - 1)
    return torch.randn(dim, generator=torch.Generator().manual_seed(seed))


_CACHE: dict[str, torch.Tensor] = {}


def encode_text(prompts: list[str] | str, max_tokens: int = MAX_TOKENS) -> torch.Tensor:
    """prompts -> `[N, max_tokens, 4096]` float32."""
    if isinstance(prompts, str):
        prompts = [prompts]
    out = torch.zeros(len(prompts), max_tokens, TEXT_DIM)
    for i, p in enumerate(prompts):
        for j, w in enumerate(tokenize(p)[:max_tokens]):
            if w not in _CACHE:
                _CACHE[w] = word_vector(w)
            out[i, j] = _CACHE[w]
    return out
