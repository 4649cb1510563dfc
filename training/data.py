"""Prompt sources: where the training conditioning comes from.

A source draws `n` prompts with the run's CPU generator and returns their text embeddings; it
also gives the unconditional (empty-prompt) embedding for teacher CFG and a fixed list of prompts
for samples. Three kinds: the toy task (default), a text file (toy encoder), precomputed
embeddings (a safetensors file)."""
from __future__ import annotations

import json
import os

import torch

from sgmd import text, toyvideo
from sgmd.errors import SGMDError
from sgmd.weights import read_safetensors


class PromptSource:
    """Text prompts encoded on demand with the toy encoder; `draw` picks them uniformly with the
    run's generator (repeated lines weigh more)."""

    def __init__(self, prompts: list[str], sample_prompts: list[str] | None = None):
        self.prompts = prompts
        self.sample_prompts = sample_prompts or prompts
        self.uncond_row = text.encode_text([""])  # the empty prompt: all zeros

    def encode(self, texts: list[str]) -> torch.Tensor:
        return text.encode_text(texts)

    def uncond(self, n: int) -> torch.Tensor:
        u = self.uncond_row
        return u.expand(n, *u.shape[1:]).clone()

    def draw(self, n: int, generator: torch.Generator) -> tuple[list[str], torch.Tensor, torch.Tensor]:
        """n prompts -> (texts, context [n, L, D], uncond [n, L, D])."""
        idx = torch.randint(0, len(self.prompts), (n,), generator=generator).tolist()
        texts = [self.prompts[i] for i in idx]
        return texts, self.encode(texts), self.uncond(n)

    def fixed(self, n: int) -> tuple[list[str], torch.Tensor]:
        """The first n sample prompts (cycling if fewer) and their embeddings, for samples."""
        texts = [self.sample_prompts[i % len(self.sample_prompts)] for i in range(n)]
        return texts, self.encode(texts)


class ToyPromptSource(PromptSource):
    """The toy task's training prompts, drawn as the teacher saw them (direction and speed are
    sometimes left out); samples use the held-out prompts."""

    def __init__(self):
        self.train_set = set(toyvideo.training_prompts())
        super().__init__(sorted(p.text for p in self.train_set), [p.text for p in toyvideo.heldout_prompts()])

    def texts(self, n: int, generator: torch.Generator) -> list[str]:
        """n training prompts drawn as the teacher saw them (attributes sometimes left out)."""
        return [toyvideo.random_prompt(generator, self.train_set).text for _ in range(n)]

    def draw(self, n, generator):
        texts = self.texts(n, generator)
        return texts, self.encode(texts), self.uncond(n)


class EmbeddingSource(PromptSource):
    """Precomputed embeddings: rows of `context`, named by the metadata prompts."""

    def __init__(self, names: list[str], context: torch.Tensor, uncond: torch.Tensor):
        super().__init__(names)
        self.context, self.uncond_all = context, uncond
        self._row = {name: i for i, name in enumerate(names)}
        self.uncond_row = uncond[:1]

    def encode(self, texts):
        return self.context[[self._row[t] for t in texts]]

    def draw(self, n, generator):
        idx = torch.randint(0, len(self.prompts), (n,), generator=generator)
        uncond = self.uncond(n) if self.uncond_all.shape[0] == 1 else self.uncond_all[idx]
        return [self.prompts[i] for i in idx.tolist()], self.context[idx], uncond


def text_file_source(path: str) -> PromptSource:
    if not os.path.isfile(path):
        raise SGMDError(f"prompt file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f]
    except UnicodeDecodeError:
        raise SGMDError(f"prompt file {path} is not UTF-8 text (one prompt per line)") from None
    prompts = [line for line in lines if line]
    if not prompts:
        raise SGMDError(f"prompt file {path} has no prompts (write one prompt per line)")
    return PromptSource(prompts, sample_prompts=list(dict.fromkeys(prompts)))


def embeddings_source(path: str) -> PromptSource:
    tensors, meta = read_safetensors(path)
    ctx = tensors.get("context")
    if ctx is None or ctx.ndim != 3 or ctx.shape[0] == 0:
        raise SGMDError(f"{path} needs a tensor 'context' of shape [N, L, 4096] with N >= 1 (found {_shapes(tensors)})")
    ctx = ctx.float()
    uncond = tensors.get("uncond")
    if uncond is None:
        uncond = torch.zeros(1, *ctx.shape[1:])
    elif uncond.ndim == 2:
        uncond = uncond[None]
    if uncond.ndim != 3 or uncond.shape[1:] != ctx.shape[1:] or uncond.shape[0] not in (1, ctx.shape[0]):
        raise SGMDError(f"{path}: 'uncond' must be [1 or N, L, D] like 'context' {list(ctx.shape)}; got {list(uncond.shape)}")
    names = [f"embedding {i}" for i in range(ctx.shape[0])]
    if "prompts" in meta:
        try:
            given = json.loads(meta["prompts"])
        except ValueError:
            given = None
        if not (isinstance(given, list) and len(given) == ctx.shape[0]):
            raise SGMDError(f"{path}: metadata 'prompts' must be a JSON list of {ctx.shape[0]} texts")
        names = [str(p) for p in given]
    seen: dict[str, int] = {}
    unique = []  # rows are looked up by name: make names unique
    for i, n in enumerate(names):
        unique.append(n if n not in seen else f"{n} #{i}")
        seen.setdefault(n, i)
    return EmbeddingSource(unique, ctx, uncond.float())


def make_prompt_source(path: str) -> PromptSource:
    """'' -> toy task; *.safetensors -> embeddings; anything else -> text file."""
    if not path:
        return ToyPromptSource()
    if path.endswith(".safetensors"):
        return embeddings_source(path)
    return text_file_source(path)


def _shapes(tensors: dict) -> str:
    return ", ".join(f"{k} {list(v.shape)}" for k, v in list(tensors.items())[:4]) or "no tensors"
