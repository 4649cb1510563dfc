"""ComfyUI entry of the SGMD node pack (V3 node API).

Importing this file must stay cheap and must not fail outside ComfyUI: nodes (and torch-heavy
modules) are imported only when ComfyUI asks for the extension. The pack root goes at the END of
sys.path so our `sgmd` / `training` packages resolve without shadowing anything already importable
(ComfyUI has its own top-level `nodes` module; ours is only imported relatively)."""
import os
import sys

_ROOT = os.path.dirname(os.path.abspath(__file__))
if _ROOT not in sys.path:
    sys.path.append(_ROOT)


async def comfy_entrypoint():
    from .nodes.extension import SGMDExtension

    return SGMDExtension()
