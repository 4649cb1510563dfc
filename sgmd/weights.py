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


def _read(path, read):
    """Open a safetensors file (and nothing else: no pickle) and return `read(handle)`; a missing,
    mis-named or unreadable file -> one-line SGMDError."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SGMDError(f"file not found: {path}")
    if not path.endswith(".safetensors"):
        raise SGMDError(f"only .safetensors files are loaded (no pickle checkpoints): {path}")
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            return read(f)
    except Exception as e:  # safetensors raises several types for garbage
        raise SGMDError(f"cannot read {path} as safetensors ({type(e).__name__}: {str(e)[:120]})") from None


def read_safetensors(path: str) -> tuple[dict, dict]:
    """Return (tensors, metadata). Any file that is not a readable safetensors -> SGMDError."""
    return _read(path, lambda f: ({k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}))


def read_metadata(path: str) -> dict:
    """A safetensors file's metadata, from its header only."""
    return _read(path, lambda f: f.metadata() or {})


def atomic_write(path: str, write, suffix: str = "") -> None:
    """Write a file so that a kill at any moment leaves either the old file or the new one: `write`
    fills a temp file in the same folder, which is fsynced, given the usual permissions (mkstemp
    makes 0600) and renamed over `path`."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp_", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
        _fsync_dir(folder)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_safetensors(path: str, tensors: dict, metadata: dict | None = None) -> None:
    """Atomic safetensors write (`atomic_write`); non-string metadata values are stored as JSON."""
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(flat, tmp, metadata=meta), suffix=".safetensors")


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


_HEADER_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                  "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
                  "BOOL": torch.bool, **{k: getattr(torch, n) for k, n in (("F8_E4M3", "float8_e4m3fn"),
                                                                          ("F8_E5M2", "float8_e5m2")) if hasattr(torch, n)}}


def read_wan_config(path: str) -> tuple[WanConfig, dict]:
    """(architecture, metadata) of a Wan 2.1 T2V safetensors file from its header only: no weights
    are read (shapes and dtypes become `meta` tensors), so a 1.3B or 14B file is checked at once."""
    shapes, meta = _read(path, lambda f: ({k: (f.get_slice(k).get_shape(), f.get_slice(k).get_dtype()) for k in f.keys()},
                                          f.metadata() or {}))
    sd = {k: torch.empty(shape, dtype=_HEADER_DTYPES.get(dt, torch.float32), device="meta") for k, (shape, dt) in shapes.items()}
    try:
        return WanConfig.from_state_dict(strip_prefix(sd)), meta
    except SGMDError as e:
        raise SGMDError(f"{os.path.basename(path)}: {e}") from None


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
