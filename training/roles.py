"""The three networks of distillation (the `Roles` protocol of `sgmd.objectives.base`).

LoRA mode (default): ONE frozen base holding the teacher's weights, with two adapters,
"generator" and "fake"; the teacher is the base with no adapter active. Full mode (`--full`): a
frozen teacher plus full trainable copies for the generator and the fake score.

Each role is `f(x, sigma[B], context) -> velocity`, calling the Wan model with `t = 1000 sigma`
under autocast when the compute dtype is bf16/fp16 (master weights stay fp32)."""
from __future__ import annotations

import copy
from contextlib import contextmanager, nullcontext

import torch
from torch import nn

from sgmd.errors import SGMDError
from sgmd.lora import (active_adapter, adapter_parameters, attach_lora, base_state_dict, export_adapter, load_adapter,
                       lora_layers, merge_lora_state_dict, read_lora_tensors)
from sgmd.schedules import sigma_to_timestep
from sgmd.wan import WanModel, strip_prefix

TRAINABLE = ("generator", "fake")
AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def emulated_dtype_warning(device_type: str, dtype_name: str) -> str | None:
    """Why `dtype_name` compute is a bad choice on this device, or None: bf16 on a CPU without native
    bf16 (avx512_bf16 or AMX) is emulated. Measured on a 2-core AVX2 EPYC (2026-12-07): a teacher
    training step took 9 s in bf16 (compiled) against 0.86 s in fp32."""
    if device_type != "cpu" or dtype_name != "bf16":
        return None
    try:
        if torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return None
    except (AttributeError, RuntimeError):  # no oneDNN in this build: nothing to tell
        return None
    return (f"bf16 compute on this CPU ({torch.backends.cpu.get_cpu_capability()}: no avx512_bf16 or AMX) is "
            f"emulated, about 10x slower per step than fp32 (9 s vs 0.86 s on a 2-core AVX2 CPU); use fp32 here")


def autocast(device_type: str, dtype: torch.dtype | None):
    """Autocast to `dtype` (master weights stay as they are), or nothing for None: fp32 compute."""
    return torch.autocast(device_type, dtype=dtype) if dtype is not None else nullcontext()


class DistillRoles:
    """Generator, fake score and teacher over one LoRA'd base or three full models."""

    def __init__(self, teacher: WanModel, full: bool, compute_dtype: str = "fp32", gradient_checkpointing: bool = False,
                 lora_rank: int = 64, lora_alpha: float = 64.0, lora_targets=("q", "k", "v", "o", "ffn.0", "ffn.2"),
                 seed: int = 0):
        self.full = full
        self.autocast_dtype = AUTOCAST[compute_dtype]
        self.device = teacher.patch_embedding.weight.device
        teacher.requires_grad_(False)
        if full:
            self.models = {"generator": _trainable_copy(teacher), "fake": _trainable_copy(teacher), "teacher": teacher}
            if self.autocast_dtype is not None:  # frozen: no fp32 master copy needed
                teacher.to(self.autocast_dtype)
        else:
            init = torch.Generator().manual_seed(seed)  # own stream: the training generator is untouched
            attach_lora(teacher, TRAINABLE, rank=lora_rank, alpha=lora_alpha, targets=tuple(lora_targets),
                        generator=init, dtype=torch.float32)
            self.models = {"generator": teacher, "fake": teacher, "teacher": teacher}
        for role in TRAINABLE:
            self.models[role].gradient_checkpointing = gradient_checkpointing
        self.teacher_model.eval()
        for role in TRAINABLE:
            self.models[role].eval()  # no dropout anywhere: eval vs train makes no difference

    @property
    def teacher_model(self) -> WanModel:
        return self.models["teacher"]

    @property
    def mode(self) -> str:
        return "full" if self.full else "lora"

    # --- the Roles protocol

    def generator(self, x, sigma, context):
        return self._run("generator", x, sigma, context)

    def fake(self, x, sigma, context):
        return self._run("fake", x, sigma, context)

    def teacher(self, x, sigma, context):
        with torch.no_grad():
            return self._run("teacher", x, sigma, context)

    def _run(self, role, x, sigma, context):
        model = self.models[role]
        adapter = nullcontext() if self.full else active_adapter(model, None if role == "teacher" else role)
        with adapter, autocast(self.device.type, self.autocast_dtype):
            return model(x, sigma_to_timestep(sigma), context).float()

    # --- parameters

    def parameters(self, role: str) -> list[nn.Parameter]:
        if role not in TRAINABLE:
            raise ValueError(f"role {role!r} has no trainable parameters")
        if self.full:
            return list(self.models[role].parameters())
        return adapter_parameters(self.models[role], role)

    def generator_parameters(self) -> list[nn.Parameter]:
        return self.parameters("generator")

    def fake_parameters(self) -> list[nn.Parameter]:
        return self.parameters("fake")

    def freeze(self, role: str) -> None:
        for p in self.parameters(role):
            p.requires_grad_(False)

    def unfreeze(self, role: str) -> None:
        for p in self.parameters(role):
            p.requires_grad_(True)

    @contextmanager
    def frozen(self, role: str):
        self.freeze(role)
        try:
            yield
        finally:
            self.unfreeze(role)

    # --- state (checkpoints, export)

    def state_dict(self, role: str) -> dict[str, torch.Tensor]:
        """Trainable tensors of a role: ComfyUI LoRA tensors (LoRA mode) or Wan keys (full mode)."""
        if self.full:
            return {k: v.detach().clone() for k, v in self.models[role].state_dict().items()}
        return export_adapter(self.models[role], role)

    def load_state_dict(self, role: str, tensors: dict, source: str = "checkpoint") -> None:
        """Load what `state_dict` gave (or a published LoRA / Wan file); SGMDError on a mismatch."""
        lora = any(k.endswith((".lora_down.weight", ".lora_A.weight")) for k in tensors)
        if self.full and lora:
            raise SGMDError(f"{source} is a LoRA; full training (--full) starts from a full Wan file")
        if not self.full and not lora:
            raise SGMDError(f"{source} is not a LoRA; LoRA training starts from a LoRA file (for a full Wan file use --full)")
        if self.full:
            load_full(self.models[role], tensors, source)
        else:
            check_lora_matches(self.models[role], role, tensors, source)
            load_adapter(self.models[role], role, tensors)

    def base_state_dict(self) -> dict[str, torch.Tensor]:
        """The frozen teacher weights with Wan keys."""
        return base_state_dict(self.teacher_model) if not self.full else self.teacher_model.state_dict()

    def generator_full_state_dict(self) -> dict[str, torch.Tensor]:
        """The generator as a complete Wan state dict (LoRA mode: the adapter merged into the base)."""
        if self.full:
            return {k: v.detach().clone() for k, v in self.models["generator"].state_dict().items()}
        return merge_lora_state_dict(self.base_state_dict(), self.state_dict("generator"), 1.0)


def _trainable_copy(model: WanModel) -> WanModel:
    twin = copy.deepcopy(model)
    twin.requires_grad_(True)
    return twin


def load_full(model: WanModel, tensors: dict, source: str) -> None:
    sd = strip_prefix(tensors)
    own = model.state_dict()
    missing, unexpected = set(own) - set(sd), set(sd) - set(own)
    if missing or unexpected:
        raise SGMDError(f"{source} does not match the teacher's layout (missing {sorted(missing)[:2]}, unexpected "
                        f"{sorted(unexpected)[:2]}); is it from another model?")
    bad = [k for k in own if tuple(own[k].shape) != tuple(sd[k].shape)]
    if bad:
        raise SGMDError(f"{source} is from a different model size: {bad[0]} is {list(sd[bad[0]].shape)}, the teacher's "
                        f"is {list(own[bad[0]].shape)}")
    with torch.no_grad():
        for k, v in model.state_dict().items():
            v.copy_(sd[k])


def check_lora_matches(model: WanModel, role: str, tensors: dict, source: str) -> None:
    """The file must cover exactly this adapter's layers with the same shapes and rank, so the
    optimizer keeps owning the same parameters (nothing is added or re-created)."""
    lora = read_lora_tensors(tensors)
    layers = {n: layer for n, layer in lora_layers(model).items() if role in layer.lora_down}
    foreign = sorted(set(lora) - set(layers))
    if foreign:
        raise SGMDError(f"{source} has LoRA layers this run does not train ({foreign[0]} ...): it was made for a "
                        f"different model or different --lora-targets")
    for name, (down, up, _) in lora.items():
        layer = layers[name]
        if down.shape[1] != layer.in_features or up.shape[0] != layer.out_features:
            raise SGMDError(f"{source} is from a different model size: LoRA layer {name} is {up.shape[0]}x"
                            f"{down.shape[1]}, the teacher's is {layer.out_features}x{layer.in_features}")
        rank = layer.lora_down[role].shape[0]
        if down.shape[0] != rank:
            raise SGMDError(f"{source} has LoRA rank {down.shape[0]}, this run {rank}: pass --lora-rank {down.shape[0]}")
    missing = sorted(set(layers) - set(lora))
    if missing:
        raise SGMDError(f"{source} lacks LoRA layers this run trains ({missing[0]} ...): use the --lora-targets of the "
                        f"run that wrote it")
