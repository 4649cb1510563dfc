"""Multi-process training under torchrun: one process per device, gradients all-reduced by hand.

Why not DDP wrappers: with LoRA the three roles share one module and an objective calls it
several times per backward (generator rollout, fake, teacher), which DDP's reducer does not
support without `find_unused_parameters` and static-graph tricks. Averaging the trainable
gradients explicitly after each backward is simple, correct and cheap for adapters.

Single process (no WORLD_SIZE or WORLD_SIZE=1): every function is a no-op."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def setup(device: str) -> torch.device:
    """Join the process group if torchrun started us; returns this process's device."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        cuda = device != "cpu" and torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and world_size() > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return dev


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_parameters(params) -> None:
    """Rank 0's values everywhere (identical start, whatever each process initialised)."""
    if world_size() > 1:
        for p in params:
            dist.broadcast(p.data, src=0)


def average_gradients(params) -> None:
    if world_size() > 1:
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(world_size())


def broadcast_int(value: int, device) -> int:
    """Rank 0's integer on every rank (the exit step of the rollout)."""
    if world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.broadcast(t, src=0)
    return int(t.item())


def any_rank(flag: bool, device) -> bool:
    """True if the flag is set on any rank (a non-finite loss anywhere skips the step everywhere)."""
    if world_size() == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather_bytes(t: torch.Tensor, device) -> list[torch.Tensor]:
    """Every rank's uint8 tensor of the same length (RNG states for the checkpoint), on the CPU."""
    if world_size() == 1:
        return [t]
    t = t.to(device)
    out = [torch.empty_like(t) for _ in range(world_size())]
    dist.all_gather(out, t)
    return [o.cpu() for o in out]


def max_divergence(params) -> float:
    """Largest difference of the trainable weights across ranks (0 when in sync)."""
    if world_size() == 1:
        return 0.0
    flat = torch.cat([p.detach().float().reshape(-1) for p in params])
    hi, lo = flat.clone(), flat.clone()
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    return float((hi - lo).abs().max())


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()
