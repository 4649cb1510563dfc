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
from sgmd.teacher_sampling import file_motion_guidance, motion_guidance_of, set_sampling, still_pattern_of
from sgmd.weights import read_safetensors
from tiny_run import REPO, run_args, write_teacher

sys.path.insert(0, os.path.join(REPO, "training"))


def _toy_teacher(path) -> str:
    return write_teacher(path, metadata={"sgmd_teacher": json.dumps({"codec": codec.CODEC_ID, "steps": 7}),
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
    assert torch.equal(still_pattern_of({"sgmd_teacher": json.dumps({"codec": codec.CODEC_ID})}, 8, 16, 16),
                       codec.position_code(8, 16, 16))
    assert still_pattern_of({"sgmd_teacher": json.dumps({"codec": "sgmd-toy-codec-v1"})}, 8, 16, 16) is None
    assert still_pattern_of({}, 8, 16, 16) is None
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
