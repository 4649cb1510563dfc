"""The shipped workflows (workflows/*.json, UI format) against the node schemas recorded from a real
ComfyUI: format, ids, links joining outputs and inputs of one type, widget values that fit their
inputs, notes for every group, download links on the real-model loaders; the files are exactly
what workflows/build.py builds; and ComfyUI lists each template once."""
from __future__ import annotations

import glob
import importlib.util
import json
import math
import os

import pytest

import comfy_info
from workflow_tools import FRONTEND_ONLY, kind, options, ui_to_api, widget_inputs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDER = os.path.join(REPO, "workflows")
FILES = sorted(glob.glob(os.path.join(FOLDER, "*.json")))
NAMES = [os.path.basename(p) for p in FILES]
SCHEMAS = comfy_info.all_schemas()
COMPANIONS = {"fixed", "randomize", "increment", "decrement"}
LOADERS = {"UNETLoader": "diffusion_models", "CLIPLoader": "text_encoders", "VAELoader": "vae"}
# ComfyUI 0.3.64 app/custom_node_manager.py: every one of these folders is listed
TEMPLATE_FOLDERS = ["example_workflows", "example", "examples", "workflow", "workflows"]


def _load(name):
    with open(os.path.join(FOLDER, name), encoding="utf-8") as f:
        return json.load(f)


def test_the_issue_workflows_exist():
    assert {"sgmd_4step_t2v.json", "sgmd_4step_tiny_cpu.json", "sgmd_distill_tiny.json",
            "sgmd_teacher_vs_4step.json"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_format_and_ids(name):
    wf = _load(name)
    assert wf["version"] == 0.4
    ids = [n["id"] for n in wf["nodes"]]
    assert len(ids) == len(set(ids)) and wf["last_node_id"] >= max(ids)
    link_ids = [link[0] for link in wf["links"]]
    assert len(link_ids) == len(set(link_ids)) and wf["last_link_id"] >= max(link_ids, default=0)
    for n in wf["nodes"]:
        assert n["type"] in FRONTEND_ONLY or n["type"] in SCHEMAS, f"{name}: unknown node type {n['type']}"
        assert {"id", "type", "pos", "size", "flags", "order", "mode", "inputs", "outputs", "properties",
                "widgets_values"} <= set(n), f"{name}: node {n['id']} lacks keys"
    orders = sorted(n["order"] for n in wf["nodes"])
    assert orders == list(range(len(ids)))


@pytest.mark.parametrize("name", NAMES)
def test_links_join_an_output_and_an_input_of_the_same_type(name):
    wf = _load(name)
    nodes = {n["id"]: n for n in wf["nodes"]}
    for link_id, src, src_slot, dst, dst_slot, link_type in wf["links"]:
        out = nodes[src]["outputs"][src_slot]
        inp = nodes[dst]["inputs"][dst_slot]
        assert link_id in (out["links"] or []) and inp["link"] == link_id, f"{name}: link {link_id} not mirrored"
        schema_out = SCHEMAS[nodes[src]["type"]]["output"][src_slot]
        dst_schema = SCHEMAS[nodes[dst]["type"]]["input"]
        spec = {**dst_schema.get("required", {}), **dst_schema.get("optional", {})}[inp["name"]]
        assert schema_out == link_type == out["type"] == inp["type"] == kind(spec), (
            f"{name}: link {link_id} {nodes[src]['type']}:{schema_out} -> {nodes[dst]['type']}.{inp['name']}:{kind(spec)}")
    for n in wf["nodes"]:
        if n["type"] in FRONTEND_ONLY or n["mode"] == 2:
            continue
        required = SCHEMAS[n["type"]]["input"].get("required", {})
        for slot in n["inputs"]:
            if slot["name"] in required:
                assert slot["link"] is not None, f"{name}: {n['type']}.{slot['name']} is not connected"


def _fits(value, spec, model_file: bool) -> str | None:
    k, opts = kind(spec), options(spec)
    if k == "COMBO":
        choices = spec[0] if not isinstance(spec[0], str) else opts.get("options", [])
        if model_file:
            return None if isinstance(value, str) and value else "empty model file name"
        return None if value in choices else f"{value!r} not in {choices}"
    if k == "BOOLEAN":
        return None if isinstance(value, bool) else f"{value!r} is not a boolean"
    if k == "STRING":
        return None if isinstance(value, str) else f"{value!r} is not a string"
    if k == "INT" and (isinstance(value, bool) or not isinstance(value, int)):
        return f"{value!r} is not an integer"
    if k == "FLOAT" and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
        return f"{value!r} is not a number"
    if "min" in opts and value < opts["min"] or "max" in opts and value > opts["max"]:
        return f"{value} outside [{opts.get('min')}, {opts.get('max')}]"
    return None


@pytest.mark.parametrize("name", NAMES)
def test_every_widget_value_fits_its_input(name):
    for n in _load(name)["nodes"]:
        if n["type"] in FRONTEND_ONLY:
            continue
        values, i = n["widgets_values"], 0
        for inp, spec, companion in widget_inputs(SCHEMAS[n["type"]]):
            assert i < len(values), f"{name}: {n['type']} lacks a value for {inp}"
            problem = _fits(values[i], spec, (n["type"], inp) in comfy_info.MODEL_FILE_COMBOS)
            assert problem is None, f"{name}: {n['type']}.{inp}: {problem}"
            if companion:
                assert values[i + 1] in COMPANIONS, f"{name}: {n['type']}.{inp} lacks its control value"
            i += 2 if companion else 1
        assert i == len(values), f"{name}: {n['type']} has {len(values)} widget values, schema says {i}"


@pytest.mark.parametrize("name", NAMES)
def test_every_group_has_a_note(name):
    wf = _load(name)
    notes = [n for n in wf["nodes"] if n["type"] in ("Note", "MarkdownNote")]
    assert wf["groups"], f"{name} has no groups"
    for g in wf["groups"]:
        x, y, w, h = g["bounding"]
        inside = [n for n in notes if x <= n["pos"][0] and n["pos"][0] + n["size"][0] <= x + w
                  and y <= n["pos"][1] and n["pos"][1] + n["size"][1] <= y + h]
        assert inside and all(n["widgets_values"][0].strip() for n in inside), f"{name}: group {g['title']!r} has no note"


def test_real_model_loaders_carry_download_links():
    for n in _load("sgmd_4step_t2v.json")["nodes"]:
        if n["type"] in LOADERS:
            (model,) = n["properties"]["models"]
            assert model["directory"] == LOADERS[n["type"]] and model["name"] == n["widgets_values"][0]
            assert model["url"].startswith("https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/") and \
                model["name"] in model["url"]


def test_tiny_workflow_uses_the_shipped_models_and_size():
    api = ui_to_api(_load("sgmd_4step_tiny_cpu.json"), SCHEMAS)
    by_type = {v["class_type"]: v["inputs"] for v in api.values()}
    assert by_type["UNETLoader"]["unet_name"] == "sgmd_tiny_teacher.safetensors"
    assert by_type["SGMDGeneratorLoader"]["generator_name"] == "sgmd_tiny_4step_lora.safetensors"
    size = by_type["EmptyHunyuanLatentVideo"]
    assert (size["width"], size["height"], size["length"]) == (128, 128, 29)  # latent [1, 16, 8, 16, 16]


def test_side_by_side_samples_the_teacher_as_the_evaluator_does():
    """The teacher half of the side-by-side workflow uses the evaluator's settings (50 Euler steps,
    shift 5, the default guidance, the teacher file's motion guidance), so what a user sees is what docs/tiny-model.md measured."""
    from sgmd.samplers import DEFAULT_GUIDANCE

    api = ui_to_api(_load("sgmd_teacher_vs_4step.json"), SCHEMAS)
    by_type = {v["class_type"]: v["inputs"] for v in api.values()}
    k = by_type["KSampler"]
    assert (k["steps"], k["cfg"], k["sampler_name"], k["scheduler"]) == (50, DEFAULT_GUIDANCE, "euler", "simple")
    assert by_type["ModelSamplingSD3"]["shift"] == 5.0
    # motion guidance at what the shipped teacher records, between the shift and the KSampler
    from sgmd.teacher_sampling import file_motion_guidance

    teacher = os.path.join(os.path.dirname(FOLDER), "models", "diffusion_models", by_type["UNETLoader"]["unet_name"])
    motion = by_type["SGMDMotionGuidance"]
    assert motion["scale"] == file_motion_guidance(teacher) > 0 and motion["keep_position_code"] is True
    ids = {v["class_type"]: k for k, v in api.items()}
    assert motion["model"][0] == ids["ModelSamplingSD3"] and k["model"][0] == ids["SGMDMotionGuidance"]


def test_files_are_what_the_builder_builds():
    spec = importlib.util.spec_from_file_location("sgmd_workflow_build", os.path.join(FOLDER, "build.py"))
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    built = build.build()
    assert set(built) == set(NAMES), "workflows/ has JSON files the builder does not make"
    for name, text in built.items():
        with open(os.path.join(FOLDER, name), encoding="utf-8") as f:
            assert f.read() == text, f"{name} is stale or hand-edited: run python workflows/build.py"


def test_templates_are_listed_once():
    """ComfyUI lists the JSON of every template folder (duplicates included) but serves only the
    first folder that exists: one folder only, so each template is listed once and fetchable."""
    listed = [os.path.basename(p) for f in TEMPLATE_FOLDERS for p in glob.glob(os.path.join(REPO, f, "*.json"))]
    assert len(listed) == len(set(listed)) and set(listed) == set(NAMES)
