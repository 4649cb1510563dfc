"""Node schemas as GET /object_info shows them: the recordings in tests/data and how a live
recording of our nodes is normalised (machine-dependent model-file lists blanked)."""
from __future__ import annotations

import json
import os

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
CORE_FILE = os.path.join(DATA, "comfy_object_info.json")
SGMD_FILE = os.path.join(DATA, "sgmd_object_info.json")

# combos whose options are the model files of the machine (not checked against a recording)
MODEL_FILE_COMBOS = {
    ("UNETLoader", "unet_name"), ("CLIPLoader", "clip_name"), ("VAELoader", "vae_name"),
    ("LoraLoaderModelOnly", "lora_name"),
    ("SGMDGeneratorLoader", "generator_name"), ("SGMDTeacher", "teacher_name"), ("SGMDGenerator", "generator_file"),
}
FILE_COMBO_KEEP = {"none"}  # fixed entries of our file combos (SGMDGenerator.generator_file: "none" first)


def load(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return {k: v for k, v in json.load(f).items() if not k.startswith("_")}


def all_schemas() -> dict:
    return {**load(CORE_FILE), **load(SGMD_FILE)}


def normalise(info: dict) -> dict:
    """Our nodes' object_info without machine-specific parts: python_module dropped, model-file
    combo options reduced to their fixed entries. JSON round trip (tuples -> lists)."""
    out = json.loads(json.dumps(info))
    for name, node in out.items():
        node.pop("python_module", None)
        for section in ("required", "optional"):
            for inp, spec in node["input"].get(section, {}).items():
                if (name, inp) in MODEL_FILE_COMBOS and len(spec) > 1 and "options" in spec[1]:
                    spec[1]["options"] = [o for o in spec[1]["options"] if o in FILE_COMBO_KEEP]
    return out


def record(live_object_info: dict, path: str = SGMD_FILE, source: dict | None = None) -> dict:
    """Write the normalised SGMD* entries of a live /object_info to `path`."""
    ours = normalise({k: v for k, v in live_object_info.items() if k.startswith("SGMD")})
    doc = {"_recorded_from": source or {}, **dict(sorted(ours.items()))}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    return ours
