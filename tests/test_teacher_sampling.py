"""The teacher file's sampling entry (`sgmd.teacher_sampling`): written once, read by the trainer and
the evaluator, so the guidance a teacher is measured with is the guidance it is distilled toward."""
from __future__ import annotations

import json
import os
import sys

import pytest
import torch

from sgmd import codec
from sgmd.errors import SGMDError
from sgmd.teacher_sampling import (codec_of, distill_defaults_of, file_codec, file_motion_guidance, motion_guidance_of,
                                   set_distill_defaults, set_sampling, still_pattern_of)
from sgmd.weights import read_safetensors
from tiny_run import REPO, run_args, write_teacher

sys.path.insert(0, os.path.join(REPO, "training"))


def _toy_teacher(path) -> str:
    return write_teacher(path, metadata={"sgmd_teacher": json.dumps({"codec": codec.CODEC_V2, "steps": 7}),
                                         "other": "kept"})


def test_set_sampling_records_the_motion_guidance_and_keeps_everything_else(tmp_path):
    path = _toy_teacher(tmp_path / "t.safetensors")
    before, meta = read_safetensors(path)
    assert motion_guidance_of(meta) == 0.0  # nothing recorded: plain CFG
    set_sampling(path, 0.25)
    after, meta = read_safetensors(path)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    info = json.loads(meta["sgmd_teacher"])
    assert info["steps"] == 7 and meta["other"] == "kept" and info["sampling"] == {"motion_guidance": 0.25}
    assert file_motion_guidance(path) == motion_guidance_of(meta) == 0.25
    with pytest.raises(SGMDError, match=">= 0"):
        set_sampling(path, -1.0)
    plain = write_teacher(tmp_path / "plain.safetensors")  # a Wan file without our metadata
    with pytest.raises(SGMDError, match="no sgmd_teacher metadata"):
        set_sampling(plain, 0.25)
    assert file_motion_guidance(plain) == 0.0


def test_still_pattern_follows_the_files_codec():
    assert torch.equal(still_pattern_of({"sgmd_teacher": json.dumps({"codec": codec.CODEC_V2})}, 8, 16, 16),
                       codec.position_code(8, 16, 16))
    assert still_pattern_of({"sgmd_teacher": json.dumps({"codec": "sgmd-toy-codec-v1"})}, 8, 16, 16) is None
    assert still_pattern_of({}, 8, 16, 16) is None
    assert torch.equal(still_pattern_of({"sgmd_teacher": json.dumps({"codec": codec.CODEC_V3})}, 8, 16, 16),
                       codec.position_code(8, 16, 16))  # v3 carries the same position code


def test_codec_of_names_only_the_toy_codecs_we_know(tmp_path):
    for cid in (codec.CODEC_V2, codec.CODEC_V3):
        assert codec_of({"sgmd_teacher": json.dumps({"codec": cid})}) == cid
    assert codec_of({"sgmd_teacher": json.dumps({"codec": "sgmd-toy-codec-v1"})}) is None
    assert codec_of({"sgmd_teacher": "not json"}) is None and codec_of({}) is None
    v3 = write_teacher(tmp_path / "v3.safetensors", metadata={"sgmd_teacher": json.dumps({"codec": codec.CODEC_V3})})
    assert file_codec(v3) == codec.CODEC_V3
    assert file_codec(write_teacher(tmp_path / "plain.safetensors")) == codec.CODEC_V2  # the toy tools' assumption
    assert motion_guidance_of({"sgmd_teacher": "not json"}) == 0.0


@pytest.mark.parametrize("option,want", [(None, 0.0), ("-1", 0.5), ("1.5", 1.5)])
def test_trainer_distils_toward_plain_cfg_unless_told_or_asked_for_the_files_value(tmp_path, option, want):
    from training.config import parse_config
    from training.trainer import build

    teacher = _toy_teacher(tmp_path / "t.safetensors")
    set_sampling(teacher, 0.5)
    extra = {} if option is None else {"motion_guidance": option}
    run = build(parse_config(run_args(teacher, str(tmp_path / "run"), **extra)))
    assert run.cfg.motion_guidance == want and run.objective.motion_guidance == want
    if want:
        assert torch.equal(run.objective.still_pattern, codec.position_code(2, 4, 4))
        assert run.objective.teacher_passes() == 3


def test_evaluator_cache_names_the_motion_guidance(tmp_path):
    from evaluate import teacher_cache_path

    path = _toy_teacher(tmp_path / "t.safetensors")
    plain, guided = teacher_cache_path(path, 4), teacher_cache_path(path, 4, motion=0.25)
    assert plain != guided and "_motion0.25_" in guided and "motion" not in os.path.basename(plain)


@pytest.mark.parametrize("codec_id", [codec.CODEC_V2, codec.CODEC_V3])
def test_gan_real_clips_are_encoded_in_the_teachers_codec(tmp_path, codec_id):
    """The GAN head compares the generator's latents with real ones: they must be in the teacher's codec."""
    from sgmd import toyvideo
    from sgmd.objectives.base import Batch
    from training.config import parse_config
    from training.trainer import build

    teacher = write_teacher(tmp_path / "t.safetensors", metadata={"sgmd_teacher": json.dumps({"codec": codec_id})})
    toy = dict(latent_frames=8, latent_height=16, latent_width=16, gan=True)
    run = build(parse_config(run_args(teacher, str(tmp_path / "run"), **toy)))
    prompts = ["a red circle moving left quickly", "a blue square"]
    batch = Batch(torch.zeros(2, 1, 4096), torch.zeros(2, 1, 4096), (16, 8, 16, 16),
                  torch.Generator().manual_seed(3), prompts)
    real = run.objective.gan.real_latents(batch)
    g = torch.Generator().manual_seed(3)
    clips = [toyvideo.clip_for_prompt(toyvideo.Prompt.parse(p), g) for p in prompts]
    torch.testing.assert_close(real, codec.encode(toyvideo.render(clips), codec_id))
    plain = write_teacher(tmp_path / "plain.safetensors")  # no toy codec: no real clips to compare with
    with pytest.raises(SGMDError, match="toy codec"):
        build(parse_config(run_args(plain, str(tmp_path / "run2"), **toy)))


def test_a_teacher_files_distill_defaults_fill_only_the_options_nobody_set(tmp_path):
    """defaults <- teacher file <- config file <- command line; a file may set method and optimisation
    options only, and a bad value it records is reported like any other."""
    from training.config import parse_config
    from training.jobs import make_config

    path = _toy_teacher(tmp_path / "t.safetensors")
    plain = parse_config(run_args(path, str(tmp_path / "run")))
    set_distill_defaults(path, {"diversity_anchor": True, "iterations": 9, "lambda_nr": 0.3, "out": "/elsewhere",
                                "device": "cuda"})
    tensors, meta = read_safetensors(path)
    assert json.loads(meta["sgmd_teacher"])["steps"] == 7 and meta["other"] == "kept"  # the rest kept
    assert distill_defaults_of(meta)["lambda_nr"] == 0.3
    cfg = parse_config(run_args(path, str(tmp_path / "run")))  # run_args gives --iterations 2 and --device cpu
    assert cfg.diversity_anchor and not plain.diversity_anchor and cfg.lambda_nr == 0.3
    assert cfg.iterations == 2 and cfg.out == str(tmp_path / "run") and cfg.device == "cpu"
    (tmp_path / "c.yaml").write_text("lambda_nr: 0.2\n")
    assert parse_config(run_args(path, str(tmp_path / "run"), config=str(tmp_path / "c.yaml"))).lambda_nr == 0.2
    assert parse_config(run_args(path, str(tmp_path / "run"), no_diversity_anchor=True)).diversity_anchor is False
    job = make_config({"teacher": path, "out": str(tmp_path / "job")})  # the ComfyUI training node's path
    assert job.diversity_anchor and job.iterations == 9 and job.out == str(tmp_path / "job")
    # a recommended GAN term needs the toy task's real clips: dropped for other prompts or sizes, kept otherwise
    set_distill_defaults(path, {"gan": True})
    size = dict(latent_frames=8, latent_height=16, latent_width=16)  # the toy task's
    assert parse_config(run_args(path, str(tmp_path / "run"), **size)).gan is True
    assert parse_config(run_args(path, str(tmp_path / "run"))).gan is False  # run_args' smaller latents
    (tmp_path / "p.txt").write_text("a red circle\n")
    assert parse_config(run_args(path, str(tmp_path / "run"), prompts=str(tmp_path / "p.txt"), **size)).gan is False
    assert make_config({"teacher": path, "out": str(tmp_path / "job2"), "latent_width": 8}).gan is False
    assert parse_config(run_args(path, str(tmp_path / "run"), prompts=str(tmp_path / "p.txt"), gan=True)).gan is True
    set_distill_defaults(path, {"lambda_nr": "lots"})
    with pytest.raises(SGMDError, match="lambda_nr"):
        parse_config(run_args(path, str(tmp_path / "run")))
    plain_file = write_teacher(tmp_path / "plain.safetensors")
    with pytest.raises(SGMDError, match="no sgmd_teacher metadata"):
        set_distill_defaults(plain_file, {"iterations": 3})
