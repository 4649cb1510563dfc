"""Evaluate the teacher and a distilled generator on the held-out prompt set of the toy task.

    python training/evaluate.py --model models/diffusion_models/sgmd_tiny_teacher.safetensors | --exact-teacher \\
        [--lora GEN_LORA.safetensors | --student-model FULL.safetensors | --samples in.npz] \\
        [--steps 50 --cfg 3.0 --shift 5] [--recipe-from-lora | --student-timesteps 1000,750,500,250 \\
        --student-shift 5 --rule euler] [--seeds 16] [--out DIR] [--device cpu]

The teacher is sampled with 50-step CFG Euler (`--steps/--cfg/--shift`); the student with its
few-step recipe (read from the LoRA's `sgmd_recipe` metadata with `--recipe-from-lora`, else the
`--student-*` options). `--exact-teacher` samples the task's exact denoiser instead of a teacher
file: the ceiling of the teacher bar with this sampler. `--samples in.npz` evaluates clips made elsewhere (e.g. by ComfyUI) as the
student; the teacher is then sampled on the same prompts and seeds. Every clip's noise comes from
its seed (`sgmd.noise`: the ComfyUI rule), so the same seed gives the teacher and the student the
same starting noise.

Writes to --out: `metrics.json` (teacher, student, quality-bar checks, settings, per-clip
analyses), `summary.txt` (the table printed at the end), `teacher_samples.npz`,
`student_samples.npz`. Measures: `sgmd/metrics.py`; the prompt set and the bar: `training/eval_set.py`.
Sample files: `videos` uint8 [N, T, H, W, 3] decoded RGB at the native 16x16, `prompts` str [N], `seeds` int64 [N].
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sgmd import codec, metrics, text, toy_posterior, toyvideo  # noqa: E402
from sgmd.errors import SGMDError  # noqa: E402
from sgmd.noise import CLIP_LATENT_SHAPE, noise_and_generator, noise_for_seeds  # noqa: E402
from sgmd.samplers import DEFAULT_GUIDANCE, cfg_combine, cfg_velocity, sample_few_step, sample_teacher  # noqa: E402
from sgmd.schedules import DEFAULT_STUDENT_SHIFT, DEFAULT_STUDENT_TIMESTEPS, student_sigmas, teacher_sigmas  # noqa: E402
from sgmd.teacher_sampling import file_motion_guidance, motion_guidance_of, still_pattern_of  # noqa: E402
from sgmd.weights import atomic_write, load_wan, read_metadata, read_safetensors  # noqa: E402
from training.eval_set import (ACCURACIES, DEFAULT_SEEDS, STUDENT_ACCURACY_TOLERANCE, STUDENT_DIVERSITY_RATIO,  # noqa: E402
                               STUDENT_MOTION_RATIO, TEACHER_FLOORS, eval_prompt_set)

BATCH_SIZE = 16


# ------------------------------------------------------------------------------- generation


def _device_dtype(model):
    p = next(model.parameters())
    return p.device, p.dtype


def _batches(n: int, size: int):
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))


def _decode_uint8(latent: torch.Tensor) -> np.ndarray:
    return codec.to_uint8(codec.decode(latent.float().cpu()))


def _sample(velocity_for, prompts, seeds, sigmas, device, dtype, batch_size: int) -> np.ndarray:
    """Multi-step Euler samples, batch by batch: `velocity_for(prompts)` gives the batch's guided
    velocity; decoded -> uint8 `[N, T, H, W, 3]`."""
    out = []
    for sl in _batches(len(prompts), batch_size):
        noise = noise_for_seeds(seeds[sl], CLIP_LATENT_SHAPE, device, dtype)
        out.append(_decode_uint8(sample_teacher(velocity_for(list(prompts[sl])), noise, sigmas)))
    return np.concatenate(out) if out else np.zeros((0, toyvideo.FRAMES, toyvideo.SIZE, toyvideo.SIZE, 3), np.uint8)


@torch.no_grad()
def generate_teacher(model, prompts, seeds, steps: int = 50, cfg: float = DEFAULT_GUIDANCE, shift: float = 5.0,
                     batch_size: int = BATCH_SIZE, motion: float = 0.0, still_pattern: torch.Tensor | None = None) -> np.ndarray:
    """Multi-step CFG Euler samples (empty-prompt uncond; motion guidance `motion` with `still_pattern`
    kept in the still state, see `sgmd.samplers.guided`), decoded -> uint8 `[N, T, H, W, 3]`."""
    device, dtype = _device_dtype(model)

    def velocity_for(ps):
        cond = text.encode_text(ps).to(device, dtype)
        uncond = text.encode_text([""] * len(ps)).to(device, dtype)
        return cfg_velocity(model, cond, uncond, cfg, motion, still_pattern)

    return _sample(velocity_for, prompts, seeds, teacher_sigmas(steps, shift), device, dtype, batch_size)


@torch.no_grad()
def generate_exact(prompts, seeds, steps: int = 50, cfg: float = DEFAULT_GUIDANCE, shift: float = 5.0,
                   batch_size: int = BATCH_SIZE) -> np.ndarray:
    """The same sampler with the toy task's exact denoiser (`sgmd.toy_posterior`) as the teacher: what a
    perfectly trained teacher gives at these settings, the ceiling of the teacher bar. Grammar prompts
    only; slow (the unconditional posterior runs over the whole clip bank at every step)."""
    def velocity_for(ps):
        def v(x, sigma):
            v_c = toy_posterior.velocity(x, sigma, ps)
            if cfg == 1.0:
                return v_c
            v_u = toy_posterior.velocity(x, sigma, [""] * len(ps))
            return cfg_combine(v_c, v_u, cfg)
        return v

    return _sample(velocity_for, prompts, seeds, teacher_sigmas(steps, shift), "cpu", torch.float32, batch_size)


@torch.no_grad()
def generate_student(model, prompts, seeds, sigmas, rule: str = "euler", cfg: float = 1.0,
                     batch_size: int = BATCH_SIZE) -> np.ndarray:
    """Few-step samples of a generator (LoRA already merged / active) with its schedule and update
    rule, decoded -> uint8 `[N, T, H, W, 3]`. `renoise` draws its fresh noise from each clip's own
    seeded stream (`sgmd.noise.noise_and_generator`), so those clips run one at a time."""
    device, dtype = _device_dtype(model)
    sigmas = torch.as_tensor(sigmas, dtype=torch.float32)
    out = []
    if rule == "renoise":
        for p, s in zip(prompts, seeds):
            cond = text.encode_text([p]).to(device, dtype)
            uncond = text.encode_text([""]).to(device, dtype)
            noise, g = noise_and_generator(s, CLIP_LATENT_SHAPE, device, dtype)
            out.append(_decode_uint8(sample_few_step(cfg_velocity(model, cond, uncond, cfg), noise, sigmas, rule, g)))
    else:
        for sl in _batches(len(prompts), batch_size):
            ps = list(prompts[sl])
            cond = text.encode_text(ps).to(device, dtype)
            uncond = text.encode_text([""] * len(ps)).to(device, dtype)
            noise = noise_for_seeds(seeds[sl], CLIP_LATENT_SHAPE, device, dtype)
            out.append(_decode_uint8(sample_few_step(cfg_velocity(model, cond, uncond, cfg), noise, sigmas, rule)))
    return np.concatenate(out) if out else np.zeros((0, toyvideo.FRAMES, toyvideo.SIZE, toyvideo.SIZE, 3), np.uint8)


def apply_lora(model, lora_tensors: dict, strength: float = 1.0):
    """Fold a LoRA file's tensors into the model's weights (`sgmd.lora.merge_lora_state_dict`)."""
    from sgmd.lora import merge_lora_state_dict

    model.load_state_dict(merge_lora_state_dict(model.state_dict(), lora_tensors, strength))
    return model


# ------------------------------------------------------------------------------- sample files


def write_samples_npz(path: str, videos_uint8, prompts, seeds) -> None:
    """Atomic write of `videos` uint8 [N, T, H, W, 3], `prompts` str [N], `seeds` int64 [N]."""
    v = np.asarray(videos_uint8)
    if v.dtype != np.uint8 or v.ndim != 5 or v.shape[-1] != 3:
        raise SGMDError(f"samples must be uint8 [N, T, H, W, 3]; got {v.dtype} {tuple(v.shape)}")
    p = np.array([str(x) for x in prompts], dtype=np.str_)
    s = np.array([int(x) for x in seeds], dtype=np.int64)
    if not (len(v) == len(p) == len(s)):
        raise SGMDError(f"{len(v)} videos, {len(p)} prompts and {len(s)} seeds: need one of each per clip")
    atomic_write(path, lambda tmp: np.savez_compressed(tmp, videos=v, prompts=p.reshape(-1), seeds=s), suffix=".npz")


def read_samples_npz(path: str) -> tuple[np.ndarray, list[str], list[int]]:
    """-> (videos uint8 [N, T, H, W, 3], prompts, seeds). No pickle; a bad file -> SGMDError."""
    if not os.path.isfile(path):
        raise SGMDError(f"samples file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            v, p, s = z["videos"], z["prompts"], z["seeds"]
    except KeyError as e:
        raise SGMDError(f"{path} lacks the array {e.args[0]!r} (need videos, prompts, seeds)") from None
    except Exception as e:  # noqa: BLE001 - np.load raises several types for garbage
        raise SGMDError(f"cannot read {path} as a samples .npz ({type(e).__name__}: {str(e)[:120]})") from None
    if v.dtype != np.uint8 or v.ndim != 5 or v.shape[-1] != 3:
        raise SGMDError(f"{path}: videos must be uint8 [N, T, H, W, 3]; got {v.dtype} {tuple(v.shape)}")
    if p.ndim != 1 or s.ndim != 1 or not (len(v) == len(p) == len(s)):
        raise SGMDError(f"{path}: need one prompt and one seed per video; got {len(v)}, {p.shape}, {s.shape}")
    if not np.issubdtype(s.dtype, np.integer):
        raise SGMDError(f"{path}: seeds must be integers; got {s.dtype}")
    return v, [str(x) for x in p], [int(x) for x in s]


# ------------------------------------------------------------------------------- quality bar


def quality_checks(teacher: dict, student: dict | None = None) -> list[dict]:
    """The issue's quality bar as a list of {who, measure, value, bar, passed}; a check whose inputs
    are missing has passed None (not counted either way)."""
    checks = []

    def add(who, measure, value, bar, ok):
        checks.append({"who": who, "measure": measure, "value": value, "bar": bar,
                       "passed": None if ok is None else bool(ok)})

    for m, floor in TEACHER_FLOORS.items():
        v = teacher.get(m)
        add("teacher", m, v, f">= {floor:.0%}", None if v is None else v >= floor)
    if student is None:
        return checks
    for m in ACCURACIES:
        t, s = teacher.get(m), student.get(m)
        ok = None if t is None or s is None else s >= t - STUDENT_ACCURACY_TOLERANCE - 1e-12
        add("student", m, s, f">= teacher - {STUDENT_ACCURACY_TOLERANCE * 100:.0f} pts", ok)
    for m, ratio in (("mean_motion_unspecified_speed", STUDENT_MOTION_RATIO), ("diversity", STUDENT_DIVERSITY_RATIO)):
        t, s = teacher.get(m), student.get(m)
        ok = None if t is None or s is None else s >= ratio * t - 1e-12
        add("student", m, s, f">= {ratio}x teacher", ok)
    return checks


def _verdict(checks, who) -> str:
    vals = [c["passed"] for c in checks if c["who"] == who and c["passed"] is not None]
    return "n/a" if not vals else ("PASS" if all(vals) else "FAIL")


_ROWS = (  # key, label, kind
    ("colour_accuracy", "colour accuracy", "pct"),
    ("shape_accuracy", "shape accuracy", "pct"),
    ("direction_accuracy", "direction accuracy", "pct"),
    ("speed_accuracy", "speed-class accuracy", "pct"),
    ("overall_accuracy", "mean of accuracies", "pct"),
    ("all_correct", "clips all correct", "pct"),
    ("mean_motion", "motion, all (px/frame)", "ratio"),
    ("mean_motion_unspecified_speed", "motion, speed unspecified", "ratio"),
    ("speed_classes_unspecified_speed.still", "  still (speed unspecified)", "pct"),
    ("speed_classes_unspecified_speed.slowly", "  slowly (speed unspecified)", "pct"),
    ("speed_classes_unspecified_speed.quickly", "  quickly (speed unspecified)", "pct"),
    ("temporal_consistency", "temporal consistency", "diff"),
    ("end_speed_ratio", "end / mean speed (1 = even)", "diff"),
    ("diversity", "diversity (trajectories)", "ratio"),
    ("diversity_pixels", "diversity (pixels, RMS)", "ratio"),
    ("fd", "FD to real clips", "diff"),
    ("fd_to_teacher", "FD student to teacher", "diff"),
    ("same_noise_distance.start", "start vs teacher, same noise", "diff"),
    ("same_noise_distance.velocity", "velocity vs teacher, same noise", "diff"),
    ("n_degenerate", "degenerate clips", "count"),
    ("n_clips", "clips", "count"),
)


def _get(d: dict | None, key: str):
    if d is None:
        return None
    for part in key.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def _fmt(v, kind) -> str:
    if v is None:
        return "-"
    if kind == "pct":
        return f"{100 * v:.1f}%"
    if kind == "count":
        return str(int(v))
    return f"{v:.3f}"


def format_summary(teacher_metrics: dict, student_metrics: dict | None = None) -> str:
    """One-screen table: rows = measures, columns teacher / student / student vs teacher, with the
    quality bar marked (ok / FAIL) next to each checked value."""
    checks = quality_checks(teacher_metrics, student_metrics)
    mark = {(c["who"], c["measure"]): ("ok" if c["passed"] else "FAIL") for c in checks if c["passed"] is not None}
    lines = [f"{'measure':30s} {'teacher':>14s} {'student':>14s} {'vs teacher':>15s}", "-" * 76]
    for key, label, kind in _ROWS:
        t, s = _get(teacher_metrics, key), _get(student_metrics, key)
        tc = _fmt(t, kind) + (f" {mark[('teacher', key)]}" if ("teacher", key) in mark else "")
        sc = _fmt(s, kind) + (f" {mark[('student', key)]}" if ("student", key) in mark else "")
        rel = "-"
        if t is not None and s is not None:
            if kind == "pct":
                se = _get(student_metrics, f"accuracy_gaps.{key.removesuffix('_accuracy')}.se")
                rel = f"{100 * (s - t):+.1f}" + (f" ±{100 * se:.1f}" if se is not None else "") + " pts"
            elif kind == "ratio":
                rel = f"x{s / t:.2f}" if t else "-"
            elif kind in ("diff", "count"):
                rel = f"{s - t:+.3f}" if kind == "diff" else f"{int(s - t):+d}"
        lines.append(f"{label:30s} {tc:>14s} {sc if student_metrics is not None else '':>14s} {rel:>15s}")
    lines.append("-" * 76)
    bar = (f"teacher bar (colour >= 95%, direction >= 90%, speed >= 85%): {_verdict(checks, 'teacher')}")
    lines.append(bar)
    if student_metrics is not None:
        lines.append("student bar (accuracies within 5 pts, motion >= 0.9x, diversity >= 0.8x): "
                     + _verdict(checks, "student"))
        if _get(student_metrics, "accuracy_gaps") is not None:
            lines.append("(± = standard error of the paired student-teacher gap over these clips; the bar reads the gap)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="", help="teacher: Wan 2.1 T2V safetensors (the student's base too); required "
                                               "unless --exact-teacher or --teacher-samples stands in for it and there "
                                               "is no LoRA")
    p.add_argument("--exact-teacher", action="store_true",
                   help="sample the toy task's exact denoiser as the teacher (the ceiling a trained teacher can reach "
                        "with this sampler; several minutes)")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--lora", default="", help="student: a generator LoRA exported by the trainer")
    who.add_argument("--student-model", default="", help="student: a full-weight generator file")
    who.add_argument("--samples", default="", help="student: clips from a samples .npz (e.g. made with ComfyUI)")
    p.add_argument("--lora-strength", type=float, default=1.0)
    p.add_argument("--teacher-samples", default="", help="reuse teacher clips from a samples .npz instead of sampling")
    p.add_argument("--steps", type=int, default=50, help="teacher sampling steps")
    p.add_argument("--cfg", type=float, default=DEFAULT_GUIDANCE, help="teacher CFG scale")
    p.add_argument("--shift", type=float, default=5.0, help="teacher schedule shift")
    p.add_argument("--motion-guidance", type=float, default=None,
                   help="teacher motion guidance m (sgmd.samplers.guided): + m (v_c - v_c of the still state); 0 = off; "
                        "default: what the teacher file records (sgmd.teacher_sampling), else 0")
    p.add_argument("--recipe-from-lora", action="store_true",
                   help="take the student's sigmas / rule / cfg from its file's sgmd_recipe metadata")
    p.add_argument("--student-timesteps", default=",".join(str(t) for t in DEFAULT_STUDENT_TIMESTEPS))
    p.add_argument("--student-shift", type=float, default=DEFAULT_STUDENT_SHIFT)
    p.add_argument("--rule", default="euler", choices=("euler", "renoise"), help="student update rule")
    p.add_argument("--student-cfg", type=float, default=1.0)
    p.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help="seeds per prompt")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    p.add_argument("--out", default="", help="output folder (metrics.json, summary.txt, samples)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--strict", action="store_true", help="exit with status 1 when a quality-bar check fails")
    return p


def student_recipe(args, meta: dict) -> dict:
    """{sigmas, rule, cfg} for the student: from the file's recipe or from the options."""
    from sgmd.recipe import SamplingRecipe
    from sgmd.schedules import parse_timesteps

    if args.recipe_from_lora:
        r = SamplingRecipe.from_metadata(meta)
        if r is None:
            raise SGMDError("--recipe-from-lora: the student file has no sgmd_recipe metadata; give --student-timesteps, "
                            "--student-shift and --rule instead")
        return {"sigmas": [float(s) for s in r.sigmas], "rule": r.update_rule, "cfg": float(r.cfg), "source": "file"}
    sig = student_sigmas(parse_timesteps(args.student_timesteps), args.student_shift)
    return {"sigmas": [float(s) for s in sig], "rule": args.rule, "cfg": float(args.student_cfg), "source": "options"}


def _json_safe(x):
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


SHIPPED_EVAL_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models", "eval")


def user_eval_cache_dir() -> str:
    """Where clips of teachers other than the shipped one are cached: outside the checkout, so that
    evaluating another teacher never writes into the repo's model folders."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "sgmd", "eval")


def teacher_cache_path(teacher_path: str, seeds: int, steps: int = 50, cfg: float = DEFAULT_GUIDANCE, shift: float = 5.0,
                       motion: float | None = None) -> str:
    """Where the teacher's clips for the evaluation set are cached: they depend only on the teacher
    file and the sampling settings, and take minutes to make on a CPU. The shipped teacher's clips
    ship in `models/eval/`; any other teacher's go to the user cache."""
    from sgmd.weights import file_sha256

    motion = file_motion_guidance(teacher_path) if motion is None else motion  # default: what the file records
    mg = f"_motion{motion:g}" if motion else ""
    name = f"teacher_{file_sha256(teacher_path)}_s{seeds}_{steps}steps_cfg{cfg:g}{mg}_shift{shift:g}.npz"
    shipped = os.path.join(SHIPPED_EVAL_DIR, name)
    return shipped if os.path.isfile(shipped) else os.path.join(user_eval_cache_dir(), name)


def evaluate_run(teacher_path: str, generator_path: str, out: str, seeds: int = DEFAULT_SEEDS, full: bool = False,
                 device: str = "cpu", cfg: float = DEFAULT_GUIDANCE) -> int:
    """The end of a default `training/run.py`: student (recipe from its file) vs teacher on the
    evaluation set, summary printed, files in `out`. The teacher is sampled at the CFG the student was
    distilled toward (`cfg`) and with the motion guidance its file records, which the distillation target
    may leave out; its clips come from the cache when present, else are sampled (and then cached)."""
    motion = file_motion_guidance(teacher_path)  # passed on, so cached teacher clips are recorded with it
    cache = teacher_cache_path(teacher_path, seeds, cfg=cfg, motion=motion)
    argv = ["--model", teacher_path, "--student-model" if full else "--lora", generator_path, "--recipe-from-lora",
            "--seeds", str(seeds), "--cfg", f"{cfg:g}", "--motion-guidance", f"{motion:g}", "--out", out, "--device", "cpu" if device == "auto" else device]
    if os.path.isfile(cache):
        argv += ["--teacher-samples", cache]
    rc = _run(build_parser().parse_args(argv))
    made = os.path.join(out, "teacher_samples.npz")
    if not os.path.isfile(cache) and os.path.isfile(made):
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        shutil.copyfile(made, cache)
    return rc


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except SGMDError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(args) -> int:
    t0 = time.time()
    if args.recipe_from_lora and not (args.lora or args.student_model):
        raise SGMDError("--recipe-from-lora needs --lora or --student-model")
    student = None
    if args.samples:
        student = read_samples_npz(args.samples)
        prompts, seeds = student[1], student[2]
    else:
        prompts, seeds = eval_prompt_set(args.seeds)
    samples_teacher = bool(args.model) and not (args.exact_teacher or args.teacher_samples)
    meta = read_metadata(args.model) if samples_teacher else {}  # the file says how it is sampled
    if args.motion_guidance is None:
        args.motion_guidance = motion_guidance_of(meta)
    settings = {"model": args.model, "teacher": {"steps": args.steps, "cfg": args.cfg, "shift": args.shift,
                                                 "motion_guidance": args.motion_guidance},
                "seeds_per_prompt": args.seeds if not args.samples else None, "n_clips": len(prompts),
                "noise_rule": "sgmd.noise.noise_for_seed: CPU torch.Generator().manual_seed(seed), randn [1,16,F,H,W]"}

    if args.exact_teacher and args.teacher_samples:
        raise SGMDError("--exact-teacher and --teacher-samples both give the teacher's clips: use one")
    if not args.model and (args.lora or not (args.exact_teacher or args.teacher_samples)):
        raise SGMDError("--model is required (the teacher file, and the base of a --lora)")
    if args.exact_teacher:
        settings["model"] = "exact denoiser (sgmd.toy_posterior)"
        model = None
        print(f"sampling the exact denoiser: {len(prompts)} clips, {args.steps} steps, cfg {args.cfg}, shift {args.shift}",
              flush=True)
        teacher_videos = generate_exact(prompts, seeds, args.steps, args.cfg, args.shift, args.batch_size)
    elif args.teacher_samples:
        tv, tp, ts = read_samples_npz(args.teacher_samples)
        if tp != list(prompts) or ts != list(seeds):
            raise SGMDError(f"{args.teacher_samples} holds other prompts/seeds than the evaluated set")
        teacher_videos = tv
        model = None
    else:
        model = load_wan(args.model, torch.float32, args.device).eval()
        mg = f", motion guidance {args.motion_guidance:g}" if args.motion_guidance else ""
        print(f"sampling the teacher: {len(prompts)} clips, {args.steps} steps, cfg {args.cfg}{mg}, shift {args.shift}",
              flush=True)
        teacher_videos = generate_teacher(model, prompts, seeds, args.steps, args.cfg, args.shift, args.batch_size,
                                          args.motion_guidance, still_pattern_of(meta, *CLIP_LATENT_SHAPE[2:]))

    student_videos = None
    if student is not None:
        student_videos = student[0]
        settings["student"] = {"samples": args.samples}
    elif args.lora or args.student_model:
        path = args.lora or args.student_model
        tensors, meta = read_safetensors(path)
        recipe = student_recipe(args, meta)
        if args.lora:
            base = model if model is not None else load_wan(args.model, torch.float32, args.device).eval()
            gen = apply_lora(base, tensors, args.lora_strength)
            model = None  # merged in place: no longer the teacher
        else:
            gen = load_wan(path, torch.float32, args.device).eval()
        print(f"sampling the student: {len(recipe['sigmas']) - 1} steps, rule {recipe['rule']}, cfg {recipe['cfg']}",
              flush=True)
        student_videos = generate_student(gen, prompts, seeds, recipe["sigmas"], recipe["rule"], recipe["cfg"],
                                          args.batch_size)
        settings["student"] = {"file": path, "lora_strength": args.lora_strength if args.lora else None, **recipe}

    teacher_m = metrics.evaluate_clips(teacher_videos, prompts, seeds, return_per_clip=True)
    student_m = None
    if student_videos is not None:
        student_m = metrics.evaluate_clips(student_videos, prompts, seeds, return_per_clip=True)
    if student_m is not None:
        ta, sa = metrics.analyse_clips(teacher_videos), metrics.analyse_clips(student_videos)
        student_m["fd_to_teacher"] = metrics.feature_frechet_distance(metrics.feature_matrix(sa), metrics.feature_matrix(ta))
        student_m["same_noise_distance"] = metrics.same_noise_distance(ta, sa)
        student_m["accuracy_gaps"] = metrics.paired_accuracy_gaps([c["checks"] for c in teacher_m["per_clip"]],
                                                                  [c["checks"] for c in student_m["per_clip"]])
    checks = quality_checks(teacher_m, student_m)
    summary = format_summary(teacher_m, student_m)
    print(summary)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        if not args.teacher_samples:
            write_samples_npz(os.path.join(args.out, "teacher_samples.npz"), teacher_videos, prompts, seeds)
        if student_videos is not None and not args.samples:
            write_samples_npz(os.path.join(args.out, "student_samples.npz"), student_videos, prompts, seeds)
        report = {"settings": settings, "teacher": teacher_m, "student": student_m, "checks": checks,
                  "teacher_bar": _verdict(checks, "teacher"), "student_bar": _verdict(checks, "student"),
                  "seconds": round(time.time() - t0, 1)}
        def write_report(tmp):
            with open(tmp, "w") as f:
                json.dump(_json_safe(report), f, indent=1)

        atomic_write(os.path.join(args.out, "metrics.json"), write_report, suffix=".json")
        with open(os.path.join(args.out, "summary.txt"), "w") as f:
            f.write(summary + "\n")
        print(f"wrote {args.out}/metrics.json in {time.time() - t0:.0f} s", flush=True)
    failed = any(c["passed"] is False for c in checks)
    return 1 if (args.strict and failed) else 0


if __name__ == "__main__":
    sys.exit(main())
