"""Loaders: the distilled generator for sampling, and the inputs of a distillation job (teacher,
fake-score and generator initialisation, prompt set)."""
from __future__ import annotations

import hashlib
import json
import logging
import os

from comfy_api.latest import io

from .common import (CATEGORY, FakeScore, Generator, Prompts, Recipe, Teacher, UserError, model_files, model_path,
                     user_errors)

GENERATOR_FOLDERS = ("loras", "sgmd")
NONE = "none"
log = logging.getLogger("sgmd")


class SGMDGeneratorLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SGMDGeneratorLoader", display_name="SGMD Generator Loader", category=f"{CATEGORY}/loaders",
            description="Apply a distilled generator to a Wan 2.1 model with ComfyUI's native LoRA machinery (a LoRA "
                        "file) or weight replacement (a full generator file), and read its sampling recipe from the "
                        "file's metadata: sigmas + sampler for SamplerCustom, or the recipe for SGMD Video Sampler.",
            inputs=[
                io.Model.Input("model", tooltip="The Wan 2.1 teacher the generator was distilled from (UNETLoader)."),
                io.Combo.Input("generator_name", options=model_files(*GENERATOR_FOLDERS),
                               tooltip="Generator file from models/loras or models/sgmd: an SGMD LoRA "
                                       "(generator_lora.safetensors) or a full generator (generator.safetensors)."),
                io.Float.Input("strength", default=1.0, min=-10.0, max=10.0, step=0.01,
                               tooltip="LoRA strength (1 = as trained). A full generator file needs 1."),
            ],
            outputs=[
                io.Model.Output(display_name="model"),
                io.Sigmas.Output(display_name="sigmas", tooltip="The recipe's noise levels (for SamplerCustom)."),
                io.Sampler.Output(display_name="sampler", tooltip="The recipe's update rule (for SamplerCustom)."),
                Recipe.Output(display_name="recipe", tooltip="For SGMD Video Sampler."),
            ],
        )

    @classmethod
    def execute(cls, model, generator_name: str, strength: float) -> io.NodeOutput:
        import torch

        import comfy.utils
        from sgmd.recipe import SamplingRecipe

        from .sampling import default_recipe, make_sampler

        path = model_path(generator_name, *GENERATOR_FOLDERS)
        with user_errors(generator_name):
            sd, meta = comfy.utils.load_torch_file(path, safe_load=True, return_metadata=True)
            recipe = SamplingRecipe.from_metadata(meta)
        if recipe is None:
            recipe = default_recipe()
            log.warning("[SGMD] %s has no sampling recipe in its metadata: using the SGMD default (4 steps, "
                        "timesteps 1000/750/500/250, shift 5, euler); results are wrong if it was trained otherwise",
                        generator_name)
        if _is_full_wan(sd):
            patches = _full_patches(model, sd, strength, generator_name)
        else:
            patches = _lora_patches(model, sd, generator_name)
        patched = model.clone()
        patched.add_patches(patches, strength)
        sigmas = torch.tensor(recipe.sigmas, dtype=torch.float32)
        return io.NodeOutput(patched, sigmas, make_sampler(recipe.update_rule), recipe)


def _is_full_wan(sd: dict) -> bool:
    from sgmd.wan import is_wan_state_dict, strip_prefix

    return is_wan_state_dict(strip_prefix(sd))


def _full_patches(model, sd: dict, strength: float, name: str) -> dict:
    """A complete Wan state dict -> "set" patches on every weight (shapes checked)."""
    from sgmd.wan import strip_prefix

    if strength != 1.0:
        raise UserError(f"{name} is a full generator (it replaces the weights): set strength to 1.0")
    own = model.model.state_dict()
    patches = {}
    for key, value in strip_prefix(sd).items():
        target = "diffusion_model." + key
        if target not in own:
            raise UserError(f"{name} does not fit this model: it has {key!r}, the model has no such weight "
                            "(is the generator for another model?)")
        if tuple(own[target].shape) != tuple(value.shape):
            raise UserError(f"{name} does not fit this model: {key} is {list(value.shape)}, the model's is "
                            f"{list(own[target].shape)} (generator for another model size?)")
        patches[target] = ("set", (value,))
    return patches


def _lora_patches(model, sd: dict, name: str) -> dict:
    """LoRA tensors -> native patches; every key must land on a weight of the same shape."""
    import comfy.lora
    import comfy.lora_convert

    lora = comfy.lora_convert.convert_lora(sd)
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    patches = comfy.lora.load_lora(lora, key_map, log_missing=False)
    if not patches:
        raise UserError(f"{name} does not fit this model: none of its {len(lora)} keys matches a layer (expected "
                        "diffusion_model.blocks.N....lora_down/lora_up.weight for Wan 2.1)")
    used = [base for base, target in key_map.items() if target in patches]
    unmatched = [k for k in lora if not any(k.startswith(base + ".") for base in used)]
    if unmatched:
        raise UserError(f"{name} does not fit this model: {len(unmatched)} of its keys match no layer (e.g. "
                        f"{unmatched[0]}); is it for another model?")
    own = model.model.state_dict()
    for target, adapter in patches.items():
        weights = getattr(adapter, "weights", None)
        if getattr(adapter, "name", "") == "lora" and weights is not None:
            up, down = weights[0], weights[1]
            want = tuple(own[target].shape)
            if len(want) == 2 and (up.shape[0], down.shape[1]) != want:
                raise UserError(f"{name} does not fit this model: layer {target[len('diffusion_model.'):]} is "
                                f"{up.shape[0]}x{down.shape[1]} in the LoRA but {want[0]}x{want[1]} in the model "
                                "(LoRA for another model size?)")
    return patches


# ---------------------------------------------------------------------------------------------
# distillation inputs


class SGMDTeacher(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SGMDTeacher", display_name="SGMD Teacher", category=f"{CATEGORY}/training",
            description="Pick the teacher of a distillation job: a Wan 2.1 text-to-video file (fp32/bf16/fp16). Only "
                        "its header is read here (architecture check); the job loads the weights itself.",
            inputs=[io.Combo.Input("teacher_name", options=model_files("diffusion_models"),
                                   tooltip="From models/diffusion_models; sgmd_tiny_teacher.safetensors is the "
                                           "shipped tiny teacher (CPU-friendly).")],
            outputs=[Teacher.Output(display_name="teacher")],
        )

    @classmethod
    def execute(cls, teacher_name: str) -> io.NodeOutput:
        from sgmd.weights import read_wan_config

        path = model_path(teacher_name, "diffusion_models")
        with user_errors(teacher_name):
            cfg, _ = read_wan_config(path)
        summary = f"Wan 2.1 T2V, dim {cfg.dim}, {cfg.num_layers} blocks, ffn {cfg.ffn_dim}"
        return io.NodeOutput({"path": path, "name": teacher_name, "config": cfg.to_dict(), "summary": summary})


def _job_checkpoints(job: str) -> str:
    """A job name (under output/sgmd_jobs) or a folder -> the folder that holds its checkpoints."""
    import folder_paths
    from training.checkpoint import list_checkpoints

    job = job.strip()
    if not job:
        raise UserError("resume needs a job: its name (a folder under output/sgmd_jobs) or a folder path")
    folder = job if os.path.isabs(job) else os.path.join(folder_paths.get_output_directory(), "sgmd_jobs", job)
    if os.path.basename(os.path.normpath(folder)) == "checkpoints":
        folder = os.path.dirname(os.path.normpath(folder))
    if not list_checkpoints(folder):
        raise UserError(f"no checkpoint in {folder}/checkpoints to resume from")
    return folder


class SGMDFakeScore(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SGMDFakeScore", display_name="SGMD Fake Score", category=f"{CATEGORY}/training",
            description="How the fake score (the critic that tracks the generator's distribution) starts: as a copy of "
                        "the teacher (a zero LoRA on it), or from a job's newest checkpoint.",
            inputs=[
                io.Combo.Input("init", options=["teacher", "resume"], default="teacher",
                               tooltip="teacher: start from the teacher. resume: from a job checkpoint (then the "
                                       "generator must resume from the same job)."),
                io.String.Input("resume_job", default="", optional=True,
                                tooltip="For resume: a job name (folder under output/sgmd_jobs) or a job folder path."),
            ],
            outputs=[FakeScore.Output(display_name="fake_score")],
        )

    @classmethod
    def execute(cls, init: str, resume_job: str = "") -> io.NodeOutput:
        if init == "resume":
            return io.NodeOutput({"init": "resume", "checkpoints": _job_checkpoints(resume_job)})
        return io.NodeOutput({"init": "teacher"})


class SGMDGenerator(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SGMDGenerator", display_name="SGMD Generator Init", category=f"{CATEGORY}/training",
            description="How the generator starts: as the teacher (a zero LoRA), from an earlier generator file, or "
                        "from a job's newest checkpoint.",
            inputs=[
                io.Combo.Input("init", options=["teacher", "file", "resume"], default="teacher",
                               tooltip="teacher: start from the teacher. file: from generator_file. resume: from a "
                                       "job checkpoint (with the fake score)."),
                io.Combo.Input("generator_file", options=[NONE] + model_files(*GENERATOR_FOLDERS), default=NONE,
                               optional=True, tooltip="For init = file: an SGMD LoRA (same rank and layers as this "
                                                      "job) or a full generator from models/loras or models/sgmd."),
                io.String.Input("resume_job", default="", optional=True,
                                tooltip="For resume: a job name (folder under output/sgmd_jobs) or a job folder path."),
            ],
            outputs=[Generator.Output(display_name="generator")],
        )

    @classmethod
    def execute(cls, init: str, generator_file: str = NONE, resume_job: str = "") -> io.NodeOutput:
        if init == "resume":
            return io.NodeOutput({"init": "resume", "checkpoints": _job_checkpoints(resume_job)})
        if init == "file":
            if generator_file in ("", NONE):
                raise UserError("init = file needs a generator_file")
            return io.NodeOutput({"init": "file", "path": model_path(generator_file, *GENERATOR_FOLDERS)})
        return io.NodeOutput({"init": "teacher"})


class SGMDPromptSet(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SGMDPromptSet", display_name="SGMD Prompt Set", category=f"{CATEGORY}/training",
            description="Training prompts of a distillation job, encoded once into an embeddings file (context "
                        "[N, L, 4096], uncond = the empty prompt). Empty text: the toy task's own prompts (for the "
                        "tiny teacher).",
            inputs=[
                io.String.Input("prompts", multiline=True, default="",
                                tooltip="One prompt per line. Leave empty to train on the toy task's prompts."),
                io.Combo.Input("encoder", options=["toy", "clip"], default="toy",
                               tooltip="toy: SGMD's toy text encoder (what the tiny teacher knows). clip: the "
                                       "connected native text encoder (Load CLIP, type wan: umT5-XXL) for a real Wan "
                                       "teacher."),
                io.Clip.Input("clip", optional=True, tooltip="Text encoder for encoder = clip."),
            ],
            outputs=[Prompts.Output(display_name="prompts")],
        )

    @classmethod
    def execute(cls, prompts: str, encoder: str, clip=None) -> io.NodeOutput:
        import folder_paths
        import torch

        from sgmd import text
        from sgmd.weights import write_safetensors

        lines = [p.strip() for p in prompts.splitlines() if p.strip()]
        if not lines:
            return io.NodeOutput({"path": "", "prompts": [], "encoder": "toy task"})
        if encoder == "clip":
            if clip is None:
                raise UserError("encoder = clip needs a CLIP input (Load CLIP with type wan)")
            rows = [_encode_clip(clip, p) for p in lines + [""]]
            width = max(r.shape[1] for r in rows)  # pad to the longest sequence (zeros, as the empty prompt)
            rows = [torch.nn.functional.pad(r, (0, 0, 0, width - r.shape[1])) for r in rows]
            context, uncond = torch.cat(rows[:-1]), rows[-1]
        else:
            context, uncond = text.encode_text(lines), text.encode_text([""])
        key = hashlib.sha256(json.dumps([encoder, lines]).encode()).hexdigest()[:16]
        path = os.path.join(folder_paths.get_output_directory(), "sgmd_prompts", f"{encoder}_{key}.safetensors")
        with user_errors("SGMD Prompt Set"):
            write_safetensors(path, {"context": context.float(), "uncond": uncond.float()},
                              {"prompts": json.dumps(lines), "encoder": encoder})
        return io.NodeOutput({"path": path, "prompts": lines, "encoder": encoder})


def _encode_clip(clip, prompt: str):
    cond = clip.encode_from_tokens(clip.tokenize(prompt))
    return cond[0] if isinstance(cond, (tuple, list)) else cond


NODES = [SGMDGeneratorLoader, SGMDTeacher, SGMDFakeScore, SGMDGenerator, SGMDPromptSet]
