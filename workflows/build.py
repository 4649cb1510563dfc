"""Build the pack's ComfyUI workflows (UI / litegraph format, version 0.4) from declarative graphs.

    python workflows/build.py            # write workflows/*.json
    python workflows/build.py --check    # exit 1 if a written file differs from what this builds

Widget values are laid out from the node schemas recorded from a real ComfyUI
(`tests/data/comfy_object_info.json` for core nodes, `tests/data/sgmd_object_info.json` for ours),
in schema order, with the extra "fixed" value after a seed widget: the same rule the frontend uses.
Unset widgets take the schema default. `workflows/` is the committed source; ComfyUI lists and
serves it as the pack's templates (see README in this folder)."""
from __future__ import annotations

import json
import os
import sys
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SCHEMAS = [os.path.join(ROOT, "tests", "data", "comfy_object_info.json"),
           os.path.join(ROOT, "tests", "data", "sgmd_object_info.json")]
WIDGETS = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
NOTE_COLOR, NOTE_BG = "#432", "#653"
HF = "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files"
WAN_FILES = {
    "diffusion_models": "wan2.1_t2v_1.3B_fp16.safetensors",
    "text_encoders": "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
    "vae": "wan_2.1_vae.safetensors",
}


def wan_model(directory: str) -> dict:
    name = WAN_FILES[directory]
    return {"name": name, "url": f"{HF}/{directory}/{name}?download=true", "directory": directory}


def load_schemas() -> dict:
    info = {}
    for path in SCHEMAS:
        with open(path, encoding="utf-8") as f:
            info.update({k: v for k, v in json.load(f).items() if not k.startswith("_")})
    return info


def _kind(spec) -> str:
    return spec[0] if isinstance(spec[0], str) else "COMBO"


def _opts(spec) -> dict:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def _options(spec) -> list:
    return spec[0] if not isinstance(spec[0], str) else _opts(spec).get("options", [])


class Node:
    def __init__(self, graph, nid, type_, pos, size, widgets, title, models, mode, color):
        self.graph, self.id, self.type, self.pos, self.size = graph, nid, type_, list(pos), list(size)
        self.widgets_in, self.title, self.models, self.mode, self.color = widgets, title, models, mode, color
        self.inputs, self.outputs, self.widgets_values = [], [], []

    def out(self, name: str):
        return (self, name)


class Graph:
    """Nodes, links, notes and groups; `to_json()` gives the litegraph document."""

    def __init__(self, schemas: dict, seed_name: str):
        self.schemas = schemas
        self.nodes: list[Node] = []
        self.links: list[list] = []
        self.groups: list[dict] = []
        self.id = str(uuid.uuid5(uuid.NAMESPACE_URL, "sgmd/" + seed_name))  # stable across builds

    def node(self, type_, pos, widgets=None, size=None, title=None, models=None, mode=0, color=None) -> Node:
        schema = self.schemas.get(type_)
        if schema is None:
            raise KeyError(f"no schema for {type_}: record it into tests/data first")
        n = Node(self, len(self.nodes) + 1, type_, pos, size or (320, 0), dict(widgets or {}), title, models, mode,
                 color)
        spec = {**schema["input"].get("required", {}), **schema["input"].get("optional", {})}
        order = schema["input_order"].get("required", []) + schema["input_order"].get("optional", [])
        unknown = set(n.widgets_in) - set(order)
        if unknown:
            raise KeyError(f"{type_} has no input(s) {sorted(unknown)}")
        for name in order:
            s = spec[name]
            kind, opts = _kind(s), _opts(s)
            if kind in WIDGETS and not opts.get("forceInput"):
                if name in n.widgets_in:
                    value = n.widgets_in[name]
                elif "default" in opts:
                    value = opts["default"]
                elif kind == "COMBO" and _options(s):
                    value = _options(s)[0]
                else:
                    raise KeyError(f"{type_}.{name} needs a value (no default)")
                n.widgets_values.append(value)
                if opts.get("control_after_generate"):
                    n.widgets_values.append("fixed")
            else:
                n.inputs.append({"name": name, "type": kind, "link": None})
        n.outputs = [{"name": name, "type": t, "links": [], "slot_index": i}
                     for i, (name, t) in enumerate(zip(schema["output_name"], schema["output"]))]
        if not size:
            rows = max(len(n.inputs), len(n.outputs)) + len(n.widgets_values)
            tall = sum(100 for name in order if _opts(spec[name]).get("multiline"))
            n.size = [size[0] if size else 320, 46 + 24 * rows + tall]
        self.nodes.append(n)
        return n

    def connect(self, src, dst: Node, input_name: str) -> None:
        node, output_name = src
        out = next(i for i, o in enumerate(node.outputs) if o["name"] == output_name)
        slot = next(i for i, s in enumerate(dst.inputs) if s["name"] == input_name)
        link_id = len(self.links) + 1
        kind = node.outputs[out]["type"]
        self.links.append([link_id, node.id, out, dst.id, slot, kind])
        node.outputs[out]["links"].append(link_id)
        dst.inputs[slot]["link"] = link_id

    def note(self, text: str, pos, size=(360, 160)) -> Node:
        n = Node(self, len(self.nodes) + 1, "MarkdownNote", pos, size, {}, "Note", None, 0, None)
        n.widgets_values = [text]
        self.nodes.append(n)
        return n

    def group(self, title: str, members: list[Node], color: str = "#3f789e") -> None:
        x0 = min(n.pos[0] for n in members) - 20
        y0 = min(n.pos[1] for n in members) - 60
        x1 = max(n.pos[0] + n.size[0] for n in members) + 20
        y1 = max(n.pos[1] + n.size[1] for n in members) + 20
        self.groups.append({"id": len(self.groups) + 1, "title": title, "bounding": [x0, y0, x1 - x0, y1 - y0],
                            "color": color, "font_size": 24, "flags": {}})

    def _order(self) -> dict:
        """Execution order: a topological sort (notes first, as the frontend does)."""
        deps = {n.id: {link[1] for link in self.links if link[3] == n.id} for n in self.nodes}
        order, done = {}, set()
        while len(done) < len(self.nodes):
            ready = [n.id for n in self.nodes if n.id not in done and deps[n.id] <= done]
            for nid in ready:
                order[nid] = len(order)
                done.add(nid)
        return order

    def to_json(self) -> dict:
        order = self._order()
        nodes = []
        for n in self.nodes:
            d = {"id": n.id, "type": n.type, "pos": n.pos, "size": n.size, "flags": {}, "order": order[n.id],
                 "mode": n.mode, "inputs": n.inputs,
                 "outputs": [{**o, "links": o["links"] or None} for o in n.outputs]}
            if n.title:
                d["title"] = n.title
            props = {} if n.type in ("Note", "MarkdownNote") else {"Node name for S&R": n.type}
            if n.models:
                props["models"] = n.models
            d["properties"] = props
            d["widgets_values"] = n.widgets_values
            if n.type in ("Note", "MarkdownNote"):
                d["color"], d["bgcolor"] = NOTE_COLOR, NOTE_BG
            elif n.color:
                d["color"], d["bgcolor"] = n.color
            nodes.append(d)
        return {"id": self.id, "revision": 0, "last_node_id": len(self.nodes), "last_link_id": len(self.links),
                "nodes": nodes, "links": self.links, "groups": self.groups, "config": {},
                "extra": {"ds": {"scale": 0.8, "offset": [40, 80]}}, "version": 0.4}


# ---------------------------------------------------------------------------------------------
# the workflows

TINY_TEACHER = "sgmd_tiny_teacher.safetensors"
TINY_LORA = "sgmd_tiny_4step_lora.safetensors"
TOY_PROMPT = "a red circle moving right slowly"
# A seed where the shipped teacher (v26, motion guidance 0.25) and 4-step LoRA both get every attribute of
# TOY_PROMPT right (sgmd.metrics): 29 of seeds 40-71 do (teacher alone 30, student alone 29; with v23 and its LoRA
# 24, 32 and 24; with v11 and its LoRA 18, 22 and 19).
SEED = 41
TEACHER_CFG = 3.0  # sgmd.samplers.DEFAULT_GUIDANCE (tests/test_workflows.py holds them equal; no torch import here)
TEACHER_MOTION = 0.25  # what the shipped teacher file records (tests/test_workflows.py holds them equal)


def t2v_4step(s: dict) -> Graph:
    g = Graph(s, "sgmd_4step_t2v")
    unet = g.node("UNETLoader", (0, 80), {"unet_name": WAN_FILES["diffusion_models"]},
                  models=[wan_model("diffusion_models")])
    clip = g.node("CLIPLoader", (0, 260), {"clip_name": WAN_FILES["text_encoders"], "type": "wan"},
                  models=[wan_model("text_encoders")])
    vae = g.node("VAELoader", (0, 440), {"vae_name": WAN_FILES["vae"]}, models=[wan_model("vae")])
    n_models = g.note("**Step 1 - models.** The Wan 2.1 T2V 1.3B files download from the links stored in these "
                      "loaders (Comfy-Org repackaged): diffusion model -> `models/diffusion_models`, umT5 text "
                      "encoder -> `models/text_encoders`, VAE -> `models/vae`.", (0, 560), (320, 170))
    gen = g.node("SGMDGeneratorLoader", (400, 80), {"generator_name": "sgmd_wan2.1_t2v_1.3B_lora.safetensors"})
    n_gen = g.note("**Step 2 - generator.** An SGMD LoRA distilled from this teacher (put it in `models/loras`; "
                   "train one with `training/run.py --teacher .../wan2.1_t2v_1.3B_fp16.safetensors` or the SGMD "
                   "Train nodes). The loader applies it natively and reads its recipe: the sigmas and the sampler "
                   "it was trained for.", (400, 300), (340, 190))
    pos = g.node("CLIPTextEncode", (820, 80), {"text": "A red fox runs through fresh snow in a pine forest, morning "
                                                      "light, cinematic"}, size=(400, 0))
    latent = g.node("EmptyHunyuanLatentVideo", (820, 330), {"width": 832, "height": 480, "length": 33})
    n_prompt = g.note("**Step 3 - prompt and size.** 832x480, 33 frames. No negative prompt: a distilled "
                      "generator samples at CFG 1 (one model pass per step).", (820, 520), (400, 120))
    sampler = g.node("SamplerCustom", (1300, 80), {"add_noise": True, "noise_seed": SEED, "cfg": 1.0})
    n_sample = g.note("**Step 4 - 4 steps.** `SamplerCustom` with the generator's own sigmas and sampler, CFG 1. "
                      "(`SGMD Video Sampler` does the same in one node.) The negative input is the positive: "
                      "unused at CFG 1.", (1300, 420), (340, 150))
    decode = g.node("VAEDecode", (1720, 80))
    video = g.node("CreateVideo", (1720, 220), {"fps": 16.0})
    save = g.node("SaveVideo", (1720, 380), {"filename_prefix": "video/sgmd_4step"})
    g.connect(unet.out("MODEL"), gen, "model")
    g.connect(clip.out("CLIP"), pos, "clip")
    g.connect(gen.out("model"), sampler, "model")
    g.connect(pos.out("CONDITIONING"), sampler, "positive")
    g.connect(pos.out("CONDITIONING"), sampler, "negative")
    g.connect(gen.out("sampler"), sampler, "sampler")
    g.connect(gen.out("sigmas"), sampler, "sigmas")
    g.connect(latent.out("LATENT"), sampler, "latent_image")
    g.connect(sampler.out("output"), decode, "samples")
    g.connect(vae.out("VAE"), decode, "vae")
    g.connect(decode.out("IMAGE"), video, "images")
    g.connect(video.out("VIDEO"), save, "video")
    g.group("Step 1 - Wan 2.1 models", [unet, clip, vae, n_models])
    g.group("Step 2 - SGMD generator", [gen, n_gen])
    g.group("Step 3 - prompt and size", [pos, latent, n_prompt])
    g.group("Step 4 - sample 4 steps, decode, save", [sampler, n_sample, decode, video, save])
    return g


def tiny_cpu(s: dict) -> Graph:
    g = Graph(s, "sgmd_4step_tiny_cpu")
    unet = g.node("UNETLoader", (0, 80), {"unet_name": TINY_TEACHER})
    gen = g.node("SGMDGeneratorLoader", (0, 220), {"generator_name": TINY_LORA})
    n_models = g.note("**Step 1 - shipped tiny models.** A tiny Wan 2.1 teacher trained on the toy task (coloured "
                      "shapes moving on black) and its SGMD 4-step LoRA, both in this pack's `models/` folder. "
                      "Runs on a CPU in seconds; no downloads.", (0, 440), (320, 170))
    text = g.node("SGMDToyTextEncode", (400, 80), {"text": TOY_PROMPT}, size=(360, 0))
    latent = g.node("EmptyHunyuanLatentVideo", (400, 320), {"width": 128, "height": 128, "length": 29})
    n_prompt = g.note("**Step 2 - prompt and size.** The toy grammar: a {red, green, blue, yellow, magenta, cyan, "
                      "white} {circle, square} [moving {left, right, up, down}] [slowly, quickly]. 128x128 and 29 "
                      "frames give the tiny model's latent [1, 16, 8, 16, 16].", (400, 500), (360, 170))
    sampler = g.node("SGMDVideoSampler", (840, 80), {"seed": SEED})
    decode = g.node("SGMDToyDecode", (840, 320))
    video = g.node("CreateVideo", (1240, 80), {"fps": 8.0})
    save = g.node("SaveVideo", (1240, 240), {"filename_prefix": "video/sgmd_tiny_4step"})
    n_out = g.note("**Step 3 - 4 steps and decode.** `SGMD Video Sampler` runs the generator's recipe (4 euler "
                   "steps, CFG 1); the toy codec turns latents into frames (no VAE).", (840, 440), (360, 130))
    g.connect(unet.out("MODEL"), gen, "model")
    g.connect(gen.out("model"), sampler, "model")
    g.connect(gen.out("recipe"), sampler, "recipe")
    g.connect(text.out("conditioning"), sampler, "positive")
    g.connect(latent.out("LATENT"), sampler, "latent")
    g.connect(sampler.out("latent"), decode, "latent")
    g.connect(decode.out("images"), video, "images")
    g.connect(video.out("VIDEO"), save, "video")
    g.group("Step 1 - tiny teacher + SGMD 4-step LoRA", [unet, gen, n_models])
    g.group("Step 2 - prompt and size", [text, latent, n_prompt])
    g.group("Step 3 - sample, decode, save", [sampler, decode, video, save, n_out])
    return g


def distill_tiny(s: dict) -> Graph:
    g = Graph(s, "sgmd_distill_tiny")
    teacher = g.node("SGMDTeacher", (0, 80), {"teacher_name": TINY_TEACHER})
    fake = g.node("SGMDFakeScore", (0, 200), {"init": "teacher"})
    gen = g.node("SGMDGenerator", (0, 360), {"init": "teacher"})
    prompts = g.node("SGMDPromptSet", (0, 560), {"prompts": "", "encoder": "toy"})
    n_in = g.note("**Step 1 - what to distil.** The shipped tiny teacher; generator and fake score start as the "
                  "teacher (zero LoRAs); empty prompts = the toy task's own training prompts.", (0, 820), (320, 140))
    start = g.node("SGMDTrainStart", (420, 80), {"objective": "sgmd", "iterations": 300, "lora_rank": 64,
                                                "job_name": "sgmd_tiny", "device": "auto", "resume": False,
                                                "extra_options": "checkpoint_every: 25\nsample_every: 50"},
                   size=(360, 0))
    n_start = g.note("**Step 2 - background job.** Queue once: the job starts in its own process and the prompt "
                     "finishes at once. Files: `output/sgmd_jobs/sgmd_tiny/`. It runs `training/run.py` with the "
                     "bare command's recipe; on a CPU it leaves one core to ComfyUI, so it takes longer than the "
                     "command's 8-9 minutes on 2 cores. When it finishes, the LoRA is copied to "
                     "`models/loras/sgmd_sgmd_tiny.safetensors` (use it with "
                     "SGMD Generator Loader). Queueing again with the same settings only attaches to the job; to "
                     "continue a stopped job, turn resume on.", (420, 640), (360, 220))
    status = g.node("SGMDTrainStatus", (860, 80), size=(520, 0))
    n_status = g.note("**Step 3 - watch.** Queue again to refresh: state, losses, time left, the latest samples "
                      "(a row per clip, frames left to right) and a loss plot. Live progress also arrives as "
                      "`sgmd.progress` websocket events.", (860, 300), (420, 130))
    stop = g.node("SGMDTrainStop", (860, 480), mode=2)
    n_stop = g.note("**Stop (muted).** Unmute (Ctrl+M) and queue to stop the job: it finishes the iteration, "
                    "writes a checkpoint and exits. Mute it again afterwards.", (860, 600), (420, 110))
    for node, name in ((teacher, "teacher"), (fake, "fake_score"), (gen, "generator"), (prompts, "prompts")):
        g.connect(node.out(name), start, name)
    g.connect(start.out("job"), status, "job")
    g.connect(start.out("job"), stop, "job")
    g.group("Step 1 - teacher, initialisation, prompts", [teacher, fake, gen, prompts, n_in])
    g.group("Step 2 - start the job", [start, n_start])
    g.group("Step 3 - status (and stop)", [status, n_status, stop, n_stop])
    return g


def teacher_vs_4step(s: dict) -> Graph:
    g = Graph(s, "sgmd_teacher_vs_4step")
    unet = g.node("UNETLoader", (0, 80), {"unet_name": TINY_TEACHER})
    text = g.node("SGMDToyTextEncode", (0, 220), {"text": TOY_PROMPT}, size=(340, 0))
    empty = g.node("SGMDToyTextEncode", (0, 420), {"text": ""}, size=(340, 0), title="Empty prompt (uncond)")
    latent = g.node("EmptyHunyuanLatentVideo", (0, 620), {"width": 128, "height": 128, "length": 29})
    n_in = g.note("**Same prompt, same seed, same size** for both. The empty prompt is the teacher's "
                  "unconditional input for CFG.", (0, 820), (340, 110))
    shift = g.node("ModelSamplingSD3", (440, 80), {"shift": 5.0})
    motion = g.node("SGMDMotionGuidance", (440, 200), {"scale": TEACHER_MOTION, "keep_position_code": True})
    ksampler = g.node("KSampler", (440, 340), {"seed": SEED, "steps": 50, "cfg": TEACHER_CFG, "sampler_name": "euler",
                                               "scheduler": "simple", "denoise": 1.0})
    t_decode = g.node("SGMDToyDecode", (440, 680))
    n_teacher = g.note(f"**Teacher: 50 steps, CFG {TEACHER_CFG:g}, motion guidance {TEACHER_MOTION:g}, shift 5** (150 model "
                       "passes): the settings the teacher's figures are measured with (docs/tiny-model.md).", (440, 800),
                       (320, 110))
    gen = g.node("SGMDGeneratorLoader", (860, 80), {"generator_name": TINY_LORA})
    student = g.node("SGMDVideoSampler", (860, 320), {"seed": SEED})
    s_decode = g.node("SGMDToyDecode", (860, 560))
    n_student = g.note("**SGMD: 4 steps, CFG 1** (4 model passes). Keep its seed equal to the KSampler's.",
                       (860, 680), (320, 90))
    stitch = g.node("ImageStitch", (1260, 80), {"direction": "right", "match_image_size": True, "spacing_width": 8,
                                                "spacing_color": "white"})
    video = g.node("CreateVideo", (1260, 300), {"fps": 8.0})
    save = g.node("SaveVideo", (1260, 460), {"filename_prefix": "video/sgmd_teacher_vs_4step"})
    n_out = g.note("**Left: teacher (50 steps). Right: SGMD (4 steps).**", (1260, 640), (320, 70))
    g.connect(unet.out("MODEL"), shift, "model")
    g.connect(shift.out("MODEL"), motion, "model")
    g.connect(motion.out("model"), ksampler, "model")
    g.connect(text.out("conditioning"), ksampler, "positive")
    g.connect(empty.out("conditioning"), ksampler, "negative")
    g.connect(latent.out("LATENT"), ksampler, "latent_image")
    g.connect(ksampler.out("LATENT"), t_decode, "latent")
    g.connect(unet.out("MODEL"), gen, "model")
    g.connect(gen.out("model"), student, "model")
    g.connect(gen.out("recipe"), student, "recipe")
    g.connect(text.out("conditioning"), student, "positive")
    g.connect(latent.out("LATENT"), student, "latent")
    g.connect(student.out("latent"), s_decode, "latent")
    g.connect(t_decode.out("images"), stitch, "image1")
    g.connect(s_decode.out("images"), stitch, "image2")
    g.connect(stitch.out("IMAGE"), video, "images")
    g.connect(video.out("VIDEO"), save, "video")
    g.group("Inputs", [unet, text, empty, latent, n_in])
    g.group("Teacher - 50 steps, CFG 3", [shift, ksampler, t_decode, n_teacher])
    g.group("SGMD - 4 steps", [gen, student, s_decode, n_student])
    g.group("Side by side", [stitch, video, save, n_out])
    return g


WORKFLOWS = {
    "sgmd_4step_t2v.json": t2v_4step,
    "sgmd_4step_tiny_cpu.json": tiny_cpu,
    "sgmd_distill_tiny.json": distill_tiny,
    "sgmd_teacher_vs_4step.json": teacher_vs_4step,
}


def build() -> dict[str, str]:
    """File name -> JSON text."""
    schemas = load_schemas()
    return {name: json.dumps(make(schemas).to_json(), indent=1) + "\n" for name, make in WORKFLOWS.items()}


def main(argv) -> int:
    built = build()
    if "--check" in argv:
        stale = []
        for name, text in built.items():
            path = os.path.join(HERE, name)
            if not os.path.isfile(path) or open(path, encoding="utf-8").read() != text:
                stale.append(name)
        if stale:
            print("stale (run python workflows/build.py): " + ", ".join(stale))
            return 1
        return 0
    for name, text in built.items():
        with open(os.path.join(HERE, name), "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote workflows/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
