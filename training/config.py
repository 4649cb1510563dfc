"""The distillation config: one dataclass. The CLI (`training/run.py --help`) and `docs/config.md`
are generated from it, so they never drift. Values come from the defaults, then a TOML or YAML
file (`--config run.toml`), then the command line (which wins).

Regenerate the docs after editing a field: `python -m training.config docs/config.md`."""
import argparse
import math
import os
import sys
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Optional, Union

from sgmd import toyvideo
from sgmd.errors import SGMDError
from sgmd.samplers import DEFAULT_GUIDANCE
from sgmd.schedules import DEFAULT_STUDENT_SHIFT, DEFAULT_STUDENT_TIMESTEPS, student_sigmas
from training.eval_set import DEFAULT_SEEDS as DEFAULT_EVAL_SEEDS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OBJECTIVES = ("sgmd", "dmd2")
DTYPES = ("fp32", "bf16", "fp16")


def _opt(default, help: str, choices=None, group: str = "run"):
    meta = {"help": " ".join(help.split()), "group": group}
    if choices:
        meta["choices"] = tuple(choices)
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DistillConfig:
    """Everything a distillation run needs. Paths are relative to the current directory."""

    # --- what to distil
    objective: str = _opt("sgmd", "Distillation objective: `sgmd` (1 fake-score update per generator update) or the "
                          "`dmd2` baseline (5).", OBJECTIVES, "task")
    teacher: str = _opt("models/diffusion_models/sgmd_tiny_teacher.safetensors", "Teacher: a Wan 2.1 text-to-video safetensors file "
                        "(original Wan keys, with or without `model.diffusion_model.`). A relative path that does not "
                        "exist in the current directory is looked up in the repository root (where the tiny teacher "
                        "ships).", group="task")
    prompts: str = _opt("", "Training prompts. Empty: the toy task's training prompts. A text file: one prompt per line, "
                        "encoded with the toy text encoder (the real umT5 encoder is not available to this trainer; "
                        "for a real Wan teacher precompute embeddings). A `.safetensors` file: precomputed embeddings, "
                        "key `context` [N, L, 4096], optional `uncond` [1 or N, L, 4096] (else zeros) and optional "
                        "metadata `prompts` (JSON list of N texts).", group="task")
    out: str = _opt("runs/distill", "Output folder: metrics.jsonl, checkpoints/, the exported generator, samples.",
                    group="task")
    init_generator: str = _opt("", "Optional start point for the generator: a LoRA file from an earlier export (LoRA "
                               "mode) or a full Wan file (`--full`). Must match the teacher's architecture.", group="task")
    # --- optimisation
    iterations: int = _opt(700, "Generator updates to train for (each followed by the objective's fake-score updates). "
                           "700 fit the 10-minute CPU budget with earlier tiny teachers (400 gave a worse student); the shipped "
                           "teacher, distilled with the diversity anchor, recommends fewer (docs/tiny-model.md).",
                           group="optimisation")
    lr_generator: float = _opt(2e-4, "Generator AdamW learning rate (constant). The reference uses 2e-6 (full) / 1e-4 "
                               "(LoRA, 14B) over thousands of iterations; tuned on the tiny teacher's default run (then 400 iterations; "
                               "docs/tiny-model.md: 5e-4 degraded the student).", group="optimisation")
    lr_fake: float = _opt(2e-4, "Fake-score AdamW learning rate (constant). Equal to the generator's: with one fake "
                          "update per iteration, the reference ratio 1/5 (2e-6 / 4e-7) let the fake score lag on the "
                          "tiny teacher (docs/tiny-model.md).", group="optimisation")
    betas: tuple = _opt((0.0, 0.999), "AdamW betas (reference: 0, 0.999; beta1 = 0 reacts fast to the moving fake "
                        "score).", group="optimisation")
    weight_decay: float = _opt(0.01, "AdamW weight decay.", group="optimisation")
    adam_eps: float = _opt(1e-8, "AdamW epsilon.", group="optimisation")
    batch_size: int = _opt(4, "Prompts per micro-batch (per process). Small because every iteration runs the teacher "
                           "(with CFG), the fake score and the generator rollout on CPU.", group="optimisation")
    grad_accum: int = _opt(1, "Micro-batches accumulated per optimizer step (each phase).", group="optimisation")
    grad_clip: float = _opt(10.0, "Gradient-norm clip for both networks (reference: 10).", group="optimisation")
    fake_updates: Optional[int] = _opt(None, "Fake-score updates per generator update; none = the objective's own "
                                       "(SGMD 1, DMD2 5).", group="optimisation")
    ema: Optional[float] = _opt(0.99, "EMA decay of the generator weights; none = off. The exported generator and the "
                                "samples use the EMA weights. Ours (the SGMD reference has none, DMD2 makes it an option): "
                                "on teacher v23 it stopped the last iterations' noise from making 'slowly' quick, and "
                                "the student then matched the CFG teacher it is distilled toward on every criterion "
                                "(docs/tiny-model.md). With --full it holds an fp32 copy of the generator.", group="optimisation")
    ema_start: int = _opt(200, "Iteration at which the EMA starts tracking (before: it copies the weights).",
                          group="optimisation")
    # --- networks
    full: bool = _opt(False, "Train full copies of the generator and the fake score instead of LoRA adapters on one "
                      "shared frozen base (3x the weights in memory).", group="networks")
    lora_rank: int = _opt(64, "LoRA rank of both adapters (reference LoRA variant: 64).", group="networks")
    lora_alpha: float = _opt(64.0, "LoRA alpha (scale = alpha / rank).", group="networks")
    lora_targets: list = _opt(["q", "k", "v", "o", "ffn.0", "ffn.2"], "Linear layers that get adapters, by name "
                              "suffix inside each block (reference: q, k, v, o, ffn.0, ffn.2).", group="networks")
    gradient_checkpointing: bool = _opt(False, "Recompute activations in the backward pass to save memory (LoRA mode "
                                        "checkpoints each network call; full mode each block).", group="networks")
    # --- method
    student_timesteps: list = _opt(list(DEFAULT_STUDENT_TIMESTEPS), "Raw student timesteps in (0, 1000], strictly "
                                   "decreasing; warped by the shift into the sigma list (then 0).", group="method")
    student_shift: float = _opt(DEFAULT_STUDENT_SHIFT, "Shift of the student schedule and of the score noise levels.",
                                group="method")
    update_rule: str = _opt("euler", "Few-step update: `euler` (SGMD reference; ComfyUI `euler`) or `renoise` (DMD2 / "
                            "Self-Forcing; ComfyUI `lcm`). Used in training rollouts and recorded for inference.",
                            ("euler", "renoise"), "method")
    guidance: float = _opt(DEFAULT_GUIDANCE, "Teacher classifier-free guidance, standard form (1 = no guidance).", group="method")
    motion_guidance: float = _opt(0.0, "Teacher motion guidance m in the distillation target (`sgmd.samplers.guided`): adds "
                                  "m (v_c - v_c of the state with its frames averaged), one more teacher pass per call; 0 = "
                                  "off; negative = what the teacher file records (`sgmd.teacher_sampling`). The evaluation "
                                  "samples the teacher as its file records either way. Toward teacher v23's guided velocity "
                                  "the student made 'slowly' quick; toward the shipped teacher's it needs the diversity "
                                  "anchor (docs/tiny-model.md).",
                                  group="method")
    lambda_nr: float = _opt(0.1, "SGMD weight of the negative-residual term.", group="method")
    diversity_anchor: bool = _opt(False, "SGMD teacher-anchor diversity term.", group="method")
    gan: bool = _opt(False, "GAN term (DMD2's; either objective): a head on the fake network's tokens tells noised real "
                     "videos from generator samples. Needs real videos, which the toy task renders for its prompts.", group="method")
    teacher_pairs: str = _opt("", "Teacher-pair regression (`sgmd.objectives.pairs`; ours, off by default): a file of the "
                              "teacher's samples from known noises (made once by training/teacher_pairs.py) on which the "
                              "student's first step is regressed, teaching it which mode its noise picks. \"\" = off.",
                              group="method")
    pairs_weight: float = _opt(0.05, "Weight of the teacher-pair regression.", group="method")
    pairs_every_step: bool = _opt(False, "Teacher pairs regress the clean estimate of a uniformly drawn student step "
                                  "(the student's own rollout from the pair's noise), not only the first step's.",
                                  group="method")
    gan_weight: float = _opt(4e-3, "Generator weight of the GAN term (DMD2: 3e-3 to 5e-3; its discriminator weight is "
                             "1e-2).", group="method")
    # --- latent size
    latent_frames: int = _opt(toyvideo.FRAMES, "Latent frames of the training videos.", group="size")
    latent_height: int = _opt(toyvideo.SIZE, "Latent height (multiple of the patch size 2).", group="size")
    latent_width: int = _opt(toyvideo.SIZE, "Latent width (multiple of the patch size 2).", group="size")
    # --- runtime
    device: str = _opt("auto", "`auto` (CUDA if available, else CPU), `cpu`, `cuda`, `cuda:N`. Under torchrun each "
                       "process uses cuda:LOCAL_RANK.", group="runtime")
    dtype: str = _opt("fp32", "Compute dtype. `bf16`/`fp16`: autocast compute with fp32 master weights and optimizer "
                      "state (fp16 has no loss scaling: prefer bf16).", DTYPES, "runtime")
    seed: int = _opt(0, "Seed of the CPU random generator that draws prompts, noise, exit steps and noise levels "
                     "(and of the LoRA initialisation). Same seed, same result on CPU.", group="runtime")
    log_every: int = _opt(1, "Append a line to metrics.jsonl every N iterations.", group="runtime")
    checkpoint_every: int = _opt(50, "Checkpoint every N iterations (and at the end); the last 2 are kept.",
                                 group="runtime")
    sample_every: int = _opt(0, "Write samples every N iterations; 0 = only at the end.", group="runtime")
    samples: int = _opt(4, "Fixed (prompt, seed) pairs in samples.npz: the first N held-out toy prompts (or of the "
                        "prompt file), seeds 0..N-1.", group="runtime")
    resume: Union[bool, str] = _opt(False, "Continue from the newest valid checkpoint in <out>/checkpoints (`--resume`) "
                                    "or from a given checkpoint file (`--resume PATH`).", group="runtime")
    evaluate: bool = _opt(True, "After training on the toy task (default prompts), evaluate the 4-step generator on "
                          "the held-out prompt set (`training/evaluate.py`) and print the summary beside the teacher's "
                          "figures (the shipped teacher's clips ship in models/eval/; other teachers' are cached in ~/.cache/sgmd/eval/).", group="runtime")
    eval_seeds: int = _opt(DEFAULT_EVAL_SEEDS, "Seeds per prompt of that evaluation (25 prompts; 4 is the quick look, its gaps' standard errors as wide as the 5-point bar).", group="runtime")
    max_nonfinite: int = _opt(5, "Stop when more than N consecutive steps have a non-finite loss or gradient (each "
                              "one is skipped with a warning).", group="runtime")


# ---------------------------------------------------------------------------------------------
# values: coercion (file and command line share it) and checks


def _kind(name: str):
    return typing.get_type_hints(DistillConfig)[name]


def coerce(name: str, value):
    """Turn a file or command-line value into the field's type; one-line SGMDError if impossible."""
    try:
        return _coerce(_kind(name), value)
    except (TypeError, ValueError):
        raise SGMDError(f"bad value for {name}: {value!r} (expected {_type_name(_kind(name))})") from None


def _coerce(kind, value):
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Union:
        if type(None) in args:
            if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
                return None
            return _coerce(next(a for a in args if a is not type(None)), value)
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _BOOLS:
            return _BOOLS[value.strip().lower()]
        if isinstance(value, str) and value:
            return value
        raise ValueError(value)
    if kind in (list, tuple):
        items = value.replace(",", " ").split() if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise ValueError(value)
        return kind(items)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _BOOLS:
            return _BOOLS[value.strip().lower()]
        raise ValueError(value)
    if kind is int:
        if isinstance(value, bool):
            raise ValueError(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, (int, str)):
            return int(value)
        raise ValueError(value)
    if kind is float:
        if isinstance(value, bool):
            raise ValueError(value)
        if isinstance(value, (int, float, str)):
            return float(value)
        raise ValueError(value)
    if kind is str:
        if isinstance(value, str):
            return value
        raise ValueError(value)
    raise TypeError(kind)


_BOOLS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}

_ELEMENT = {"betas": float, "student_timesteps": float, "lora_targets": str}


def finish(cfg: DistillConfig) -> DistillConfig:
    """Convert list elements and check every value; one-line SGMDError naming the option."""
    for name, kind in _ELEMENT.items():
        try:
            setattr(cfg, name, type(getattr(cfg, name))(kind(v) for v in getattr(cfg, name)))
        except (TypeError, ValueError):
            raise SGMDError(f"bad value for {name}: {getattr(cfg, name)!r} (expected a list of {kind.__name__})") from None
    for f in fields(cfg):
        choices = f.metadata.get("choices")
        if choices and getattr(cfg, f.name) not in choices:
            raise SGMDError(f"unknown {f.name} {getattr(cfg, f.name)!r}; choose one of {', '.join(choices)}")
    _need(len(cfg.betas) == 2 and all(0 <= b < 1 for b in cfg.betas), "betas must be two numbers in [0, 1)", cfg.betas)
    for name in ("lr_generator", "lr_fake", "grad_clip", "lora_alpha", "student_shift", "adam_eps"):
        v = getattr(cfg, name)
        _need(math.isfinite(v) and v > 0, f"{name} must be a positive number", v)
    _need(math.isfinite(cfg.guidance) and cfg.guidance > 0, "guidance must be positive (1 = no guidance)", cfg.guidance)
    _need(math.isfinite(cfg.motion_guidance), "motion guidance must be a number (0 = off, negative = from the teacher file)",
          cfg.motion_guidance)
    for name in ("weight_decay", "lambda_nr", "gan_weight", "pairs_weight"):
        v = getattr(cfg, name)
        _need(math.isfinite(v) and v >= 0, f"{name} must be a number >= 0", v)
    for name in ("iterations", "batch_size", "grad_accum", "lora_rank", "log_every", "checkpoint_every",
                 "latent_frames", "latent_height", "latent_width"):
        _need(getattr(cfg, name) >= 1, f"{name} must be >= 1", getattr(cfg, name))
    for name in ("sample_every", "samples", "max_nonfinite", "ema_start"):
        _need(getattr(cfg, name) >= 0, f"{name} must be >= 0", getattr(cfg, name))
    _need(cfg.fake_updates is None or cfg.fake_updates >= 0, "fake_updates must be >= 0 (or none)", cfg.fake_updates)
    _need(cfg.ema is None or 0 < cfg.ema < 1, "ema must be a decay in (0, 1) (or none)", cfg.ema)
    _need(bool(cfg.lora_targets), "lora_targets must name at least one layer", cfg.lora_targets)
    _need(bool(cfg.teacher) and bool(cfg.out), "teacher and out must be paths", (cfg.teacher, cfg.out))
    try:  # schedule errors now, not after loading the teacher
        student_sigmas(cfg.student_timesteps, cfg.student_shift)
    except SGMDError as e:
        raise SGMDError(f"student_timesteps {list(cfg.student_timesteps)} at shift {cfg.student_shift}: {e}") from None
    return cfg


def _need(ok: bool, what: str, value) -> None:
    if not ok:
        raise SGMDError(f"{what}; got {value!r}")


def repo_path(path: str) -> str:
    """A relative path missing from the current directory but present in the repository root
    resolves there (the shipped tiny teacher)."""
    if path and not os.path.isabs(path) and not os.path.exists(path) and os.path.exists(os.path.join(ROOT, path)):
        return os.path.join(ROOT, path)
    return path


def to_json_dict(cfg: DistillConfig) -> dict:
    d = asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


# ---------------------------------------------------------------------------------------------
# files and command line


def read_config_file(path: str) -> dict:
    """TOML (`.toml`) or YAML (`.yaml`/`.yml`): a flat table of option names -> values."""
    if not os.path.isfile(path):
        raise SGMDError(f"config file not found: {path}")
    try:
        if path.endswith(".toml"):
            try:
                import tomllib
            except ImportError:  # Python 3.10
                raise SGMDError("TOML config files need Python 3.11+; use a .yaml file") from None
            with open(path, "rb") as f:
                data = tomllib.load(f)
        elif path.endswith((".yaml", ".yml")):
            import yaml

            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f) or {}
        else:
            raise SGMDError(f"config file must be .toml, .yaml or .yml: {path}")
    except SGMDError:
        raise
    except Exception as e:  # tomllib / yaml parse errors
        raise SGMDError(f"cannot parse {path}: {' '.join(str(e).split())[:160]}") from None
    if not isinstance(data, dict):
        raise SGMDError(f"config file {path} must hold a table of option = value")
    known = {f.name for f in fields(DistillConfig)}
    out = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise SGMDError(f"unknown option {key!r} in {path}; see `training/run.py --help` or docs/config.md")
        if isinstance(value, dict):
            raise SGMDError(f"option {key!r} in {path} must be a value, not a table")
        out[name] = value
    return out


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print usage + exit 2: we want one line
        raise SGMDError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="training/run.py", description="Distil a Wan 2.1 text-to-video teacher into a few-step "
                "generator with SGMD (or the DMD2 baseline). Options come from the defaults, then the teacher "
                "file's recommendations (method and optimisation options only), then --config, then the command line.")
    p.add_argument("--config", metavar="FILE", help="TOML or YAML file of option = value (command line wins).")
    groups = {}
    shipped = teacher_recommendations(DistillConfig.teacher)
    for f in fields(DistillConfig):
        g = groups.setdefault(f.metadata["group"], p.add_argument_group(f.metadata["group"]))
        flag = "--" + f.name.replace("_", "-")
        also = f"; the shipped teacher recommends {_show_value(shipped[f.name])}" if f.name in shipped else ""
        text = f"{f.metadata['help']} (default: {_show(f)}{also})".replace("%", "%%")
        kind = _kind(f.name)
        if kind is bool:
            g.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=text)
        elif f.name == "resume":
            g.add_argument(flag, nargs="?", const="true", metavar="PATH", default=argparse.SUPPRESS, help=text)
        elif kind in (list, tuple):
            g.add_argument(flag, nargs="+", metavar="V", default=argparse.SUPPRESS, help=text)
        else:
            g.add_argument(flag, metavar=_metavar(f), default=argparse.SUPPRESS, help=text)
    return p


TEACHER_SETTABLE = ("optimisation", "method")  # the option groups a teacher file may recommend values for


def teacher_recommendations(teacher: str) -> dict:
    """The method and optimisation options the teacher file at `teacher` recommends for distilling it
    (`sgmd.teacher_sampling.distill_defaults_of`); {} for a missing or unreadable file (the loader
    reports it)."""
    from sgmd.teacher_sampling import distill_defaults_of
    from sgmd.weights import read_metadata

    path = repo_path(teacher)
    try:
        recommended = distill_defaults_of(read_metadata(path)) if os.path.isfile(path) else {}
    except SGMDError:  # not a readable safetensors file: the teacher loader says why, once
        return {}
    settable = {f.name for f in fields(DistillConfig) if f.metadata["group"] in TEACHER_SETTABLE}
    return {k: v for k, v in recommended.items() if k in settable}


def with_teacher_defaults(values: dict) -> dict:
    """`values` (option -> value) with the options the teacher file recommends for distilling it
    (`sgmd.teacher_sampling.distill_defaults_of`) added where `values` does not set them: defaults <-
    teacher file <- config file <- command line. Only optimisation and method options are taken (a
    file never moves outputs or devices); a missing or unreadable teacher adds nothing (the loader
    reports it)."""
    recommended = teacher_recommendations(str(values.get("teacher", DistillConfig.teacher)))
    if not _on_toy_task(values):  # the GAN term needs the toy task's real clips (`trainer._gan_term`)
        recommended.pop("gan", None)
    return {**recommended, **values}


def on_toy_task(cfg: "DistillConfig") -> bool:
    """Whether a run trains on the toy task: its own prompts (no prompt file) at its latent size. Only
    there can real clips be rendered (the GAN term, `trainer._gan_term`)."""
    return not cfg.prompts and (cfg.latent_frames, cfg.latent_height, cfg.latent_width) == (
        toyvideo.FRAMES, toyvideo.SIZE, toyvideo.SIZE)


def _on_toy_task(values: dict) -> bool:
    """`on_toy_task` for option values not yet checked (a teacher's recommendations are merged before)."""
    keys = ("prompts", "latent_frames", "latent_height", "latent_width")
    return on_toy_task(DistillConfig(**{k: coerce(k, values[k]) for k in keys if values.get(k) is not None}))


def parse_config(argv=None) -> DistillConfig:
    """defaults <- the teacher file's recommendations <- --config file <- command line; every value
    checked (one-line SGMDError)."""
    args = vars(build_parser().parse_args(argv))
    values = read_config_file(args.pop("config")) if args.get("config") else {}
    args.pop("config", None)
    for name, value in args.items():
        values[name] = " ".join(value) if isinstance(value, list) else value
    values = with_teacher_defaults(values)
    cfg = DistillConfig()
    for name, value in values.items():
        setattr(cfg, name, coerce(name, value))
    return finish(cfg)


def _default(f):
    return f.default_factory() if f.default is MISSING else f.default


def _show(f) -> str:
    return _show_value(_default(f))


def _show_value(v) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x) for x in v)
    return str(v) if v != "" else '""'


def _metavar(f) -> str:
    choices = f.metadata.get("choices")
    if choices:
        return "{" + ",".join(choices) + "}"
    kind = _kind(f.name)
    kind = next((a for a in typing.get_args(kind) if a is not type(None)), kind)
    return {int: "N", float: "X", str: "PATH" if f.name in ("teacher", "prompts", "out", "init_generator") else "S"}.get(kind, "V")


def _type_name(kind) -> str:
    args = typing.get_args(kind)
    if typing.get_origin(kind) is Union:
        return " or ".join(_type_name(a) for a in args if a is not type(None)) + (" or none" if type(None) in args else "")
    return {list: "a list", tuple: "a list"}.get(kind, getattr(kind, "__name__", str(kind)))


# ---------------------------------------------------------------------------------------------
# generated documentation


def config_markdown() -> str:
    lines = ["# Distillation options", "",
             "Generated from `training/config.py` (`DistillConfig`) by `python -m training.config docs/config.md`;",
             "do not edit by hand. Set options on the command line (`--lr-generator 1e-4`), or in a TOML/YAML file",
             "passed with `--config` (`lr_generator = 1e-4`); the command line wins. A teacher file may recommend",
             "values for the method and optimisation options (its `sgmd_teacher` metadata, `distill`:",
             "`sgmd.teacher_sampling.set_distill_defaults`); they replace the defaults below, and `--config` and the",
             "command line still win over them. A recommended `--gan` applies to toy-task runs only (no `--prompts`, the",
             "default latent size): only there are real clips rendered for its discriminator. The column \"shipped",
             "teacher\" gives what the shipped tiny teacher recommends (the bare `python training/run.py` uses it).", ""]
    shipped = teacher_recommendations(DistillConfig.teacher)
    group = None
    for f in fields(DistillConfig):
        if f.metadata["group"] != group:
            group = f.metadata["group"]
            lines += [f"## {group}", "", "| option | default | shipped teacher | meaning |", "|---|---|---|---|"]
        flag = "--" + f.name.replace("_", "-")
        rec = f"`{_show_value(shipped[f.name])}`" if f.name in shipped else ""
        lines.append(f"| `{flag}` | `{_show(f)}` | {rec} | {f.metadata['help'].replace('|', '/')} |")
        nxt = fields(DistillConfig).index(f) + 1
        if nxt == len(fields(DistillConfig)) or fields(DistillConfig)[nxt].metadata["group"] != group:
            lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    text = config_markdown()
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        print(text, end="")
