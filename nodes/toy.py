"""Helpers for the tiny toy-task models (no VAE, no umT5): the toy text encoder as CONDITIONING and
the toy codec as a decoder from a native LATENT to IMAGE frames."""
from __future__ import annotations

from comfy_api.latest import io

from .common import CATEGORY, UserError


class SGMDToyTextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SGMDToyTextEncode", display_name="SGMD Toy Text Encode", category=f"{CATEGORY}/toy",
            description="Encode a prompt with SGMD's toy text encoder (fixed word vectors at Wan's text width, "
                        "16 tokens), the text encoder the tiny teacher was trained with. Prompts read "
                        "'a red circle moving left quickly'.",
            inputs=[io.String.Input("text", multiline=True, default="a red circle moving right slowly",
                                    tooltip="Prompt: a {red|green|blue|yellow|magenta|cyan|white} {circle|square} "
                                            "[moving {left|right|up|down}] [slowly|quickly].")],
            outputs=[io.Conditioning.Output(display_name="conditioning")],
        )

    @classmethod
    def execute(cls, text: str) -> io.NodeOutput:
        from sgmd.text import encode_text

        return io.NodeOutput([[encode_text([text]), {}]])


class SGMDToyDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SGMDToyDecode", display_name="SGMD Toy Decode", category=f"{CATEGORY}/toy",
            description="Decode a video LATENT of the tiny toy models to frames with the toy codec (instead of a VAE): "
                        "one latent pixel becomes an 8x8 block, one latent frame one video frame.",
            inputs=[io.Latent.Input("latent", tooltip="Sampled video latent [B, 16, T, H, W] (ComfyUI's raw space).")],
            outputs=[io.Image.Output(display_name="images", tooltip="Frames [B*T, 8H, 8W, 3].")],
        )

    @classmethod
    def execute(cls, latent) -> io.NodeOutput:
        from sgmd import codec

        raw = latent["samples"]
        if raw.ndim != 5 or raw.shape[1] != codec.LATENT_CHANNELS:
            raise UserError(f"SGMD Toy Decode needs a video latent [B, {codec.LATENT_CHANNELS}, T, H, W]; got "
                            f"{list(raw.shape)} (a latent of another model family?)")
        frames = codec.decode_raw(raw.float().cpu())  # [B, T, 8H, 8W, 3]
        return io.NodeOutput(frames.reshape(-1, *frames.shape[2:]))


NODES = [SGMDToyTextEncode, SGMDToyDecode]
