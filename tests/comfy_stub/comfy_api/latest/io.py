"""Test double of comfy_api.latest.io (ComfyUI's `_io.py`): schemas and the object_info they give.

Only the parts the SGMD nodes use. `object_info(node_cls)` returns what `GET /object_info/<id>`
returns for a V3 node (`asdict(Schema.get_v1_info(cls))`)."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


def _prune(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


class NumberDisplay(str, Enum):
    number = "number"
    slider = "slider"


class Hidden(str, Enum):
    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"
    dynprompt = "DYNPROMPT"


class Input:
    io_type = None

    def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, extra_dict=None):
        self.id, self.display_name, self.optional, self.tooltip, self.lazy = id, display_name, optional, tooltip, lazy
        self.extra_dict = extra_dict or {}

    def as_dict(self) -> dict:
        return _prune({"display_name": self.display_name, "optional": self.optional, "tooltip": self.tooltip,
                       "lazy": self.lazy}) | _prune(self.extra_dict)


class WidgetInput(Input):
    def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default=None, socketless=None,
                 widget_type=None, force_input=None, extra_dict=None):
        super().__init__(id, display_name, optional, tooltip, lazy, extra_dict)
        self.default, self.socketless, self.widget_type, self.force_input = default, socketless, widget_type, force_input

    def as_dict(self) -> dict:
        return super().as_dict() | _prune({"default": self.default, "socketless": self.socketless,
                                           "widgetType": self.widget_type, "forceInput": self.force_input})


class Output:
    io_type = None

    def __init__(self, id=None, display_name=None, tooltip=None, is_output_list=False):
        self.id, self.display_name, self.tooltip, self.is_output_list = id, display_name, tooltip, is_output_list


def _socket(io_type: str):
    """A socket type with plain Input / Output (MODEL, LATENT, ... and io.Custom)."""
    return type(io_type, (), {
        "io_type": io_type,
        "Input": type("Input", (Input,), {"io_type": io_type}),
        "Output": type("Output", (Output,), {"io_type": io_type}),
    })


def Custom(io_type: str):
    return _socket(io_type)


Model, Clip, Vae, Conditioning, Latent = (_socket(t) for t in ("MODEL", "CLIP", "VAE", "CONDITIONING", "LATENT"))
Sampler, Sigmas, Noise, Guider = (_socket(t) for t in ("SAMPLER", "SIGMAS", "NOISE", "GUIDER"))
Image, Mask, Video, AnyType = (_socket(t) for t in ("IMAGE", "MASK", "VIDEO", "*"))


class Boolean(_socket("BOOLEAN")):
    class Input(WidgetInput):
        io_type = "BOOLEAN"

        def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default=None,
                     label_on=None, label_off=None, socketless=None, force_input=None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.label_on, self.label_off = label_on, label_off

        def as_dict(self):
            return super().as_dict() | _prune({"label_on": self.label_on, "label_off": self.label_off})


class Int(_socket("INT")):
    class Input(WidgetInput):
        io_type = "INT"

        def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default=None, min=None,
                     max=None, step=None, control_after_generate=None, display_mode=None, socketless=None,
                     force_input=None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.min, self.max, self.step = min, max, step
            self.control_after_generate, self.display_mode = control_after_generate, display_mode

        def as_dict(self):
            return super().as_dict() | _prune({"min": self.min, "max": self.max, "step": self.step,
                                               "control_after_generate": self.control_after_generate,
                                               "display": self.display_mode.value if self.display_mode else None})


class Float(_socket("FLOAT")):
    class Input(WidgetInput):
        io_type = "FLOAT"

        def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default=None, min=None,
                     max=None, step=None, round=None, display_mode=None, socketless=None, force_input=None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.min, self.max, self.step, self.round, self.display_mode = min, max, step, round, display_mode

        def as_dict(self):
            return super().as_dict() | _prune({"min": self.min, "max": self.max, "step": self.step,
                                               "round": self.round, "display": self.display_mode})


class String(_socket("STRING")):
    class Input(WidgetInput):
        io_type = "STRING"

        def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, multiline=False,
                     placeholder=None, default=None, dynamic_prompts=None, socketless=None, force_input=None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.multiline, self.placeholder, self.dynamic_prompts = multiline, placeholder, dynamic_prompts

        def as_dict(self):
            return super().as_dict() | _prune({"multiline": self.multiline, "placeholder": self.placeholder,
                                               "dynamicPrompts": self.dynamic_prompts})


class Combo(_socket("COMBO")):
    class Input(WidgetInput):
        io_type = "COMBO"

        def __init__(self, id, options=None, display_name=None, optional=False, tooltip=None, lazy=None, default=None,
                     control_after_generate=None, upload=None, image_folder=None, remote=None, socketless=None):
            if isinstance(options, type) and issubclass(options, Enum):
                options = [v.value for v in options]
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless)
            self.options, self.control_after_generate = options, control_after_generate

        def as_dict(self):
            return super().as_dict() | _prune({"multiselect": False, "options": self.options,
                                               "control_after_generate": self.control_after_generate})


@dataclass
class Schema:
    node_id: str
    display_name: str = None
    category: str = "sd"
    inputs: list = None
    outputs: list = None
    hidden: list = None
    description: str = ""
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    is_api_node: bool = False
    not_idempotent: bool = False
    enable_expand: bool = False

    def finalize(self) -> "Schema":
        if self.is_output_node:
            self.hidden = list(self.hidden or [])
            for h in (Hidden.prompt, Hidden.extra_pnginfo):
                if h not in self.hidden:
                    self.hidden.append(h)
        for i, o in enumerate(self.outputs or []):
            if o.id is None:
                o.id = f"_{i}_{o.io_type}_"
        return self


class NodeOutput:
    def __init__(self, *args, ui=None, expand=None, block_execution=None):
        self.args, self.ui, self.expand, self.block_execution = args, ui, expand, block_execution

    @property
    def result(self):
        return self.args or None

    def __getitem__(self, index):
        return self.args[index]


class ComfyNode:
    """Classmethods only, as in ComfyUI."""

    RELATIVE_PYTHON_MODULE = None

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError

    @classmethod
    def execute(cls, **kwargs) -> NodeOutput:
        raise NotImplementedError


def object_info(node_cls) -> dict:
    """What GET /object_info shows for a V3 node class."""
    schema = node_cls.define_schema().finalize()
    inputs = {"required": {}}
    for i in schema.inputs or []:
        d = i.as_dict()
        d.pop("optional", None)
        inputs.setdefault("optional" if i.optional else "required", {})[i.id] = [i.io_type, d]
    for h in schema.hidden or []:
        inputs.setdefault("hidden", {})[h.name] = [h.value]
    outputs = schema.outputs or []
    return {
        "input": inputs,
        "input_order": {k: list(v) for k, v in inputs.items()},
        "output": [o.io_type for o in outputs],
        "output_is_list": [o.is_output_list for o in outputs],
        "output_name": [o.display_name or o.io_type for o in outputs],
        "output_tooltips": [o.tooltip or None for o in outputs],
        "name": schema.node_id,
        "display_name": schema.display_name,
        "description": schema.description,
        "python_module": node_cls.RELATIVE_PYTHON_MODULE or "nodes",
        "category": schema.category,
        "output_node": schema.is_output_node,
        "deprecated": schema.is_deprecated,
        "experimental": schema.is_experimental,
        "api_node": schema.is_api_node,
    }
