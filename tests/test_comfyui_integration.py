"""The pack inside a real ComfyUI (opt-in: set COMFYUI_DIR to a ComfyUI checkout; its venv is
COMFY_VENV or the harness default). Started headless on CPU with ../shared/tools/comfyui-harness.sh
(-k), with temporary model, output and temp folders. Checks: the pack imports and its /object_info
matches tests/data/sgmd_object_info.json (SGMD_RECORD_OBJECT_INFO=1 re-records it); the tiny
workflows run through POST /prompt; the 4-step tiny workflow's frames equal our own sampler's for
the same prompt and seed; a short training job started from the node finishes and its LoRA loads
with LoraLoaderModelOnly; a user error is a one-line node error and the server keeps serving.

Models: the shipped models/diffusion_models/sgmd_tiny_teacher.safetensors and models/loras/sgmd_tiny_4step_lora.safetensors
when present, else random tiny stand-ins with the same names (listed first)."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
pytestmark = pytest.mark.skipif(not COMFYUI_DIR, reason="set COMFYUI_DIR to a ComfyUI checkout to run these tests")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARNESS = os.path.normpath(os.path.join(REPO, "..", "shared", "tools", "comfyui-harness.sh"))
TEACHER, LORA = "sgmd_tiny_teacher.safetensors", "sgmd_tiny_4step_lora.safetensors"
TINY_JOB = "latent_frames: 2\nlatent_height: 4\nlatent_width: 4\nsamples: 2\ncheckpoint_every: 1"


class Server:
    def __init__(self, url, base, pid, models):
        self.url, self.base, self.pid, self.models = url, base, pid, models
        self.output = os.path.join(base, "output")

    def request(self, path, data=None):
        req = urllib.request.Request(self.url + path, data=None if data is None else json.dumps(data).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as f:
                return f.status, json.load(f)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def run(self, prompt: dict, timeout: float = 300.0) -> dict:
        code, res = self.request("/prompt", {"prompt": prompt, "client_id": "sgmd-test-" + uuid.uuid4().hex[:8]})
        assert code == 200, f"POST /prompt rejected: {json.dumps(res)[:2000]}"
        prompt_id, t0 = res["prompt_id"], time.monotonic()
        while time.monotonic() - t0 < timeout:
            _, history = self.request("/history/" + prompt_id)
            if prompt_id in history:
                return history[prompt_id]
            time.sleep(0.3)
        self.request("/interrupt", {})
        raise AssertionError(f"prompt did not finish in {timeout} s")


def _errors(history: dict) -> list[dict]:
    return [data for event, data in history["status"].get("messages", []) if event == "execution_error"]


def _succeeded(history: dict) -> None:
    errors = _errors(history)
    assert history["status"]["status_str"] == "success", "; ".join(
        f"{e.get('node_type')}: {e.get('exception_message')}" for e in errors) or history["status"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stand_in_models(base: str) -> dict:
    """The shipped tiny models, or random ones with the same names in our own folders."""
    import torch

    from sgmd.lora import attach_lora, export_adapter, lora_layers
    from sgmd.recipe import SamplingRecipe
    from sgmd.schedules import student_sigmas
    from sgmd.wan import WanConfig, WanModel
    from sgmd.weights import load_wan, write_safetensors

    teacher = os.path.join(REPO, "models", "diffusion_models", TEACHER)
    if not os.path.isfile(teacher):
        teacher = os.path.join(base, "diffusion_models", TEACHER)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            write_safetensors(teacher, WanModel(WanConfig(dim=128, ffn_dim=256, num_layers=3)).state_dict())
    lora = os.path.join(REPO, "models", "loras", LORA)
    if not os.path.isfile(lora):
        lora = os.path.join(base, "loras", LORA)
        model = load_wan(teacher)
        attach_lora(model, ("generator",), rank=4, alpha=4.0, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            g = torch.Generator().manual_seed(2)
            for layer in lora_layers(model).values():
                up = layer.lora_up["generator"]
                up.copy_(torch.randn(up.shape, generator=g) * 0.05)
        recipe = SamplingRecipe(sigmas=student_sigmas().tolist(), shift=5.0, student_timesteps=[1000.0, 750.0, 500.0, 250.0],
                                update_rule="euler")
        write_safetensors(lora, export_adapter(model, "generator"), recipe.to_metadata())
    return {"teacher": teacher, "lora": lora}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not os.path.isfile(HARNESS):
        pytest.skip(f"harness not found: {HARNESS}")
    base = str(tmp_path_factory.mktemp("comfy"))
    for sub in ("diffusion_models", "loras", "output", "temp"):
        os.makedirs(os.path.join(base, sub))
    models = _stand_in_models(base)
    extra = os.path.join(base, "extra_model_paths.yaml")
    with open(extra, "w", encoding="utf-8") as f:  # our folders first: stand-ins and job LoRAs land here
        f.write(f"sgmd_test:\n    base_path: {base}\n    is_default: true\n    diffusion_models: diffusion_models\n"
                f"    loras: loras\n")
    port = _free_port()
    env = dict(os.environ, COMFY_DIR=COMFYUI_DIR, COMFY_PORT=str(port),
               COMFY_EXTRA_ARGS=f"--extra-model-paths-config {extra} --output-directory {base}/output "
                                f"--temp-directory {base}/temp")
    proc = subprocess.run(["bash", HARNESS, "-k", REPO], env=env, capture_output=True, text=True, timeout=900)
    found = re.search(r"server left running: PID (\d+)", proc.stderr)
    pid = int(found.group(1)) if found else None
    link = os.path.join(COMFYUI_DIR, "custom_nodes", os.path.basename(REPO))
    try:
        assert proc.returncode == 0 and pid, f"harness failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
        print(proc.stdout)
        yield Server(f"http://127.0.0.1:{port}", base, pid, models)
    finally:
        if pid:
            os.kill(pid, signal.SIGTERM)
            for _ in range(40):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.25)
            else:
                os.kill(pid, signal.SIGKILL)
        if os.path.islink(link) and os.path.realpath(link) == os.path.realpath(REPO):
            os.remove(link)


@pytest.fixture(scope="module")
def object_info(server):
    code, info = server.request("/object_info")
    assert code == 200
    return info


def _workflow(name: str, object_info: dict) -> dict:
    from workflow_tools import ui_to_api

    with open(os.path.join(REPO, "workflows", name), encoding="utf-8") as f:
        return ui_to_api(json.load(f), object_info)


def _node(prompt: dict, class_type: str) -> tuple[str, dict]:
    (found,) = [(k, v) for k, v in prompt.items() if v["class_type"] == class_type]
    return found


def test_pack_imports_and_object_info_matches_the_recording(server, object_info):
    import comfy_info

    ours = {k: v for k, v in object_info.items() if k.startswith("SGMD")}
    assert len(ours) == 14, sorted(ours)
    assert all(v["python_module"] == f"custom_nodes.{os.path.basename(REPO)}" for v in ours.values())
    if os.environ.get("SGMD_RECORD_OBJECT_INFO") == "1":
        _, stats = server.request("/system_stats")
        comfy_info.record(object_info, source={
            "comfyui_version": stats["system"].get("comfyui_version"), "python": stats["system"].get("python_version"),
            "source": "GET /object_info, ComfyUI --cpu, via tests/test_comfyui_integration.py "
                      "(SGMD_RECORD_OBJECT_INFO=1); normalised by tests/comfy_info.py"})
    assert comfy_info.normalise(ours) == comfy_info.load(comfy_info.SGMD_FILE)
    unets = object_info["UNETLoader"]["input"]["required"]["unet_name"][0]
    loras = object_info["LoraLoaderModelOnly"]["input"]["required"]["lora_name"][0]
    assert TEACHER in unets and LORA in loras
    for folder, listed in (("diffusion_models", unets), ("loras", loras)):
        path = os.path.join(REPO, "models", folder)
        shipped = [f for f in os.listdir(path) if f.endswith(".safetensors")] if os.path.isdir(path) else []
        assert set(shipped) <= set(listed), f"the pack's models/{folder} folder is not registered"
        assert not set(shipped) & set(unets if folder == "loras" else loras), "a shipped file is listed as the other kind"


def test_templates_are_listed_and_served(server):
    code, listed = server.request("/workflow_templates")
    names = listed.get(os.path.basename(REPO), [])
    assert code == 200 and sorted(names) == sorted(set(names)) and "sgmd_4step_t2v" in names
    for name in names:
        code, wf = server.request(f"/api/workflow_templates/{os.path.basename(REPO)}/{name}.json")
        assert code == 200 and wf["version"] == 0.4


def test_tiny_workflow_frames_equal_our_sampler(server, object_info):
    import numpy as np
    import torch
    from PIL import Image
    from safetensors.torch import load_file

    from sgmd import codec
    from sgmd.lora import merge_lora_state_dict
    from sgmd.noise import noise_for_seed
    from sgmd.recipe import SamplingRecipe
    from sgmd.samplers import model_velocity, sample_few_step
    from sgmd.text import encode_text
    from sgmd.weights import read_safetensors, wan_from_state_dict

    prompt = _workflow("sgmd_4step_tiny_cpu.json", object_info)
    sampler_id, sampler = _node(prompt, "SGMDVideoSampler")
    decode_id, _ = _node(prompt, "SGMDToyDecode")
    _, text = _node(prompt, "SGMDToyTextEncode")
    _, loader = _node(prompt, "SGMDGeneratorLoader")
    prompt["900"] = {"class_type": "SaveLatent", "inputs": {"samples": [sampler_id, 0], "filename_prefix": "sgmd_check"}}
    prompt["901"] = {"class_type": "SaveImage", "inputs": {"images": [decode_id, 0], "filename_prefix": "sgmd_check"}}
    history = server.run(prompt)
    _succeeded(history)
    assert history["outputs"][_node(prompt, "SaveVideo")[0]]["images"][0]["filename"].endswith(".mp4")
    latent = load_file(os.path.join(server.output, history["outputs"]["900"]["latents"][0]["filename"]))["latent_tensor"]
    pngs = [np.asarray(Image.open(os.path.join(server.output, im["subfolder"], im["filename"])).convert("RGB"))
            for im in history["outputs"]["901"]["images"]]

    base, _ = read_safetensors(server.models["teacher"])
    lora, meta = read_safetensors(server.models["lora"])
    recipe = SamplingRecipe.from_metadata(meta)
    model = wan_from_state_dict(merge_lora_state_dict(base, lora, loader["inputs"]["strength"])).eval()
    with torch.no_grad():
        ours = sample_few_step(model_velocity(model, encode_text([text["inputs"]["text"]])),
                               noise_for_seed(sampler["inputs"]["seed"], tuple(latent.shape)),
                               torch.tensor(recipe.sigmas), recipe.update_rule)
    frames_comfy = codec.decode_raw(latent.float())[0]
    frames_ours = codec.decode(ours, codec.VIEW_UPSCALE)[0]
    latent_diff = float((codec.to_raw(ours) - latent).abs().max())
    frame_diff = float((frames_comfy - frames_ours).abs().max())
    png_diff = int(np.abs(np.stack(pngs).astype(int) - codec.to_uint8(frames_ours).astype(int)).max())
    print(f"\nSGMD tiny workflow vs sgmd.samplers.sample_few_step (seed {sampler['inputs']['seed']}, latent "
          f"{list(latent.shape)}): max |latent diff| {latent_diff:.3g}, max |frame diff| {frame_diff:.3g} "
          f"(frames in [0, 1]), max PNG diff {png_diff}/255")
    assert latent.shape == (1, 16, 8, 16, 16) and len(pngs) == 8
    assert frame_diff < 1e-3 and png_diff <= 1


def test_teacher_vs_4step_workflow_runs_and_its_teacher_is_our_guided_sampler(server, object_info):
    """The teacher half (KSampler after SGMD Motion Guidance) gives the clip our evaluator's sampler gives with
    the same CFG and motion guidance, and not the clip of plain CFG: the node applies the same term."""
    import torch
    from safetensors.torch import load_file

    from sgmd import codec
    from sgmd.noise import noise_for_seed
    from sgmd.samplers import cfg_velocity, sample_teacher
    from sgmd.schedules import teacher_sigmas
    from sgmd.text import encode_text
    from sgmd.weights import load_wan

    prompt = _workflow("sgmd_teacher_vs_4step.json", object_info)
    ks_id, ks = _node(prompt, "KSampler")
    _, motion = _node(prompt, "SGMDMotionGuidance")
    text = prompt[ks["inputs"]["positive"][0]]["inputs"]["text"]
    prompt["900"] = {"class_type": "SaveLatent", "inputs": {"samples": [ks_id, 0], "filename_prefix": "sgmd_teacher"}}
    history = server.run(prompt)
    _succeeded(history)
    latent = load_file(os.path.join(server.output, history["outputs"]["900"]["latents"][0]["filename"]))["latent_tensor"]
    model = load_wan(server.models["teacher"]).eval()
    cond, uncond = encode_text([text]), encode_text([""])
    noise = noise_for_seed(ks["inputs"]["seed"], tuple(latent.shape))
    sigmas = teacher_sigmas(ks["inputs"]["steps"], 5.0)
    with torch.no_grad():
        guided = sample_teacher(cfg_velocity(model, cond, uncond, ks["inputs"]["cfg"], motion["inputs"]["scale"],
                                             codec.position_code(*latent.shape[2:])), noise, sigmas)
        plain = sample_teacher(cfg_velocity(model, cond, uncond, ks["inputs"]["cfg"]), noise, sigmas)
    comfy = codec.from_raw(latent.float())
    d_guided, d_plain = float((comfy - guided).abs().max()), float((comfy - plain).abs().max())
    print(f"\nteacher in ComfyUI vs ours: max |latent diff| {d_guided:.3g} with motion guidance "
          f"{motion['inputs']['scale']:g}, {d_plain:.3g} with plain CFG")
    assert d_guided < 1e-3 < d_plain


def test_training_job_from_the_node_and_its_lora_in_the_native_loader(server, object_info):
    from training import jobs

    prompt = _workflow("sgmd_distill_tiny.json", object_info)
    _, start = _node(prompt, "SGMDTrainStart")
    name = "it_" + uuid.uuid4().hex[:6]
    start["inputs"].update(iterations=2, lora_rank=4, batch_size=1, device="cpu", job_name=name, extra_options=TINY_JOB)
    t0 = time.monotonic()
    history = server.run(prompt)
    _succeeded(history)
    assert time.monotonic() - t0 < 60, "SGMD Train must return at once"
    job_dir = os.path.join(server.output, "sgmd_jobs", name)
    t0 = time.monotonic()
    while jobs.status(job_dir, samples=False)["state"] == "running":
        assert time.monotonic() - t0 < 600, "job did not finish"
        time.sleep(1)
    assert jobs.status(job_dir, samples=False)["state"] == "finished", open(os.path.join(job_dir, "log.txt")).read()
    again = server.run(prompt)  # Start is cached (no second job); Status runs again
    _succeeded(again)
    status_id, _ = _node(prompt, "SGMDTrainStatus")
    text = again["outputs"][status_id]["text"][0]
    assert "finished, iteration 2/2" in text and f"sgmd_{name}.safetensors" in text
    published = os.path.join(server.base, "loras", f"sgmd_{name}.safetensors")
    assert os.path.isfile(published)
    check = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": TEACHER, "weight_dtype": "default"}},
        "2": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0], "lora_name": f"sgmd_{name}.safetensors",
                                                             "strength_model": 1.0}},
        "3": {"class_type": "SGMDToyTextEncode", "inputs": {"text": "a green square moving up"}},
        "4": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 32, "height": 32, "length": 5, "batch_size": 1}},
        "5": {"class_type": "SGMDVideoSampler", "inputs": {"model": ["2", 0], "positive": ["3", 0], "latent": ["4", 0],
                                                          "seed": 1}},
        "6": {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": "sgmd_native_lora"}},
        "12": {"class_type": "SGMDGeneratorLoader", "inputs": {"model": ["1", 0], "strength": 1.0,
                                                              "generator_name": f"sgmd_{name}.safetensors"}},
        "15": {"class_type": "SGMDVideoSampler", "inputs": {"model": ["12", 0], "positive": ["3", 0],
                                                           "latent": ["4", 0], "seed": 1, "recipe": ["12", 3]}},
        "16": {"class_type": "SaveLatent", "inputs": {"samples": ["15", 0], "filename_prefix": "sgmd_our_loader"}},
    }
    history = server.run(check)
    _succeeded(history)
    native, ours = (_latent(server, history, node) for node in ("6", "16"))
    assert float((native - ours).abs().max()) < 1e-5  # LoraLoaderModelOnly applies every key, as our loader does


def _latent(server, history, node_id):
    from safetensors.torch import load_file

    name = history["outputs"][node_id]["latents"][0]["filename"]
    return load_file(os.path.join(server.output, name))["latent_tensor"]


def test_generator_loader_full_files_missing_recipes_and_wrong_sizes(server):
    import torch

    from sgmd.lora import merge_lora_state_dict
    from sgmd.weights import read_safetensors, write_safetensors

    loras = os.path.join(server.base, "loras")
    base, _ = read_safetensors(server.models["teacher"])
    lora, meta = read_safetensors(server.models["lora"])
    write_safetensors(os.path.join(loras, "t_full.safetensors"), merge_lora_state_dict(base, lora), meta)
    write_safetensors(os.path.join(loras, "t_no_recipe.safetensors"), lora)
    wrong = {k: torch.zeros(4, 256)  # a LoRA made for a dim-256 model if k.endswith("down.weight") else torch.zeros(256, 4)
             for k in lora if k.startswith("diffusion_model.blocks.0.") and k.endswith("weight")}
    write_safetensors(os.path.join(loras, "t_wrong_size.safetensors"), wrong, meta)

    def sample(generator_name, prefix):
        return {
            "1": {"class_type": "UNETLoader", "inputs": {"unet_name": TEACHER, "weight_dtype": "default"}},
            "2": {"class_type": "SGMDGeneratorLoader", "inputs": {"model": ["1", 0], "generator_name": generator_name,
                                                                 "strength": 1.0}},
            "3": {"class_type": "SGMDToyTextEncode", "inputs": {"text": "a cyan circle"}},
            "4": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 64, "height": 64, "length": 5,
                                                                     "batch_size": 1}},
            "5": {"class_type": "SGMDVideoSampler", "inputs": {"model": ["2", 0], "positive": ["3", 0],
                                                              "latent": ["4", 0], "seed": 3, "recipe": ["2", 3]}},
            "6": {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": prefix}},
        }

    results = {}
    for name in (LORA, "t_full.safetensors", "t_no_recipe.safetensors"):
        history = server.run(sample(name, "gen_" + name.split(".")[0]))
        _succeeded(history)
        results[name] = _latent(server, history, "6")
    assert float((results[LORA] - results["t_full.safetensors"]).abs().max()) < 1e-4
    assert float((results[LORA] - results["t_no_recipe.safetensors"]).abs().max()) < 1e-6  # default = shipped recipe
    (error,) = _errors(server.run(sample("t_wrong_size.safetensors", "never")))
    assert "does not fit this model" in error["exception_message"] and error["node_type"] == "SGMDGeneratorLoader"


def test_a_user_error_is_one_line_and_the_server_survives(server):
    bad = {
        "1": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 32, "height": 32, "length": 1, "batch_size": 1}},
        "2": {"class_type": "SGMDSigmas", "inputs": {"timesteps": "250, 750", "shift": 5.0, "warp": True}},
        "3": {"class_type": "SGMDSampler", "inputs": {"update_rule": "renoise"}},
        "4": {"class_type": "SamplerCustom", "inputs": {"model": ["9", 0], "add_noise": True, "noise_seed": 0, "cfg": 1.0,
                                                       "positive": ["8", 0], "negative": ["8", 0], "sampler": ["3", 0],
                                                       "sigmas": ["2", 0], "latent_image": ["1", 0]}},
        "8": {"class_type": "SGMDToyTextEncode", "inputs": {"text": "a red circle"}},
        "9": {"class_type": "UNETLoader", "inputs": {"unet_name": TEACHER, "weight_dtype": "default"}},
        "10": {"class_type": "SaveLatent", "inputs": {"samples": ["4", 0], "filename_prefix": "sgmd_never"}},
    }
    history = server.run(bad)
    (error,) = _errors(history)
    assert error["node_type"] == "SGMDSigmas" and "strictly decreasing" in error["exception_message"]
    assert error["exception_message"].strip().count("\n") == 0
    code, _ = server.request("/system_stats")
    assert code == 200
