"""The node pack's schemas without ComfyUI: loaded like ComfyUI loads it (root __init__.py,
comfy_entrypoint, get_node_list) against the API double in tests/comfy_stub, then checked for
what users see (descriptions, tooltips, categories, socket types) and compared with a recording of
the real /object_info (tests/data/sgmd_object_info.json), so the double cannot drift.

After changing a schema, re-record: run tests/test_comfyui_integration.py with COMFYUI_DIR set and
SGMD_RECORD_OBJECT_INFO=1 (it rewrites the recording from the live server), then
`python workflows/build.py`."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import comfy_info
from stub_pack import REPO, STUB, stub_pack

NATIVE = {"MODEL", "CLIP", "VAE", "CONDITIONING", "LATENT", "SAMPLER", "SIGMAS", "NOISE", "GUIDER", "IMAGE", "MASK",
          "VIDEO", "INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
EXPECTED = {"SGMDSigmas", "SGMDSampler", "SGMDVideoSampler", "SGMDMotionGuidance", "SGMDGeneratorLoader", "SGMDTeacher", "SGMDFakeScore",
            "SGMDGenerator", "SGMDPromptSet", "SGMDToyTextEncode", "SGMDToyDecode", "SGMDTrainStart",
            "SGMDTrainStatus", "SGMDTrainStop"}


@pytest.fixture(scope="module")
def loaded():
    with stub_pack() as (classes, io):
        info = {}
        for cls in classes:
            entry = io.object_info(cls)
            info.setdefault(entry["name"], []).append(entry)
        yield classes, info


@pytest.fixture(scope="module")
def info(loaded):
    return {name: entries[0] for name, entries in loaded[1].items()}


def _inputs(entry):
    for section in ("required", "optional"):
        for name, spec in entry["input"].get(section, {}).items():
            yield section, name, spec


def test_the_expected_nodes_are_listed_once(loaded):
    classes, info = loaded
    assert set(info) == EXPECTED
    assert all(len(entries) == 1 for entries in info.values()), "duplicate node ids"
    assert len(classes) == len(EXPECTED)
    clash = EXPECTED & set(comfy_info.load(comfy_info.CORE_FILE))
    assert not clash, f"node ids clash with core nodes: {clash}"


def test_every_node_is_described_and_filed_under_sgmd(info):
    for name, entry in info.items():
        assert entry["description"].strip(), f"{name} has no description"
        assert entry["display_name"], f"{name} has no display name"
        assert entry["category"].startswith("SGMD/"), f"{name} category {entry['category']!r}"


def test_every_input_has_a_tooltip(info):
    for name, entry in info.items():
        for _, inp, spec in _inputs(entry):
            assert len(spec) > 1 and spec[1].get("tooltip", "").strip(), f"{name}.{inp} has no tooltip"


def test_socket_types_are_native_or_ours(info):
    for name, entry in info.items():
        types = [spec[0] for _, _, spec in _inputs(entry)] + entry["output"]
        for t in types:
            assert t in NATIVE or t.startswith("SGMD_"), f"{name} uses socket type {t!r}"


def test_stub_agrees_with_the_real_object_info(info):
    recorded = comfy_info.load(comfy_info.SGMD_FILE)
    ours = comfy_info.normalise(info)
    assert set(ours) == set(recorded), "node list differs from the recording (re-record, see module docstring)"
    for name in sorted(ours):
        mine, real = ours[name], recorded[name]
        for key in ("input", "input_order", "output", "output_name", "output_is_list", "output_tooltips", "category",
                    "display_name", "description", "output_node"):
            assert mine[key] == real[key], f"{name}.{key}: stub {mine[key]!r} != ComfyUI {real[key]!r}"


def test_the_training_node_defaults_are_the_trainers(info):
    """The ComfyUI training job and `training/run.py` distil with the same recipe unless the user
    changes a widget (the node spells the defaults out so that loading it needs no torch)."""
    from training.config import DistillConfig

    widgets = info["SGMDTrainStart"]["input"]["required"]
    for name in ("lr_generator", "lr_fake", "batch_size", "lora_rank"):
        assert widgets[name][1]["default"] == getattr(DistillConfig, name), name


def test_status_and_stop_re_execute_every_queue(loaded):
    classes, _ = loaded
    by_name = {c.define_schema().node_id: c for c in classes}
    for name in ("SGMDTrainStatus", "SGMDTrainStop"):
        value = by_name[name].fingerprint_inputs(job={"dir": "x"})
        assert value != value, f"{name}.fingerprint_inputs must differ every run (NaN)"


def test_importing_the_nodes_does_not_import_torch():
    """ComfyUI start-up stays fast: torch, sgmd and training load inside execute."""
    code = ("import sys, asyncio; sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2]);"
            "from stub_pack import stub_pack\n"
            "with stub_pack() as (classes, io):\n"
            "    [io.object_info(c) for c in classes]\n"
            "    heavy = [m for m in ('torch', 'sgmd', 'training', 'numpy') if m in sys.modules]\n"
            "    print(','.join(heavy))")
    proc = subprocess.run([sys.executable, "-c", code, STUB, os.path.dirname(os.path.abspath(__file__))],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"imported at load time: {proc.stdout.strip()}"


def test_recording_is_normalised():
    with open(comfy_info.SGMD_FILE, encoding="utf-8") as f:
        doc = json.load(f)
    assert doc["_recorded_from"].get("comfyui_version")
    for name, entry in comfy_info.load(comfy_info.SGMD_FILE).items():
        assert "python_module" not in entry
