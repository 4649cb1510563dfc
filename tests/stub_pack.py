"""Load the pack the way ComfyUI does (its root __init__.py as a package, then
`await comfy_entrypoint()` and `get_node_list()`), but against the API test double in
tests/comfy_stub, which is on sys.path only inside `stub_pack()`."""
from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from contextlib import contextmanager

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
STUB = os.path.join(HERE, "comfy_stub")
PACKAGE = "sgmd_pack_under_test"
_OWNED = ("comfy_api", "folder_paths", PACKAGE)


def _drop_modules() -> dict:
    gone = {}
    for name in list(sys.modules):
        if name.split(".")[0] in _OWNED:
            gone[name] = sys.modules.pop(name)
    return gone


@contextmanager
def stub_pack():
    """Yields (node classes, stub io module)."""
    saved_path, saved_modules = list(sys.path), _drop_modules()
    sys.path.insert(0, STUB)
    try:
        spec = importlib.util.spec_from_file_location(PACKAGE, os.path.join(REPO, "__init__.py"),
                                                      submodule_search_locations=[REPO])
        pack = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = pack
        spec.loader.exec_module(pack)
        extension = asyncio.run(pack.comfy_entrypoint())
        classes = asyncio.run(extension.get_node_list())
        from comfy_api.latest import io

        yield classes, io
    finally:
        _drop_modules()
        sys.modules.update(saved_modules)
        sys.path[:] = saved_path
