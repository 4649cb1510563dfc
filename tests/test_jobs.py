"""Background jobs (training/jobs.py) without ComfyUI: a real short job on a tiny random teacher,
the one-job-per-device lock, stop -> checkpoint kept -> resume, status from files, and one-line
errors for folders that are not jobs of this version."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from sgmd.errors import SGMDError
from sgmd.recipe import SamplingRecipe
from sgmd.weights import read_safetensors
from tiny_run import write_teacher
from training import jobs
from training.checkpoint import list_checkpoints

TINY = dict(batch_size=1, latent_frames=2, latent_height=4, latent_width=4, lora_rank=4, lora_alpha=4.0, samples=2)
ENV = dict(os.environ, OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return write_teacher(tmp_path_factory.mktemp("teacher") / "teacher.safetensors")


def _wait_for(predicate, timeout=120.0):
    t0 = time.monotonic()
    while not predicate():
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.2)


def test_a_short_job_runs_to_the_end(teacher, tmp_path):
    root = str(tmp_path / "sgmd_jobs")
    job = jobs.start_job(root, "short", dict(TINY, teacher=teacher, iterations=2), device="cpu", env=ENV)
    job_dir = os.path.join(root, "short")
    assert job["format"] == jobs.FORMAT and job["device"] == "cpu" and job["command"][0] == sys.executable
    with open(os.path.join(job_dir, "job.json"), encoding="utf-8") as f:
        on_disk = json.load(f)
    assert on_disk["pid"] == job["pid"] and on_disk["config"].endswith("config.yaml")
    assert jobs.wait(job_dir, timeout=180) == "finished", open(os.path.join(job_dir, "log.txt")).read()
    st = jobs.status(job_dir)
    assert (st["state"], st["iteration"], st["iterations"]) == ("finished", 2, 2)
    assert st["generator_loss"] is not None and st["eta_seconds"] is None
    assert st["samples"]["videos"].shape == (2, 2, 4, 4, 3) and len(st["samples"]["prompts"]) == 2
    _, meta = read_safetensors(st["lora"])
    assert SamplingRecipe.from_metadata(meta).update_rule == "euler"
    published = jobs.publish_lora(job_dir, str(tmp_path / "loras"))
    assert os.path.basename(published) == "sgmd_short.safetensors"
    assert "finished" in jobs.summary(st) and "iteration 2/2" in jobs.summary(st)
    again, started = jobs.start_or_attach(root, "short", dict(TINY, teacher=teacher, iterations=2), "cpu", env=ENV)
    assert not started and again["pid"] == job["pid"]  # same settings: attached, nothing restarted
    with pytest.raises(SGMDError, match="already has checkpoints: turn on resume"):
        jobs.start_or_attach(root, "short", dict(TINY, teacher=teacher, iterations=3), "cpu", env=ENV)


def test_lock_stop_keeps_a_checkpoint_and_resume_continues(teacher, tmp_path):
    root = str(tmp_path / "sgmd_jobs")
    options = dict(TINY, teacher=teacher, iterations=10_000, checkpoint_every=10_000)
    jobs.start_job(root, "long", options, device="cpu", env=ENV)
    job_dir = os.path.join(root, "long")
    events = []
    watcher = jobs.watch(job_dir, events.append, interval=0.1)
    with pytest.raises(SGMDError, match="a job is already running on cpu: long"):
        jobs.start_job(root, "other", options, device="cpu", env=ENV)
    assert jobs.start_or_attach(root, "long", options, "cpu", env=ENV)[1] is False
    with pytest.raises(SGMDError, match="job long is running with other settings"):
        jobs.start_or_attach(root, "long", dict(options, lr_fake=1e-3), "cpu", env=ENV)
    assert not os.path.exists(os.path.join(root, "other"))
    _wait_for(lambda: jobs.status(job_dir, samples=False)["iteration"] >= 1)
    st = jobs.status(job_dir, samples=False)
    assert st["state"] == "running" and st["eta_seconds"] > 0
    assert "stop requested" in jobs.stop_job(job_dir)
    assert jobs.wait(job_dir, timeout=120) == "stopped"
    watcher.join(timeout=10)
    st = jobs.status(job_dir, samples=False)
    (step, _), = list_checkpoints(job_dir)
    assert step == st["iteration"] >= 1 and "stopped at iteration" in st["message"]
    assert events[-1]["state"] == "stopped" and events[0]["state"] == "running"
    assert "is not running (stopped)" in jobs.stop_job(job_dir)
    # resume with a reachable end: continues from the checkpoint and finishes
    jobs.start_job(root, "long", dict(options, iterations=step + 1), device="cpu", resume=True, env=ENV)
    assert jobs.wait(job_dir, timeout=120) == "finished", open(os.path.join(job_dir, "log.txt")).read()
    assert jobs.status(job_dir, samples=False)["iteration"] == step + 1
    assert jobs.read_job(job_dir)["starts"] == 2


def _fake_job(job_dir, log="", records=(), pid=None, config="/nowhere/config.yaml", **extra):
    os.makedirs(job_dir, exist_ok=True)
    job = {"format": jobs.FORMAT, "name": os.path.basename(job_dir), "pid": pid or 999_999_999, "device": "cpu",
           "config": config, "started": "now", "command": [], "iterations": 10, **extra}
    with open(os.path.join(job_dir, "job.json"), "w", encoding="utf-8") as f:
        json.dump(job, f)
    with open(os.path.join(job_dir, "log.txt"), "w", encoding="utf-8") as f:
        f.write("=== earlier start\nerror: an older failure\n=== last start\n" + log)
    with open(os.path.join(job_dir, "metrics.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
        f.write('{"iteration": 99, "generator_lo')  # a line being written


def test_status_is_read_from_the_files(tmp_path):
    recs = [{"iteration": i, "generator_loss": -0.1, "fake_loss": 1.0, "sec_per_iter": 2.0} for i in (1, 2, 3)]
    _fake_job(str(tmp_path / "done"), "checkpoint: x\ngenerator: y\nsamples: z\n", recs)
    st = jobs.status(str(tmp_path / "done"))
    assert (st["state"], st["iteration"], st["message"], st["sec_per_iter"]) == ("finished", 3, "", 2.0)
    _fake_job(str(tmp_path / "broken"), "Traceback ...\nerror: teacher not found: t.safetensors\n", recs[:1])
    st = jobs.status(str(tmp_path / "broken"))
    assert (st["state"], st["message"]) == ("failed", "teacher not found: t.safetensors")
    _fake_job(str(tmp_path / "halted"), "error: stopped at iteration 3; checkpoint c; continue with --resume\n", recs)
    assert jobs.status(str(tmp_path / "halted"))["state"] == "stopped"
    _fake_job(str(tmp_path / "killed"), "", recs, stop_requested=True)
    assert jobs.status(str(tmp_path / "killed"))["state"] == "stopped"
    # alive: a process whose command line names the job's config
    config = str(tmp_path / "alive" / "config.yaml")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", config])
    try:
        _fake_job(str(tmp_path / "alive"), "", recs, pid=proc.pid, config=config)
        st = jobs.status(str(tmp_path / "alive"))
        assert st["state"] == "running" and st["eta_seconds"] == pytest.approx(2.0 * 7)
        assert jobs.running_job(str(tmp_path), "cpu") == "alive"
        assert jobs.running_job(str(tmp_path), "cuda:0") is None
    finally:
        proc.kill()
        proc.wait()
    assert jobs.status(str(tmp_path / "alive"))["state"] != "running"  # a dead pid is not a live job


def test_folders_that_are_not_jobs_of_this_version(tmp_path, teacher):
    other = tmp_path / "sgmd_jobs" / "old"
    other.mkdir(parents=True)
    (other / "job.json").write_text(json.dumps({"format": "sgmd-job-v0", "pid": 1}))
    for call in (lambda: jobs.status(str(other)), lambda: jobs.stop_job(str(other)),
                 lambda: jobs.start_job(str(tmp_path / "sgmd_jobs"), "old", dict(TINY, teacher=teacher), "cpu")):
        with pytest.raises(SGMDError, match="format 'sgmd-job-v0', not sgmd-job-v1"):
            call()
    plain = tmp_path / "sgmd_jobs" / "photos"
    plain.mkdir()
    (plain / "cat.png").write_bytes(b"x")
    with pytest.raises(SGMDError, match="not an SGMD job folder"):
        jobs.start_job(str(tmp_path / "sgmd_jobs"), "photos", dict(TINY, teacher=teacher), "cpu")
    with pytest.raises(SGMDError, match="not an SGMD job folder"):
        jobs.status(str(tmp_path / "nothing"))


def test_bad_names_options_and_devices_fail_before_any_file_is_written(tmp_path, teacher):
    root = str(tmp_path / "jobs")
    with pytest.raises(SGMDError, match="job name"):
        jobs.start_job(root, "../escape", {}, "cpu")
    with pytest.raises(SGMDError, match="unknown trainer option 'learning_rate'"):
        jobs.start_job(root, "a", dict(teacher=teacher, learning_rate=1), "cpu")
    with pytest.raises(SGMDError, match="bad value for iterations"):
        jobs.start_job(root, "a", dict(teacher=teacher, iterations="many"), "cpu")
    with pytest.raises(SGMDError, match="device 'tpu'"):
        jobs.start_job(root, "a", dict(teacher=teacher), "tpu")
    assert not os.path.exists(os.path.join(root, "a"))
    assert jobs.parse_options("checkpoint_every: 25\nsample-every: 5") == {"checkpoint_every": 25, "sample_every": 5}
    with pytest.raises(SGMDError, match="name: value"):
        jobs.parse_options("just words")
    assert jobs.resolve_device("cuda") == "cuda:0" and jobs.resolve_device("CPU") == "cpu"
