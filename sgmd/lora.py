"""Multi-adapter LoRA on `nn.Linear` over ONE shared frozen base, with ComfyUI-native export/import.

The generator and the fake score are two named adapters on the teacher's weights; "no adapter
active" is the teacher itself, so the three roles cost one copy of the base.

- Base parameter names do not change (`blocks.0.self_attn.q.weight`); adapter parameters live
  under extra keys (`blocks.0.self_attn.q.lora_down.generator`). `base_state_dict` returns exactly
  the Wan keys; a plain Wan state dict loads with `strict=False`.
- File format (what ComfyUI's LoRA loader reads for Wan): `diffusion_model.<module>.lora_down.weight`
  [r, in], `.lora_up.weight` [out, r], `.alpha` (0-dim); the weight delta is `alpha/r * up @ down`.
- Gradient checkpointing is safe: each transformer block is re-run in backward with the adapter
  that was active when it first ran (see `_AdapterBoundBlocks`).
"""
from __future__ import annotations

import math
import re
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .errors import SGMDError
from .schedules import sigma_to_timestep
from .wan import COMFY_PREFIX

DEFAULT_TARGETS = ("q", "k", "v", "o", "ffn.0", "ffn.2")
FILE_PREFIX = "diffusion_model."
ADAPTER_KEYS = ("lora_down", "lora_up")  # ParameterDict names inside a wrapped layer
_KEY_SUFFIXES = {  # file key suffix -> role; lora_A/lora_B are the PEFT / diffusers spellings
    ".lora_down.weight": "down",
    ".lora_A.weight": "down",
    ".lora_up.weight": "up",
    ".lora_B.weight": "up",
    ".alpha": "alpha",
}
_BLOCK_PATH = re.compile(r"^blocks\.\d+\.(.+)$")
_ADAPTER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


_MERGE = True  # see `merging`


class _LoraState:
    """Which adapter the whole model runs with; one object shared by every wrapped layer."""

    def __init__(self):
        self.active: str | None = None
        self.adapters: list[str] = []


def merge_pays(in_features: int, out_features: int, rank: int, tokens: int, param_grads: bool) -> bool:
    """Whether one call is cheaper as `x @ (W + s up down)^T` than as `x W^T + s (x down^T) up^T`,
    counting multiply-adds. Unmerged, the adapter adds `r (i + o)` per token forward and about twice
    that backward (its input gradient and its two weight gradients); merged, the call pays `i o r`
    once to build the weight and, when the adapter's weights need gradients, a full `i o` weight
    gradient per token (dW = dy^T x, then down and up's from it). So without weight gradients
    (rollouts, the frozen fake in the generator phase) merging pays whenever tokens > i o / (i + o);
    with them only for ranks near the width (4 r (i + o) > i o: the tiny teacher's 64 of 128 does,
    Wan 1.3B's 64 of 1536 does not)."""
    if tokens * (in_features + out_features) <= in_features * out_features:
        return False
    return not param_grads or 4 * rank * (in_features + out_features) > in_features * out_features


class LoRALinear(nn.Linear):
    """`nn.Linear` plus any number of named low-rank adapters; at most one is active at a time.

    Takes over the base layer's own `weight` / `bias` Parameters, so their names and the objects an
    optimizer or a tied model holds stay the same."""

    def __init__(self, base: nn.Linear, state: _LoraState):
        nn.Module.__init__(self)  # skip nn.Linear's allocation: the base tensors are reused
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.register_parameter("bias", base.bias)
        self.lora_down = nn.ParameterDict()
        self.lora_up = nn.ParameterDict()
        self.lora_alpha: dict[str, float] = {}
        self.lora_state = state

    def add_adapter(self, name: str, rank: int, alpha: float, generator: torch.Generator | None = None,
                    dtype: torch.dtype | None = None) -> None:
        """PEFT's init: down kaiming-uniform(a=sqrt 5) (nn.Linear's default), up zeros, so a fresh
        adapter leaves the output unchanged."""
        dtype = dtype or self.weight.dtype
        down = torch.empty(rank, self.in_features, dtype=torch.float32)  # init on CPU: CPU generator
        nn.init.kaiming_uniform_(down, a=math.sqrt(5), generator=generator)
        self.set_adapter(name, down, torch.zeros(self.out_features, rank), alpha, dtype)

    def set_adapter(self, name: str, down: torch.Tensor, up: torch.Tensor, alpha: float,
                    dtype: torch.dtype | None = None) -> None:
        """Set adapter values; copies in place when the rank is unchanged so optimizers keep
        pointing at the same Parameters (resume)."""
        dtype = dtype or self.weight.dtype
        dev = self.weight.device
        if name in self.lora_down and self.lora_down[name].shape == down.shape and self.lora_up[name].shape == up.shape:
            with torch.no_grad():
                self.lora_down[name].copy_(down)
                self.lora_up[name].copy_(up)
        else:
            self.lora_down[name] = nn.Parameter(down.detach().to(dev, dtype).clone())
            self.lora_up[name] = nn.Parameter(up.detach().to(dev, dtype).clone())
        self.lora_alpha[name] = float(alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        name = self.lora_state.active
        if name is None or name not in self.lora_down:
            return F.linear(x, self.weight, self.bias)
        down, up = self.lora_down[name], self.lora_up[name]
        scale = self.lora_alpha[name] / down.shape[0]
        if self._merge(x, down, up):
            return F.linear(x, torch.addmm(self.weight, up, down, alpha=scale), self.bias)
        y = F.linear(x, self.weight, self.bias)
        h = F.linear(F.linear(x.to(down.dtype), down), up)
        return y + (h * scale).to(y.dtype)

    def _merge(self, x: torch.Tensor, down: torch.Tensor, up: torch.Tensor) -> bool:
        """Merge only in full fp32 compute: a bf16 cast of `W + dW` would round away a small adapter
        delta that the unmerged path keeps at its own scale."""
        if not _MERGE or torch.is_autocast_enabled(x.device.type):
            return False
        if not (x.dtype == self.weight.dtype == down.dtype == up.dtype == torch.float32):
            return False
        grads = torch.is_grad_enabled() and (down.requires_grad or up.requires_grad)
        return merge_pays(self.in_features, self.out_features, down.shape[0], x.numel() // self.in_features, grads)

    def extra_repr(self) -> str:
        ranks = ", ".join(f"{n}: r{p.shape[0]}" for n, p in self.lora_down.items())
        return f"{super().extra_repr()}, adapters=({ranks})"


class _BoundBlock:
    """A block bound to one adapter: calling it runs the block with that adapter active."""

    __slots__ = ("block", "state", "adapter")

    def __init__(self, block: nn.Module, state: _LoraState, adapter: str | None):
        self.block, self.state, self.adapter = block, state, adapter

    def __call__(self, *args, **kwargs):
        prev, self.state.active = self.state.active, self.adapter
        try:
            return self.block(*args, **kwargs)
        finally:
            self.state.active = prev

    def __getattr__(self, name):
        return getattr(self.block, name)

    def __repr__(self):
        return repr(self.block)


class _AdapterBoundBlocks(nn.ModuleList):
    """Iterating yields each block bound to the adapter active *now*. The Wan forward hands these
    callables to `torch.utils.checkpoint`, whose recompute in backward calls them again: the block
    is then recomputed with the adapter of its original forward, even though by then another
    adapter (e.g. the fake's, after the generator's rollout) or none is active. Without this,
    recomputed activations would silently come from the wrong adapter."""

    def __iter__(self):
        state = self.__dict__.get("lora_state")
        for block in super().__iter__():
            yield block if state is None else _BoundBlock(block, state, state.active)


# ---------------------------------------------------------------------------------------------
# attaching, selecting, listing


def attach_lora(model: nn.Module, adapters=("generator", "fake"), rank: int = 64, alpha: float = 64.0,
                targets=DEFAULT_TARGETS, generator: torch.Generator | None = None,
                dtype: torch.dtype | None = None) -> list[str]:
    """Add the named adapters to every `nn.Linear` inside `blocks.N.` whose path ends with one of
    `targets` (e.g. `q` matches `self_attn.q` and `cross_attn.q`). Freezes every non-adapter
    parameter. Returns the wrapped module names."""
    adapters = (adapters,) if isinstance(adapters, str) else tuple(adapters)
    if rank < 1:
        raise SGMDError(f"LoRA rank must be >= 1; got {rank}")
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and _is_target(n, targets)]
    if not names:
        raise SGMDError(f"no Linear layer inside blocks.N. matches the LoRA targets {list(targets)}")
    state = _ensure_state(model)
    for a in adapters:
        _check_adapter_name(a)
        if a in state.adapters:
            raise SGMDError(f"a LoRA adapter named {a!r} is already attached; pick another name")
    for n in names:
        layer = _wrap(model, n, state)
        for a in adapters:
            layer.add_adapter(a, rank, alpha, generator=generator, dtype=dtype)
    state.adapters.extend(adapters)
    _freeze_base(model)
    return names


def set_active_adapter(model: nn.Module, name: str | None) -> str | None:
    """Select the adapter every wrapped layer adds (None = bare base = teacher); returns the previous one."""
    state = _state(model)
    if name is not None and name not in state.adapters:
        raise SGMDError(f"no LoRA adapter named {name!r}; attached: {', '.join(state.adapters) or 'none'}")
    prev, state.active = state.active, name
    return prev


@contextmanager
def active_adapter(model: nn.Module, name: str | None):
    """`with active_adapter(model, "fake"): v = model(x, t, ctx)` — restores the previous choice."""
    prev = set_active_adapter(model, name)
    try:
        yield model
    finally:
        _state(model).active = prev


@contextmanager
def merging(enabled: bool):
    """`with merging(False): ...` forbids merging an adapter into the base weight for a call where
    it would be cheaper (`merge_pays`; the result is the same up to float rounding). Benchmarks
    measure the gain with it; the default allows it."""
    global _MERGE
    prev, _MERGE = _MERGE, bool(enabled)
    try:
        yield
    finally:
        _MERGE = prev


def adapter_names(model: nn.Module) -> list[str]:
    state = getattr(model, "lora_state", None)
    return list(state.adapters) if state is not None else []


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def adapter_parameters(model: nn.Module, name: str) -> list[nn.Parameter]:
    """The adapter's parameters (down, up of each layer, in module order): what its optimizer owns."""
    params = []
    for layer in lora_layers(model).values():
        if name in layer.lora_down:
            params += [layer.lora_down[name], layer.lora_up[name]]
    if not params:
        raise SGMDError(f"no LoRA adapter named {name!r}; attached: {', '.join(adapter_names(model)) or 'none'}")
    return params


def base_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """`model.state_dict()` without adapter entries: exactly the plain Wan keys."""
    return {k: v for k, v in model.state_dict().items() if not _is_adapter_key(k)}


class AdapterRoles:
    """The three roles (`objectives.base.Roles`) on one LoRA'd base: generator and fake are
    adapters, the teacher is the bare base. Each call is `f(x, sigma[B], context) -> velocity`."""

    def __init__(self, model: nn.Module, generator: str = "generator", fake: str = "fake"):
        self.model, self.generator_adapter, self.fake_adapter = model, generator, fake
        for a in (generator, fake):
            if a not in adapter_names(model):
                raise SGMDError(f"no LoRA adapter named {a!r}; attached: {', '.join(adapter_names(model)) or 'none'}")

    def _run(self, adapter, x, sigma, context):
        with active_adapter(self.model, adapter):
            return self.model(x, sigma_to_timestep(sigma), context)

    def generator(self, x, sigma, context):
        return self._run(self.generator_adapter, x, sigma, context)

    def fake(self, x, sigma, context):
        return self._run(self.fake_adapter, x, sigma, context)

    def teacher(self, x, sigma, context):
        return self._run(None, x, sigma, context)


# ---------------------------------------------------------------------------------------------
# ComfyUI-native files


def export_adapter(model: nn.Module, name: str, prefix: str = FILE_PREFIX) -> dict[str, torch.Tensor]:
    """One adapter as ComfyUI LoRA tensors: `<prefix><module>.lora_down.weight` [r, in],
    `.lora_up.weight` [out, r], `.alpha` (0-dim float32)."""
    out = {}
    for mod, layer in lora_layers(model).items():
        if name in layer.lora_down:
            out[f"{prefix}{mod}.lora_down.weight"] = layer.lora_down[name].detach().clone()
            out[f"{prefix}{mod}.lora_up.weight"] = layer.lora_up[name].detach().clone()
            out[f"{prefix}{mod}.alpha"] = torch.tensor(layer.lora_alpha[name], dtype=torch.float32)
    if not out:
        raise SGMDError(f"no LoRA adapter named {name!r}; attached: {', '.join(adapter_names(model)) or 'none'}")
    return out


def read_lora_tensors(tensors: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """File tensors -> {module: (down [r, in], up [out, r], alpha)}. Accepts `diffusion_model.`,
    `model.diffusion_model.` or no prefix, and lora_A/lora_B for down/up; a missing alpha means
    alpha = rank (scale 1, as ComfyUI)."""
    if not tensors:
        raise SGMDError("the LoRA has no tensors")
    parts: dict[str, dict] = {}
    for key, t in tensors.items():
        mod, role = _split_key(key)
        parts.setdefault(mod, {})[role] = t
    out = {}
    for mod, p in parts.items():
        if "down" not in p or "up" not in p:
            missing = "lora_down" if "down" not in p else "lora_up"
            raise SGMDError(f"LoRA layer {mod!r} lacks its {missing} weight; the file is incomplete")
        down, up = p["down"], p["up"]
        if down.ndim != 2 or up.ndim != 2 or down.shape[0] != up.shape[1]:
            raise SGMDError(f"LoRA layer {mod!r} has inconsistent shapes down {list(down.shape)} / up {list(up.shape)}; "
                            "only linear LoRA is supported")
        alpha = float(p["alpha"].item()) if "alpha" in p else float(down.shape[0])
        out[mod] = (down, up, alpha)
    return out


def load_adapter(model: nn.Module, name: str, tensors: dict) -> list[str]:
    """Load LoRA tensors as adapter `name`, wrapping layers as needed (the rank comes from the file).
    Everything is checked before anything changes. Layers holding `name` but absent from the file
    get a zero delta. Returns the loaded module names."""
    _check_adapter_name(name)
    lora = read_lora_tensors(tensors)
    modules = dict(model.named_modules())
    for mod, (down, up, _) in lora.items():
        _check_target(modules, mod, down, up)
    state = _ensure_state(model)
    for mod, (down, up, alpha) in lora.items():
        _wrap(model, mod, state).set_adapter(name, down, up, alpha)
    for mod, layer in lora_layers(model).items():
        if mod not in lora and name in layer.lora_down:
            with torch.no_grad():
                layer.lora_up[name].zero_()
    if name not in state.adapters:
        state.adapters.append(name)
    _freeze_base(model)
    return sorted(lora)


def merge_lora_state_dict(base_state_dict: dict, lora_tensors: dict, strength: float = 1.0) -> dict:
    """Plain Wan state dict with `W + strength * alpha/r * up @ down` folded in (fp32 math, the base
    dtype kept). Base keys may carry ComfyUI's `model.diffusion_model.` prefix."""
    merged = dict(base_state_dict)
    for mod, (down, up, alpha) in read_lora_tensors(lora_tensors).items():
        key = next((k for k in (f"{mod}.weight", f"{COMFY_PREFIX}{mod}.weight") if k in merged), None)
        if key is None:
            raise SGMDError(f"LoRA layer {mod!r} is not in the model (is the LoRA for a different model?)")
        w = merged[key]
        if w.ndim != 2 or tuple(w.shape) != (up.shape[0], down.shape[1]):
            raise SGMDError(f"LoRA layer {mod!r} is {up.shape[0]}x{down.shape[1]} but the model's weight is "
                            f"{'x'.join(map(str, w.shape))}: the LoRA was made for a different model size")
        delta = (strength * alpha / down.shape[0]) * (up.float() @ down.float())
        merged[key] = (w.float() + delta.to(w.device)).to(w.dtype)
    return merged


# ---------------------------------------------------------------------------------------------
# internals


def _is_target(name: str, targets) -> bool:
    m = _BLOCK_PATH.match(name)
    return bool(m) and any(m.group(1) == t or m.group(1).endswith("." + t) for t in targets)


def _is_adapter_key(key: str) -> bool:
    parts = key.split(".")
    return len(parts) >= 2 and parts[-2] in ADAPTER_KEYS


def _check_adapter_name(name: str) -> None:
    if not isinstance(name, str) or not _ADAPTER_NAME.match(name):
        raise SGMDError(f"LoRA adapter names must be identifiers (letters, digits, _); got {name!r}")


def _state(model: nn.Module) -> _LoraState:
    state = getattr(model, "lora_state", None)
    if state is None:
        raise SGMDError("this model has no LoRA adapters; call attach_lora or load_adapter first")
    return state


def _ensure_state(model: nn.Module) -> _LoraState:
    state = getattr(model, "lora_state", None)
    if state is None:
        state = _LoraState()
        model.lora_state = state
        blocks = getattr(model, "blocks", None)
        if type(blocks) is nn.ModuleList:
            blocks.__class__ = _AdapterBoundBlocks
            blocks.lora_state = state
    return state


def _wrap(model: nn.Module, name: str, state: _LoraState) -> LoRALinear:
    layer = model.get_submodule(name)
    if isinstance(layer, LoRALinear):
        return layer
    parent_name, _, child = name.rpartition(".")
    wrapped = LoRALinear(layer, state)
    setattr(model.get_submodule(parent_name) if parent_name else model, child, wrapped)
    return wrapped


def _freeze_base(model: nn.Module) -> None:
    adapter = {id(p) for layer in lora_layers(model).values() for d in (layer.lora_down, layer.lora_up) for p in d.values()}
    for p in model.parameters():
        if id(p) not in adapter:
            p.requires_grad_(False)


def _split_key(key: str) -> tuple[str, str]:
    for suffix, role in _KEY_SUFFIXES.items():
        if key.endswith(suffix):
            mod = key[: -len(suffix)]
            for prefix in (COMFY_PREFIX, FILE_PREFIX):
                if mod.startswith(prefix):
                    mod = mod[len(prefix):]
                    break
            return mod, role
    raise SGMDError(f"unsupported LoRA key {key!r}: expected <module>.lora_down.weight / .lora_up.weight / .alpha "
                    f"(ComfyUI format) or lora_A / lora_B")


def _check_target(modules: dict, mod: str, down: torch.Tensor, up: torch.Tensor) -> None:
    layer = modules.get(mod)
    if not isinstance(layer, nn.Linear):
        what = "is not a Linear layer" if layer is not None else "does not exist"
        raise SGMDError(f"LoRA layer {mod!r} {what} in this Wan model (is the LoRA for a different model?)")
    if down.shape[1] != layer.in_features or up.shape[0] != layer.out_features:
        raise SGMDError(f"LoRA layer {mod!r} is {up.shape[0]}x{down.shape[1]} but the model's layer is "
                        f"{layer.out_features}x{layer.in_features}: the LoRA was made for a different model size")
