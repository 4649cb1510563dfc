"""Background distillation jobs: one trainer process per job, one job per device.

A job is a folder (the ComfyUI nodes use `<ComfyUI output>/sgmd_jobs/<name>/`) holding
- `job.json`: `{"format": "sgmd-job-v1", "name", "pid", "device", "config", "started", "command", ...}`;
- `config.yaml`: the full `DistillConfig` of the run (`out` = this folder);
- `log.txt`: the trainer's stdout and stderr;
- the trainer's own outputs: `metrics.jsonl`, `checkpoints/`, `generator_lora.safetensors`,
  `samples.npz`, `samples/`.

`start_job` spawns `python training/run.py --config config.yaml [--resume]` with the given
Python (default: this process's, i.e. ComfyUI's) in a new session, so the job outlives a ComfyUI
restart and never runs under ComfyUI's inference mode. `stop_job` sends SIGINT: the trainer
finishes its iteration, writes a checkpoint and exits (`training/loop.py`); `start_job(...,
resume=True)` continues from it. `status` reads only files, so it works for jobs started by an
earlier ComfyUI process too. Nothing here imports ComfyUI."""
from __future__ import annotations

import datetime
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import fields

from sgmd.errors import SGMDError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_PY = os.path.join(ROOT, "training", "run.py")
FORMAT = "sgmd-job-v1"
JOB_FILE = "job.json"
CONFIG_FILE = "config.yaml"
LOG_FILE = "log.txt"
METRICS_FILE = "metrics.jsonl"
LORA_FILE = "generator_lora.safetensors"
STATES = ("running", "finished", "failed", "stopped")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DEVICE = re.compile(r"^(cpu|cuda:\d+)$")

_children: dict[int, subprocess.Popen] = {}  # jobs this process started: reaped, exit codes known
_lock = threading.Lock()


# ---------------------------------------------------------------------------------------------
# names, devices, job.json


def job_path(root: str, name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise SGMDError(f"job name {name!r} is not allowed: use letters, digits, '_', '-', '.' (at most 64)")
    return os.path.join(root, name)


def resolve_device(device: str) -> str:
    """`auto` -> `cuda:0` if CUDA is available else `cpu`; `cuda` -> `cuda:0`."""
    device = str(device).strip().lower()
    if device == "auto":
        import torch

        device = "cuda:0" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        device = "cuda:0"
    if not _DEVICE.match(device):
        raise SGMDError(f"device {device!r} is not one of auto, cpu, cuda, cuda:N")
    return device


def read_job(job_dir: str) -> dict:
    """job.json of a job folder; a folder of another kind or version -> SGMDError."""
    path = os.path.join(job_dir, JOB_FILE)
    if not os.path.isfile(path):
        raise SGMDError(f"{job_dir} is not an SGMD job folder (no {JOB_FILE})")
    try:
        with open(path, encoding="utf-8") as f:
            job = json.load(f)
    except (OSError, ValueError) as e:
        raise SGMDError(f"{path} is not readable JSON ({type(e).__name__}); delete the folder or pick another "
                        "job name") from None
    fmt = job.get("format") if isinstance(job, dict) else None
    if fmt != FORMAT:
        raise SGMDError(f"{path} has format {fmt!r}, not {FORMAT}: not a job of this SGMD version; pick another "
                        "job name")
    return job


def _write_job(job_dir: str, job: dict) -> None:
    from sgmd.weights import atomic_write

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(job, f, indent=1)

    atomic_write(os.path.join(job_dir, JOB_FILE), write, suffix=".json")


def _update_job(job_dir: str, **changes) -> dict:
    with _lock:
        job = read_job(job_dir)
        job.update(changes)
        _write_job(job_dir, job)
        return job


def list_jobs(root: str) -> list[str]:
    """Job folders (of any format) under `root`, sorted by name."""
    return sorted(os.path.basename(os.path.dirname(p)) for p in glob.glob(os.path.join(root, "*", JOB_FILE)))


# ---------------------------------------------------------------------------------------------
# processes


def is_alive(job: dict) -> bool:
    """The job's trainer process is running (a zombie or a recycled pid does not count)."""
    pid = job.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    proc = _children.get(pid)
    if proc is not None and proc.poll() is not None:
        return False  # ours and reaped (poll may also say None while another thread reaps: see below)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else: the cmdline check below decides
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            if f.read().rsplit(")", 1)[-1].split()[0] == "Z":
                return False
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().decode(errors="replace")
        return str(job.get("config", "")) in cmdline
    except (OSError, IndexError):
        return True  # no /proc (not Linux): trust the pid


def running_job(root: str, device: str) -> str | None:
    """Name of a live job on `device` under `root`, if any (the one-job-per-device lock)."""
    for name in list_jobs(root):
        try:
            job = read_job(os.path.join(root, name))
        except SGMDError:
            continue
        if job.get("device") == device and is_alive(job):
            return name
    return None


def exit_code(job: dict) -> int | None:
    proc = _children.get(job.get("pid"))
    if proc is not None and proc.poll() is not None:
        return proc.returncode
    return job.get("exit_code")


# ---------------------------------------------------------------------------------------------
# config


def parse_options(text: str) -> dict:
    """Extra trainer options written as YAML lines `name: value` (names as in docs/config.md)."""
    if not text or not text.strip():
        return {}
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        what = " ".join(str(e).split())[:120]
        raise SGMDError(f"extra options are not valid YAML ({what}); write one `name: value` per line") from None
    if not isinstance(data, dict):
        raise SGMDError("extra options must be `name: value` lines, e.g. `checkpoint_every: 25`")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def make_config(options: dict):
    """A checked `DistillConfig` from option values and what the teacher file recommends for the others
    (`training.config.with_teacher_defaults`; unknown names and bad values -> SGMDError)."""
    from training.config import DistillConfig, coerce, finish, with_teacher_defaults

    known = {f.name for f in fields(DistillConfig)}
    cfg = DistillConfig()
    for name, value in with_teacher_defaults(options).items():
        if name not in known:
            raise SGMDError(f"unknown trainer option {name!r}; see docs/config.md")
        setattr(cfg, name, coerce(name, value))
    return finish(cfg)


def _write_config(path: str, cfg) -> None:
    import yaml

    from training.config import to_json_dict

    values = to_json_dict(cfg)
    values["resume"] = values["resume"] if isinstance(values["resume"], str) else False
    with open(path, "w", encoding="utf-8") as f:
        f.write("# written by training/jobs.py; the job runs `training/run.py --config` on this file\n")
        yaml.safe_dump(values, f, sort_keys=False)


# ---------------------------------------------------------------------------------------------
# start / stop


def default_threads() -> int:
    """CPU threads of a job when OMP_NUM_THREADS is not set: all cores but one, which stays with
    ComfyUI. (torch's default, every core, oversubscribes a busy machine: on 2 shared cores a tiny
    run went from 0.07 to 13 s per iteration.)"""
    return max(1, (os.cpu_count() or 2) - 1)


def start_job(root: str, name: str, options: dict, device: str = "auto", resume: bool = False,
              python: str | None = None, env: dict | None = None, before_start=None) -> dict:
    """Start a trainer process for job `name` under `root` and return its job.json.

    `options` are `DistillConfig` values (`out` and `device` are set here). A `prompts` file is
    copied into the job folder so the job is self-contained (resume reads it again). `resume`
    continues the job's own newest checkpoint (`--resume`). The process gets OMP_NUM_THREADS =
    `default_threads()` unless the environment sets it. `before_start(device)` runs after every
    check, just before the process starts (e.g. to free GPU memory)."""
    job_dir = job_path(root, name)
    device = resolve_device(device)
    with _lock:
        busy = running_job(root, device)
        if busy is not None:
            raise SGMDError(f"a job is already running on {device}: {busy} (stop it first, or pick another device)")
        previous = read_job(job_dir) if os.path.exists(os.path.join(job_dir, JOB_FILE)) else {}
        if os.path.isdir(job_dir) and not previous and os.listdir(job_dir):
            raise SGMDError(f"{job_dir} exists and is not an SGMD job folder; pick another job name")
        from training.checkpoint import list_checkpoints

        if not resume and list_checkpoints(job_dir):
            raise SGMDError(f"job {name} already has checkpoints: turn on resume to continue it, or pick another "
                            "job name")
        cfg = make_config(dict(options, out=job_dir, device=device))  # bad options fail before any file is written
        os.makedirs(job_dir, exist_ok=True)
        outside = os.path.dirname(os.path.abspath(cfg.prompts or ".")) != os.path.abspath(job_dir)
        if cfg.prompts and os.path.isfile(cfg.prompts) and outside:
            local = os.path.join(job_dir, "prompts" + os.path.splitext(cfg.prompts)[1])
            shutil.copyfile(cfg.prompts, local)
            cfg.prompts = local
        config_path = os.path.join(job_dir, CONFIG_FILE)
        _write_config(config_path, cfg)
        command = [python or sys.executable, RUN_PY, "--config", config_path] + (["--resume"] if resume else [])
        env = dict(env or os.environ, PYTHONUNBUFFERED="1")
        env.setdefault("OMP_NUM_THREADS", str(default_threads()))
        if before_start is not None:
            before_start(device)
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        with open(os.path.join(job_dir, LOG_FILE), "a", encoding="utf-8") as log:
            log.write(f"=== {started} {'resume' if resume else 'start'}: {' '.join(command)}\n")
            log.flush()
            proc = subprocess.Popen(command, cwd=job_dir, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, env=env)
        _children[proc.pid] = proc
        job = {"format": FORMAT, "name": name, "pid": proc.pid, "device": device, "config": config_path,
               "started": started, "command": command, "iterations": cfg.iterations,
               "threads": env["OMP_NUM_THREADS"], "starts": int(previous.get("starts", 0)) + 1,
               "stop_requested": False, "exit_code": None, "options": _jsonable(options)}
        _write_job(job_dir, job)
        return job


def start_or_attach(root: str, name: str, options: dict, device: str = "auto", resume: bool = False,
                    python: str | None = None, env: dict | None = None, before_start=None) -> tuple[dict, bool]:
    """What a UI's "start" button needs: (job.json, started). A job of this name that runs, or
    that ran with the same options and resume off, is returned as it is (started False), so
    asking again, e.g. after ComfyUI lost its cache, neither fails nor starts a second run.
    Other settings for an existing job -> SGMDError; otherwise `start_job`."""
    job_dir = job_path(root, name)
    device = resolve_device(device)
    if os.path.exists(os.path.join(job_dir, JOB_FILE)):
        job = read_job(job_dir)
        same = job.get("options") == _jsonable(options) and job.get("device") == device
        if is_alive(job):
            if not same and not resume:
                raise SGMDError(f"job {name} is running with other settings; stop it first or pick another job name")
            return job, False
        if same and not resume:
            return job, False
    return start_job(root, name, options, device, resume, python, env, before_start), True


def _jsonable(options: dict) -> dict:
    return json.loads(json.dumps(options))


def stop_job(job_dir: str) -> str:
    """Ask the trainer to stop (SIGINT): it finishes the iteration, checkpoints and exits."""
    job = read_job(job_dir)
    if not is_alive(job):
        return f"job {job['name']} is not running ({status(job_dir)['state']})"
    os.kill(job["pid"], signal.SIGINT)
    _update_job(job_dir, stop_requested=True)
    return (f"stop requested for job {job['name']}: it finishes its iteration, writes a checkpoint and exits; "
            "start it again with resume on to continue")


def wait(job_dir: str, timeout: float | None = None, poll: float = 0.2) -> str:
    """Block until the job's process has ended (or `timeout`); returns the state."""
    t0 = time.monotonic()
    while is_alive(read_job(job_dir)):
        if timeout is not None and time.monotonic() - t0 > timeout:
            break
        time.sleep(poll)
    return status(job_dir, samples=False)["state"]


# ---------------------------------------------------------------------------------------------
# status


def read_metrics(job_dir: str) -> list[dict]:
    """metrics.jsonl records; a partly written last line is ignored."""
    records = []
    try:
        with open(os.path.join(job_dir, METRICS_FILE), encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict) and "iteration" in rec:
                    records.append(rec)
    except OSError:
        pass
    return records


def _log_since_last_start(job_dir: str) -> list[str]:
    try:
        with open(os.path.join(job_dir, LOG_FILE), encoding="utf-8", errors="replace") as f:
            lines = f.read().replace("\r", "\n").splitlines()
    except OSError:
        return []
    starts = [i for i, line in enumerate(lines) if line.startswith("=== ")]
    return lines[starts[-1] + 1:] if starts else lines


def _ended_state(job: dict, log: list[str]) -> tuple[str, str]:
    """(state, message) of a job whose process is gone, from its exit code and its log."""
    errors = [line for line in log if line.startswith("error: ")]
    message = errors[-1][len("error: "):] if errors else ""
    code = exit_code(job)
    stopped = job.get("stop_requested") or any(m.startswith(("error: stopped at iteration", "error: interrupted"))
                                               for m in errors)
    if code == 0 or (code is None and not errors and any(line.startswith("generator: ") for line in log)):
        return "finished", ""
    if stopped:
        return "stopped", message or "stopped"
    if not message:
        tail = [line for line in log if line.strip()]
        message = tail[-1] if tail else "the trainer ended without output"
        if code is not None:
            message = f"exit code {code}: {message}"
    return "failed", message


def latest_samples(job_dir: str) -> dict | None:
    """The newest samples the trainer wrote (`samples/step_XXXXXXXX.npz`, else `samples.npz`):
    {videos uint8 [N, T, H, W, 3], prompts, iteration (None if unknown), path}."""
    from training.evaluate import read_samples_npz

    steps = sorted(glob.glob(os.path.join(job_dir, "samples", "step_*.npz")))
    path = steps[-1] if steps else os.path.join(job_dir, "samples.npz")
    if not os.path.isfile(path):
        return None
    try:
        videos, prompts, _ = read_samples_npz(path)
    except SGMDError:
        return None  # being written or damaged: the next look will do
    m = re.search(r"step_(\d+)\.npz$", path)
    return {"videos": videos, "prompts": list(prompts), "iteration": int(m.group(1)) if m else None, "path": path}


def status(job_dir: str, samples: bool = True) -> dict:
    """Everything a UI shows about a job, from its files (and its process, if alive)."""
    job = read_job(job_dir)
    alive = is_alive(job)
    records = read_metrics(job_dir)
    last = records[-1] if records else {}
    iterations = int(job.get("iterations") or 0)
    iteration = int(last.get("iteration", 0))
    if alive:
        state, message = "running", ""
    else:
        state, message = _ended_state(job, _log_since_last_start(job_dir))
        code = exit_code(job)
        if code is not None and job.get("exit_code") != code:
            _update_job(job_dir, exit_code=code)
    recent = [r["sec_per_iter"] for r in records[-10:] if isinstance(r.get("sec_per_iter"), (int, float))]
    sec_per_iter = sum(recent) / len(recent) if recent else None
    eta = sec_per_iter * max(iterations - iteration, 0) if alive and sec_per_iter is not None else None
    lora = os.path.join(job_dir, LORA_FILE)
    return {
        "name": job["name"], "dir": job_dir, "state": state, "message": message, "device": job.get("device"),
        "pid": job.get("pid"), "started": job.get("started"), "iteration": iteration, "iterations": iterations,
        "generator_loss": last.get("generator_loss"), "fake_loss": last.get("fake_loss"),
        "sec_per_iter": sec_per_iter, "eta_seconds": eta, "records": records,
        "lora": lora if state == "finished" and os.path.isfile(lora) else None,
        "samples": latest_samples(job_dir) if samples else None,
    }


def summary(st: dict) -> str:
    """A few human lines about a status dict."""
    head = f"job {st['name']} on {st['device']}: {st['state']}, iteration {st['iteration']}/{st['iterations']}"
    lines = [head]
    if st["generator_loss"] is not None or st["fake_loss"] is not None:
        lines.append(f"generator loss {_num(st['generator_loss'])}, fake-score loss {_num(st['fake_loss'])}")
    if st["sec_per_iter"] is not None:
        eta = f", about {_duration(st['eta_seconds'])} left" if st["eta_seconds"] is not None else ""
        lines.append(f"{st['sec_per_iter']:.2f} s per iteration{eta}")
    if st["message"]:
        lines.append(st["message"])
    if st["lora"]:
        lines.append(f"generator LoRA: {st['lora']}")
    if st.get("published"):
        lines.append(f"copied to loras as {os.path.basename(st['published'])}")
    lines.append(f"folder: {st['dir']}")
    return "\n".join(lines)


def _num(v) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"


# ---------------------------------------------------------------------------------------------
# results and progress


def publish_lora(job_dir: str, loras_dir: str) -> str | None:
    """Copy a finished job's generator LoRA to `<loras_dir>/sgmd_<job>.safetensors` (if newer)."""
    st = status(job_dir, samples=False)
    if st["lora"] is None:
        return None
    dst = os.path.join(loras_dir, f"sgmd_{st['name']}.safetensors")
    if os.path.isfile(dst) and os.path.getmtime(dst) >= os.path.getmtime(st["lora"]):
        return dst
    from sgmd.weights import atomic_write

    atomic_write(dst, lambda tmp: shutil.copyfile(st["lora"], tmp), suffix=".safetensors")
    return dst


def progress_event(st: dict) -> dict:
    """The small JSON payload of a progress message."""
    keys = ("name", "state", "iteration", "iterations", "generator_loss", "fake_loss", "eta_seconds", "message")
    return {k: st[k] for k in keys}


def watch(job_dir: str, send, on_end=None, interval: float = 1.0) -> threading.Thread:
    """Daemon thread: `send(progress_event)` for every new metrics line and once at the end, then
    `on_end(status)`. Reads files only (never touches the trainer)."""

    def run():
        seen = -1
        while True:
            try:
                st = status(job_dir, samples=False)
            except SGMDError:
                return
            if st["iteration"] != seen or st["state"] != "running":
                seen = st["iteration"]
                try:
                    send(progress_event(st))
                except Exception:  # a UI hiccup must not kill the watcher
                    pass
            if st["state"] != "running":
                if on_end is not None:
                    on_end(st)
                return
            time.sleep(interval)

    thread = threading.Thread(target=run, name=f"sgmd-job-{os.path.basename(job_dir)}", daemon=True)
    thread.start()
    return thread
