"""Nodes that need no ComfyUI machinery, executed against the API double: schedule, toy text
encoder and decoder, the prompt-set file (read back by the trainer's own reader), the training
initialisation rules and the status pictures."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

from stub_pack import PACKAGE, REPO, stub_pack


@pytest.fixture(scope="module")
def pack():
    with stub_pack() as (classes, io):
        nodes = {c.define_schema().node_id: c for c in classes}
        yield nodes, io, sys.modules


def test_sigmas_node_gives_the_default_student_schedule(pack):
    nodes, _, _ = pack
    out = nodes["SGMDSigmas"].execute(timesteps="1000, 750, 500, 250", shift=5.0, warp=True)
    assert torch.allclose(out[0], torch.tensor([1.0, 0.9375, 0.8333333, 0.625, 0.0]))
    with pytest.raises(ValueError, match="comma-separated"):
        nodes["SGMDSigmas"].execute(timesteps="1000, abc", shift=5.0, warp=True)
    with pytest.raises(ValueError, match="strictly decreasing"):
        nodes["SGMDSigmas"].execute(timesteps="500, 750", shift=5.0, warp=True)


def test_toy_text_encode_and_decode(pack):
    nodes, _, _ = pack
    cond = nodes["SGMDToyTextEncode"].execute(text="a red circle")[0]
    assert cond[0][0].shape == (1, 16, 4096) and cond[0][1] == {}
    frames = nodes["SGMDToyDecode"].execute(latent={"samples": torch.zeros(2, 16, 8, 16, 16)})[0]
    assert frames.shape == (16, 128, 128, 3) and 0 <= float(frames.min()) <= float(frames.max()) <= 1
    with pytest.raises(ValueError, match="needs a video latent"):
        nodes["SGMDToyDecode"].execute(latent={"samples": torch.zeros(1, 4, 16, 16)})


def test_prompt_set_file_is_what_the_trainer_reads(pack, tmp_path, monkeypatch):
    nodes, _, modules = pack
    monkeypatch.setattr(modules["folder_paths"], "base_path", str(tmp_path))
    from training.data import make_prompt_source

    out = nodes["SGMDPromptSet"].execute(prompts="a red circle\n\n a blue square moving up \n", encoder="toy")[0]
    assert out["prompts"] == ["a red circle", "a blue square moving up"]
    source = make_prompt_source(out["path"])
    assert source.prompts == out["prompts"]
    texts, ctx = source.fixed(2)
    from sgmd.text import encode_text

    assert torch.equal(ctx, encode_text(texts)) and torch.equal(source.uncond(1), encode_text([""]))
    empty = nodes["SGMDPromptSet"].execute(prompts="  \n", encoder="toy")[0]
    assert empty["path"] == ""  # the toy task's own prompts
    with pytest.raises(ValueError, match="needs a CLIP"):
        nodes["SGMDPromptSet"].execute(prompts="a fox", encoder="clip")


def test_training_initialisation_rules(pack):
    nodes, _, modules = pack
    init = modules[f"{PACKAGE}.nodes.training"]._initialisation
    teacher = {"init": "teacher"}
    assert init(teacher, teacher) == {}
    assert init(teacher, {"init": "file", "path": "/x/g.safetensors"}) == {"init_generator": "/x/g.safetensors"}
    resume = {"init": "resume", "checkpoints": "/jobs/a"}
    assert init(resume, dict(resume)) == {"resume": "/jobs/a/checkpoints"}
    with pytest.raises(ValueError, match="same job"):
        init(resume, teacher)
    with pytest.raises(ValueError, match="same job"):
        init(resume, {"init": "resume", "checkpoints": "/jobs/b"})


def test_status_pictures(pack):  # noqa: ARG001 (the pack must be loaded)
    import importlib

    render = importlib.import_module(f"{PACKAGE}.nodes._render")
    videos = np.random.default_rng(0).integers(0, 255, (3, 8, 16, 16, 3), dtype=np.uint8)
    sheet = render.contact_sheet(videos)
    assert sheet.shape == (1, 3 * 128, 8 * 128, 3) and sheet.dtype == np.float32
    assert np.allclose(sheet[0, :8, :8], videos[0, 0, 0, 0] / 255.0)  # first latent pixel, 8x8 block
    records = [{"iteration": i, "generator_loss": -0.1 * i, "fake_loss": 1.0 / i if i < 5 else None} for i in range(1, 9)]
    plot = render.loss_plot(records)
    assert plot.shape == (1, 320, 640, 3) and plot.max() > plot.min()
    assert render.loss_plot([]).shape[-1] == 3


def test_model_folders_are_registered(pack):
    _, _, modules = pack
    folder_paths = modules["folder_paths"]
    for name in ("diffusion_models", "loras"):
        assert folder_paths.get_folder_paths(name).count(os.path.join(REPO, "models", name)) == 1, name
    paths, exts = folder_paths.folder_names_and_paths["sgmd"]
    assert paths[0] == os.path.join(folder_paths.models_dir, "sgmd") and ".safetensors" in exts


def test_prompt_set_with_a_native_text_encoder_pads_to_the_longest(pack, tmp_path, monkeypatch):
    nodes, _, modules = pack
    monkeypatch.setattr(modules["folder_paths"], "base_path", str(tmp_path))

    class FakeClip:  # ComfyUI's CLIP: tokenize(text) -> tokens; encode_from_tokens(tokens) -> [1, L, 4096]
        def tokenize(self, text):
            return text

        def encode_from_tokens(self, tokens):
            return torch.full((1, 1 + len(tokens.split()), 4096), float(len(tokens)))

    out = nodes["SGMDPromptSet"].execute(prompts="a fox\na red fox runs", encoder="clip", clip=FakeClip())[0]
    from sgmd.weights import read_safetensors

    tensors, meta = read_safetensors(out["path"])
    assert tensors["context"].shape == (2, 5, 4096) and tensors["uncond"].shape == (1, 5, 4096)
    assert float(tensors["context"][0, 3:].abs().max()) == 0.0 and float(tensors["context"][1, 4, 0]) == 14.0
    assert meta["encoder"] == "clip"


def test_teacher_and_initialisation_nodes(pack, tmp_path, monkeypatch):
    nodes, _, modules = pack
    from tiny_run import write_teacher

    teacher = write_teacher(tmp_path / "teacher.safetensors")
    not_wan = tmp_path / "lora.safetensors"
    from sgmd.weights import write_safetensors

    write_safetensors(str(not_wan), {"diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.zeros(4, 128)})
    monkeypatch.setattr(modules["folder_paths"], "get_full_path", lambda folder, name: str(tmp_path / name))
    monkeypatch.setattr(modules["folder_paths"], "base_path", str(tmp_path))
    out = nodes["SGMDTeacher"].execute(teacher_name="teacher.safetensors")[0]
    assert out["path"] == teacher and out["config"]["dim"] == 128 and "dim 128, 1 blocks" in out["summary"]
    with pytest.raises(ValueError, match="lora.safetensors: not a Wan 2.1 model file"):
        nodes["SGMDTeacher"].execute(teacher_name="lora.safetensors")
    assert nodes["SGMDFakeScore"].execute(init="teacher")[0] == {"init": "teacher"}
    with pytest.raises(ValueError, match="no checkpoint in .*missing_job"):
        nodes["SGMDFakeScore"].execute(init="resume", resume_job="missing_job")
    with pytest.raises(ValueError, match="needs a generator_file"):
        nodes["SGMDGenerator"].execute(init="file")
    assert nodes["SGMDGenerator"].execute(init="file", generator_file="g.safetensors")[0]["path"].endswith("g.safetensors")


@pytest.mark.parametrize("rule", ["euler", "renoise"])
def test_the_native_sampler_function_is_our_few_step_sampler(rule):
    """sgmd.samplers.x0_sampler (what SGMD Sampler wraps in a KSAMPLER) on a denoiser, against
    sample_few_step on the velocity, from the same seed: the renoise draws continue the seed."""
    from sgmd.noise import noise_and_generator
    from sgmd.samplers import sample_few_step, x0_sampler
    from sgmd.schedules import student_sigmas

    w = torch.randn(16, 16, generator=torch.Generator().manual_seed(0)) * 0.1
    velocity = lambda x, s: torch.einsum("ij,bj...->bi...", w, x) + s.view(-1, 1, 1, 1, 1)  # noqa: E731
    calls = []

    def denoiser(x, sigma, **extra):  # ComfyUI's model(x, sigma * s_in, **extra_args) -> x0
        calls.append(extra)
        return x - sigma.view(-1, 1, 1, 1, 1) * velocity(x, sigma)

    noise, g = noise_and_generator(5, (1, 16, 2, 4, 4))
    ours = sample_few_step(velocity, noise, student_sigmas(), rule, generator=g)
    seen = []
    theirs = x0_sampler(rule, check_interrupt=lambda: seen.append(1))(
        denoiser, noise.clone(), student_sigmas(), {"seed": 5}, callback=lambda d: seen.append(d["i"]))
    assert float((ours - theirs).abs().max()) < 1e-5
    assert seen == [1, 0, 1, 1, 1, 2, 1, 3] and calls == [{"seed": 5}] * 4


def test_motion_guidance_node_adds_the_still_state_term_after_cfg(pack, monkeypatch):
    import types

    from sgmd import codec
    from sgmd.samplers import motion_guided_denoised, still_state

    nodes, _, _ = pack

    class Patcher:  # the ModelPatcher surface the node uses
        def __init__(self, post=()):
            self.post = list(post)

        def clone(self):
            return Patcher(self.post)

        def set_model_sampler_post_cfg_function(self, fn):
            self.post.append(fn)

    from sgmd.teacher_sampling import file_motion_guidance

    shipped = os.path.join(REPO, "models", "diffusion_models", "sgmd_tiny_teacher.safetensors")
    schema = nodes["SGMDMotionGuidance"].define_schema()
    scale = [i for i in schema.inputs if i.id == "scale"][0]
    assert scale.default == file_motion_guidance(shipped) > 0  # the node's default is what the shipped file records

    model = Patcher()
    assert nodes["SGMDMotionGuidance"].execute(model=model, scale=0.0, keep_position_code=True)[0] is model
    patched = nodes["SGMDMotionGuidance"].execute(model=model, scale=0.5, keep_position_code=True)[0]
    assert patched is not model and len(patched.post) == 1 and model.post == []

    seen = []

    def calc_cond_batch(model, conds, x, sigma, options):  # a linear denoiser: x0 = 0.5 x + cond
        seen.append(x.clone())
        return [0.5 * x + conds[0]]

    samplers = types.ModuleType("comfy.samplers")
    samplers.calc_cond_batch = calc_cond_batch
    comfy = types.ModuleType("comfy")
    comfy.samplers = samplers
    monkeypatch.setitem(sys.modules, "comfy", comfy)
    monkeypatch.setitem(sys.modules, "comfy.samplers", samplers)
    x, sigma = torch.randn(1, 16, 8, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([0.7])
    x0_cond = 0.5 * x + 0.1
    x0_cfg = 1.3 * x0_cond
    out = patched.post[0]({"input": x, "sigma": sigma, "denoised": x0_cfg, "cond_denoised": x0_cond, "cond": 0.1,
                           "model": None, "model_options": {}})
    x_still = still_state(x, sigma, codec.position_code(8, 16, 16))
    assert len(seen) == 1 and torch.allclose(seen[0], x_still)
    assert torch.allclose(out, motion_guided_denoised(x, x0_cfg, x0_cond, x_still, 0.5 * x_still + 0.1, 0.5))
    assert not torch.allclose(out, x0_cfg)
