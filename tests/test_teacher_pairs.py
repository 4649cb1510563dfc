"""Teacher pairs end to end on a tiny random toy-codec teacher: the file holds the evaluator's teacher
clips for its prompts and seeds, an interrupted run continues to the same file, the loader checks the
teacher, and a distillation run trains on them."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from sgmd import codec
from sgmd.errors import SGMDError
from sgmd.noise import noise_for_seeds
from sgmd.weights import file_sha256
from tiny_run import REPO, RUN_PY, run_args, subprocess_env, write_teacher
from training.evaluate import generate_teacher
from training.teacher_pairs import load_pairs, make_pairs, pair_prompts, pair_seeds, read_pairs

torch.set_num_threads(1)
PAIRS_PY = os.path.join(REPO, "training", "teacher_pairs.py")
QUIET = lambda *a: None  # noqa: E731


def _toy_teacher(path, seed=0, codec_id=codec.CODEC_V2):
    return write_teacher(path, seed=seed, metadata={"sgmd_teacher": json.dumps({"codec": codec_id})})


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return _toy_teacher(tmp_path_factory.mktemp("pairs") / "teacher.safetensors")


@pytest.fixture(scope="module")
def pair_file(teacher, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("pairs") / "pairs.safetensors")
    make_pairs(teacher, out, count=3, steps=2, batch_size=2, log=QUIET)
    return out


def test_pairs_are_the_teachers_clips_for_their_prompts_and_seeds(teacher, pair_file):
    prompts, seeds, clips, info = read_pairs(pair_file)
    assert prompts == pair_prompts(3, 0) and seeds.tolist() == pair_seeds(3, 0)
    assert len(set(seeds.tolist()) & set(range(10_000, 20_000))) == 0  # never an evaluation seed
    from sgmd.weights import load_wan
    expected = generate_teacher(load_wan(teacher).eval(), prompts, seeds.tolist(), steps=2)
    assert torch.equal(clips, torch.from_numpy(expected))
    assert info["teacher_sha256"] == file_sha256(teacher, n=64) and info["count"] == 3 and info["motion_guidance"] == 0

    pairs = load_pairs(pair_file, file_sha256(teacher, n=64), lambda ps: torch.zeros(len(ps), 2, 4096))
    torch.testing.assert_close(pairs.noise, noise_for_seeds(seeds.tolist()))
    torch.testing.assert_close(codec.decode(pairs.target), clips.float() / 255, atol=0.5 / 255, rtol=0)
    assert pairs.context.shape == (3, 2, 4096)


def test_pairs_of_a_v3_teacher_are_encoded_back_in_its_codec(tmp_path):
    """The clips are stored decoded; a v3 teacher's targets must carry the time derivative again."""
    teacher = _toy_teacher(tmp_path / "v3.safetensors", codec_id=codec.CODEC_V3)
    out = make_pairs(teacher, str(tmp_path / "pairs.safetensors"), count=2, steps=1, log=QUIET)
    _, _, clips, info = read_pairs(out)
    assert info["codec"] == codec.CODEC_V3
    pairs = load_pairs(out, file_sha256(teacher, n=64), lambda ps: torch.zeros(len(ps), 2, 4096))
    torch.testing.assert_close(pairs.target, codec.encode(clips.float() / 255, codec.CODEC_V3))
    assert (pairs.target - codec.encode(clips.float() / 255)).abs().max() > 0  # not the v2 encoding


def test_an_interrupted_run_continues_to_the_same_file(teacher, pair_file, tmp_path):
    out = str(tmp_path / "pairs.safetensors")

    def stop_after_first_batch(msg):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make_pairs(teacher, out, count=3, steps=2, batch_size=2, log=stop_after_first_batch)
    assert len(read_pairs(out)[0]) == 2
    with pytest.raises(SGMDError, match="unfinished"):
        load_pairs(out, file_sha256(teacher, n=64), lambda ps: torch.zeros(len(ps), 2, 4096))
    said = []
    make_pairs(teacher, out, count=3, steps=2, batch_size=2, log=said.append)
    assert "2 of 3 pairs already made" in said[0]
    assert torch.equal(read_pairs(out)[2], read_pairs(pair_file)[2])
    with pytest.raises(SGMDError, match="other settings"):
        make_pairs(teacher, out, count=3, steps=3, batch_size=2, log=QUIET)


def test_the_loader_and_the_cli_refuse_bad_input(teacher, pair_file, tmp_path):
    other = _toy_teacher(tmp_path / "other.safetensors", seed=1)
    with pytest.raises(SGMDError, match="another teacher"):
        load_pairs(pair_file, file_sha256(other, n=64), lambda ps: torch.zeros(len(ps), 2, 4096))
    with pytest.raises(SGMDError, match="not a teacher-pair file"):
        read_pairs(teacher)
    plain = write_teacher(tmp_path / "plain.safetensors")  # no toy-codec record
    with pytest.raises(SGMDError, match="toy codec"):
        make_pairs(plain, str(tmp_path / "p.safetensors"), count=1, steps=1, log=QUIET)
    for args in (["--out", str(tmp_path / "x.safetensors"), "--teacher", str(tmp_path / "missing.safetensors")],
                 ["--out", str(tmp_path / "x.safetensors"), "--teacher", teacher, "--count", "0"]):
        proc = subprocess.run([sys.executable, PAIRS_PY, *args], capture_output=True, text=True, env=subprocess_env(),
                              cwd=REPO, timeout=120)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr


def test_a_distillation_run_trains_on_the_pairs(teacher, pair_file, tmp_path):
    toy = dict(latent_frames=8, latent_height=16, latent_width=16, evaluate=False, samples=1)
    out = str(tmp_path / "run")
    proc = subprocess.run([sys.executable, RUN_PY, *run_args(teacher, out, teacher_pairs=pair_file, pairs_weight=0.5,
                                                             **toy)],
                          capture_output=True, text=True, env=subprocess_env(), cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in open(os.path.join(out, "metrics.jsonl"))]
    assert all(x["generator/pairs"] > 0 for x in lines)
    other = _toy_teacher(tmp_path / "other.safetensors", seed=1)
    proc = subprocess.run([sys.executable, RUN_PY, *run_args(other, str(tmp_path / "run2"), teacher_pairs=pair_file,
                                                             **toy)],
                          capture_output=True, text=True, env=subprocess_env(), cwd=REPO, timeout=300)
    assert proc.returncode == 2 and "another teacher" in proc.stderr and "Traceback" not in proc.stderr
