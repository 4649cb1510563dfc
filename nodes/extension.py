"""The pack's V3 extension: registers the model folders, then lists the nodes.

Model folders: a new `sgmd` folder (`ComfyUI/models/sgmd`), and the pack's
`models/diffusion_models` and `models/loras` are added to ComfyUI's folders of those names (the
shipped tiny teacher loads with the native `UNETLoader`, the 4-step LoRA with
`LoraLoaderModelOnly`)."""
from __future__ import annotations

import os

from typing_extensions import override

from comfy_api.latest import ComfyExtension, io

from .common import PACK_MODEL_FOLDERS


def register_model_folders() -> None:
    """Idempotent; merges with entries that extra_model_paths.yaml may have created."""
    import folder_paths

    exts = set(folder_paths.supported_pt_extensions)
    wanted = [os.path.join(folder_paths.models_dir, "sgmd")]
    paths, old_exts = folder_paths.folder_names_and_paths.get("sgmd", ([], set()))
    merged = list(paths) + [p for p in wanted if p not in paths]
    folder_paths.folder_names_and_paths["sgmd"] = (merged, (set(old_exts) | exts) if old_exts else exts)
    for name, folder in PACK_MODEL_FOLDERS.items():
        if folder not in folder_paths.get_folder_paths(name):
            folder_paths.add_model_folder_path(name, folder)


class SGMDExtension(ComfyExtension):
    @override
    async def on_load(self) -> None:
        register_model_folders()

    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        register_model_folders()  # this ComfyUI version does not call on_load
        from . import loaders, sampling, toy, training

        return [*sampling.NODES, *loaders.NODES, *toy.NODES, *training.NODES]
