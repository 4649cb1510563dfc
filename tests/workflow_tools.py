"""UI (litegraph, version 0.4) workflows -> the API prompt POST /prompt takes, using node schemas
(the frontend's rule: widget values in schema order, a seed widget followed by its
"fixed"/"randomize" companion; notes and muted/bypassed nodes dropped)."""
from __future__ import annotations

WIDGETS = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}


def kind(spec) -> str:
    return spec[0] if isinstance(spec[0], str) else "COMBO"


def options(spec) -> dict:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def widget_inputs(schema: dict) -> list[tuple[str, list, bool]]:
    """(name, spec, has_companion) of the widget inputs in widgets_values order."""
    spec = {**schema["input"].get("required", {}), **schema["input"].get("optional", {})}
    order = schema["input_order"].get("required", []) + schema["input_order"].get("optional", [])
    out = []
    for name in order:
        s = spec[name]
        if kind(s) in WIDGETS and not options(s).get("forceInput"):
            out.append((name, s, bool(options(s).get("control_after_generate"))))
    return out


def widget_values(node: dict, schema: dict) -> dict:
    values, i = {}, 0
    wv = node.get("widgets_values") or []
    for name, _, companion in widget_inputs(schema):
        if i < len(wv):
            values[name] = wv[i]
        i += 2 if companion else 1
    return values


def ui_to_api(workflow: dict, schemas: dict) -> dict:
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY or node.get("mode", 0) in (2, 4):
            continue
        inputs = widget_values(node, schemas[node["type"]])
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                link = links[slot["link"]]
                inputs[slot["name"]] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt
