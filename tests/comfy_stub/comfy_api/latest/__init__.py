"""Test double of comfy_api.latest: io, ui, ComfyExtension."""
from abc import ABC, abstractmethod

from . import io, ui


class ComfyExtension(ABC):
    async def on_load(self) -> None:
        pass

    @abstractmethod
    async def get_node_list(self) -> list:
        ...


__all__ = ["ComfyExtension", "io", "ui"]
