"""Reading and writing weight files. Only safetensors are ever loaded (no pickle)."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import SGMDError
from .wan import WanConfig, WanModel, strip_prefix


def read_safetensors(path: str) -> tuple[dict, dict]:
    """Return (tensors, metadata). Any file that is not a readable safetensors -> SGMDError."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SGMDError(f"file not found: {path}")
    if not path.endswith(".safetensors"):
        raise SGMDError(f"only .safetensors files are loaded (no pickle checkpoints): {path}")
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises several types for garbage
        raise SGMDError(f"cannot read {path} as safetensors ({type(e).__name__}: {str(e)[:120]})") from None
    return tensors, meta


def write_safetensors(path: str, tensors: dict, metadata: dict | None = None) -> None:
    """Atomic write: temp file in the same folder, fsync, rename. A kill leaves the old file."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp_", suffix=".safetensors")
    os.close(fd)
    try:
        meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=meta)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(folder)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def file_sha256(path: str, n: int = 16) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n]


def load_wan(path: str, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> WanModel:
    """Build a WanModel from a Wan 2.1 T2V safetensors file (any size, any float dtype)."""
    tensors, _ = read_safetensors(path)
    return wan_from_state_dict(tensors, dtype=dtype, device=device, name=os.path.basename(path))


def wan_from_state_dict(sd: dict, dtype=torch.float32, device="cpu", name: str = "state dict") -> WanModel:
    sd = strip_prefix(sd)
    cfg = WanConfig.from_state_dict(sd)
    with torch.device("meta"):
        model = WanModel(cfg)
    expected = set(model.state_dict().keys())
    missing, unexpected = expected - set(sd), set(sd) - expected
    if missing or unexpected:
        what = (f"missing {sorted(missing)[:3]}" if missing else "") + (f" unexpected {sorted(unexpected)[:3]}" if unexpected else "")
        raise SGMDError(f"{name} does not match the Wan 2.1 T2V layout: {what.strip()}")
    model = model.to_empty(device=device).to(dtype)  # meta params are fp32: cast before copying in
    model.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=True)
    return model
