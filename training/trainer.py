"""Assemble a distillation run from a `DistillConfig` and carry it out.

`train(cfg)` = `build(cfg)` (teacher, roles, objective, prompts, optimizers, resume) + the loop +
final checkpoint, generator export and samples. Every user-fixable problem is an SGMDError."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from sgmd import toyvideo
from sgmd.errors import SGMDError
from sgmd.objectives import make_objective
from sgmd.recipe import SamplingRecipe
from sgmd.schedules import student_sigmas
from sgmd.teacher_sampling import motion_guidance_of, still_pattern_of
from sgmd.weights import file_sha256, load_wan, read_metadata, read_safetensors
from training import distributed
from training.checkpoint import (Checkpoint, checkpoint_dir, latest_checkpoint, list_checkpoints, read_checkpoint,
                                 remove_temp_files, write_checkpoint)
from training.config import DistillConfig, on_toy_task, repo_path, to_json_dict
from training.console import info, warn
from training.data import PromptSource, make_prompt_source
from training.ema import EMA
from training.export import export_generator
from training.loop import TrainState, train_loop
from training.roles import DistillRoles, emulated_dtype_warning
from training.samples import generate_samples, write_samples

# options whose change makes a checkpoint unusable (other changes are applied with a warning)
IDENTITY = ("objective", "full", "lora_rank", "lora_alpha", "lora_targets", "student_timesteps", "student_shift",
            "update_rule", "gan")
QUIET = ("iterations", "resume", "out", "log_every", "checkpoint_every", "sample_every", "samples", "device")


@dataclass
class Run:
    cfg: DistillConfig
    device: torch.device
    roles: DistillRoles
    objective: object
    source: PromptSource
    sigmas: torch.Tensor
    params: dict  # role -> trainable parameters (the fake's include objective extras, e.g. a GAN head)
    optimizers: dict  # role -> AdamW
    state: TrainState
    teacher_sha256: str
    ema: EMA | None = None
    outputs: dict = field(default_factory=dict)
    checkpoint_step: int = -1  # step of the newest checkpoint (same on every rank: no file-system look-up)

    # --- checkpoints

    def save_checkpoint(self) -> str:
        """Collective under torchrun (RNG states are gathered); rank 0 writes."""
        rng = distributed.gather_bytes(self.state.rng.get_state(), self.device)
        self.checkpoint_step = self.state.step
        if not distributed.is_main():
            return ""
        roles = {r: self.roles.state_dict(r) for r in ("generator", "fake")}
        n_role = len(self.roles.parameters("fake"))
        roles["fake_extra"] = {str(i): p.detach() for i, p in enumerate(self.params["fake"][n_role:])}
        ckpt = Checkpoint(self.state.step, roles, {r: o.state_dict() for r, o in self.optimizers.items()}, rng, {
            "config": to_json_dict(self.cfg), "model_config": self.roles.teacher_model.cfg.to_dict(),
            "teacher_sha256": self.teacher_sha256, "mode": self.roles.mode, "wall_time": self.state.wall_time,
            "nonfinite_streak": dict(self.state.nonfinite_streak), "world_size": len(rng),
        }, self.ema.state_dict() if self.ema is not None else None)
        path = write_checkpoint(self.cfg.out, ckpt)
        self.outputs["checkpoint"] = path
        return path

    def restore(self, ckpt: Checkpoint) -> None:
        meta, cfg = ckpt.meta, self.cfg
        where = ckpt.path
        if meta.get("model_config") != self.roles.teacher_model.cfg.to_dict():
            raise SGMDError(f"{where} was trained on a different model ({_arch(meta.get('model_config'))}) than the "
                            f"teacher {cfg.teacher} ({_arch(self.roles.teacher_model.cfg.to_dict())})")
        saved = meta.get("config", {})
        changed = [k for k in IDENTITY if k in saved and saved[k] != to_json_dict(cfg)[k]]
        if changed:
            k = changed[0]
            raise SGMDError(f"{where} was trained with {k} = {saved[k]!r}, this run has {to_json_dict(cfg)[k]!r}; "
                            f"resume with the same {', '.join(changed)} or start a new --out")
        other = [k for k in saved if k not in IDENTITY + QUIET and saved[k] != to_json_dict(cfg).get(k)]
        if other:
            warn(f"resuming with changed options: {', '.join(other)}")
        if meta.get("teacher_sha256") != self.teacher_sha256:
            warn(f"{where} was trained from a teacher file with another SHA-256 than {cfg.teacher}")
        if len(ckpt.rng_states) != distributed.world_size():
            raise SGMDError(f"{where} was written by {len(ckpt.rng_states)} processes; resume with the same number "
                            f"(now {distributed.world_size()})")
        for role in ("generator", "fake"):
            self.roles.load_state_dict(role, ckpt.roles[role], source=where)
        extra = self.params["fake"][len(self.roles.parameters("fake")):]
        saved_extra = ckpt.roles.get("fake_extra") or {}
        if len(saved_extra) != len(extra):
            raise SGMDError(f"{where} does not match this run's objective extras (GAN head); same --gan as before?")
        with torch.no_grad():
            for i, p in enumerate(extra):
                p.copy_(saved_extra[str(i)])
        for role, opt in self.optimizers.items():
            try:
                opt.load_state_dict(ckpt.optimizers[role])
            except (ValueError, KeyError, RuntimeError) as e:
                raise SGMDError(f"{where}: the {role} optimizer state does not fit this run ({str(e)[:100]})") from None
        set_hyperparameters(self.optimizers, cfg)
        if self.ema is not None:
            if ckpt.ema is None:
                warn(f"{where} has no EMA; starting the EMA from the current weights")
                self.ema = EMA(self.params["generator"], cfg.ema, cfg.ema_start)
            else:
                self.ema.load_state_dict(ckpt.ema)
        self.state.rng.set_state(ckpt.rng_states[distributed.rank()].to(torch.uint8))
        self.state.step = self.checkpoint_step = ckpt.step
        self.state.wall_time = float(meta.get("wall_time", 0.0))
        self.state.nonfinite_streak.update({k: int(v) for k, v in meta.get("nonfinite_streak", {}).items()})
        info(f"resumed from {where} at iteration {ckpt.step}")

    # --- outputs

    def recipe(self) -> SamplingRecipe:
        cfg = self.cfg
        return SamplingRecipe(sigmas=[float(s) for s in self.sigmas], shift=cfg.student_shift,
                              student_timesteps=list(cfg.student_timesteps), update_rule=cfg.update_rule, cfg=1.0,
                              objective=cfg.objective, teacher_sha256=self.teacher_sha256, iterations=self.state.step)

    def write_samples(self) -> str:
        if not distributed.is_main() or not self.cfg.samples:
            return ""
        videos, prompts, seeds = generate_samples(self)
        path = write_samples(self.cfg.out, self.state.step, videos, prompts, seeds, final=self.state.step >= self.cfg.iterations)
        self.outputs["samples"] = path
        return path

    def export(self) -> str:
        if not distributed.is_main():
            return ""
        path = export_generator(self, full=self.cfg.full)
        self.outputs["generator"] = path
        return path


def build(cfg: DistillConfig) -> Run:
    device = _device(cfg.device)
    teacher_path = repo_path(cfg.teacher)
    if not os.path.isfile(teacher_path):
        raise SGMDError(f"teacher not found: {cfg.teacher} (pass --teacher PATH to a Wan 2.1 T2V .safetensors)")
    sigmas = student_sigmas(cfg.student_timesteps, cfg.student_shift)
    source = make_prompt_source(cfg.prompts)
    if why := emulated_dtype_warning(device.type, cfg.dtype):
        warn(f"--dtype {cfg.dtype}: {why}")
    frozen_dtype = torch.float32 if cfg.full or cfg.dtype == "fp32" else {"bf16": torch.bfloat16, "fp16": torch.float16}[cfg.dtype]
    teacher = load_wan(teacher_path, dtype=frozen_dtype, device=device)
    teacher_meta = read_metadata(teacher_path)
    if cfg.motion_guidance < 0:  # resolved here, so checkpoints and exports record the value used
        cfg.motion_guidance = motion_guidance_of(teacher_meta)
    _check_sizes(cfg, teacher.cfg, source)
    roles = DistillRoles(teacher, cfg.full, cfg.dtype, cfg.gradient_checkpointing, cfg.lora_rank, cfg.lora_alpha,
                         cfg.lora_targets, seed=cfg.seed)
    if cfg.init_generator:
        tensors, _ = read_safetensors(cfg.init_generator)
        roles.load_state_dict("generator", tensors, source=cfg.init_generator)  # the fake starts from the teacher
    teacher_sha256 = file_sha256(teacher_path, n=64)
    objective = _objective(cfg, sigmas, roles, source, teacher_meta, teacher_sha256)
    _synchronise_exit_index(objective, device)
    params = {"generator": roles.generator_parameters(),
              "fake": roles.fake_parameters() + list(getattr(objective, "extra_fake_parameters", lambda: [])())}
    distributed.broadcast_parameters(params["generator"] + params["fake"])
    optimizers = {role: torch.optim.AdamW(params[role], lr=1.0) for role in params}
    set_hyperparameters(optimizers, cfg)
    rank = distributed.rank()
    state = TrainState(rng=torch.Generator().manual_seed(cfg.seed + 1_000_003 * rank))
    ema = EMA(params["generator"], cfg.ema, cfg.ema_start) if cfg.ema is not None else None
    run = Run(cfg, device, roles, objective, source, sigmas, params, optimizers, state,
              teacher_sha256, ema)
    _resume(run)
    return run


def train(cfg: DistillConfig, should_stop=None, on_metrics=None) -> dict:
    """Run the whole distillation; returns the written paths (checkpoint, generator, samples)."""
    distributed.setup(cfg.device)
    try:
        run = build(cfg)
        if run.state.step >= cfg.iterations:
            info(f"already at iteration {run.state.step} >= --iterations {cfg.iterations}: exporting only")
        train_loop(run, should_stop=should_stop, on_metrics=on_metrics)
        if distributed.world_size() > 1:
            spread = distributed.max_divergence(run.params["generator"])
            if spread > 1e-5:
                raise SGMDError(f"processes disagree on the generator weights (max difference {spread:.3g}); please report")
        if run.checkpoint_step != run.state.step:
            run.save_checkpoint()
        run.export()
        run.write_samples()
        distributed.barrier()
        return run.outputs
    finally:
        distributed.teardown()


# ---------------------------------------------------------------------------------------------


def set_hyperparameters(optimizers: dict, cfg: DistillConfig) -> None:
    """The config's values win over a checkpoint's (e.g. a lower lr after a divergence)."""
    lrs = {"generator": cfg.lr_generator, "fake": cfg.lr_fake}
    for role, opt in optimizers.items():
        for group in opt.param_groups:
            group.update(lr=lrs[role], betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, eps=cfg.adam_eps)


def _device(name: str) -> torch.device:
    dev = distributed.setup(name)  # idempotent: returns this process's device
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SGMDError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    if dev.type not in ("cpu", "cuda"):
        raise SGMDError(f"--device {name}: only cpu and cuda are supported")
    return dev


def _check_sizes(cfg: DistillConfig, model_cfg, source: PromptSource) -> None:
    pt, ph, pw = model_cfg.patch_size
    for name, size, patch in (("frames", cfg.latent_frames, pt), ("height", cfg.latent_height, ph),
                              ("width", cfg.latent_width, pw)):
        if size % patch:
            raise SGMDError(f"latent {name} {size} is not divisible by the model's patch size {patch}")
    dim = source.fixed(1)[1].shape[-1]
    if dim != model_cfg.text_dim:
        raise SGMDError(f"prompt embeddings are {dim}-wide but the teacher expects {model_cfg.text_dim}")


def _objective(cfg: DistillConfig, sigmas, roles: DistillRoles, source: PromptSource, teacher_meta: dict,
               teacher_sha256: str):
    options = dict(sigmas=sigmas, rule=cfg.update_rule, cfg_scale=cfg.guidance, score_shift=cfg.student_shift,
                   diversity=True if cfg.diversity_anchor else None, motion_guidance=cfg.motion_guidance)
    if cfg.motion_guidance:
        options["still_pattern"] = still_pattern_of(teacher_meta, cfg.latent_frames, cfg.latent_height, cfg.latent_width)
    if cfg.objective == "sgmd":
        options["lambda_nr"] = cfg.lambda_nr
    if cfg.objective == "dmd2" and cfg.fake_updates:
        options["fake_updates_per_generator_update"] = cfg.fake_updates
    if cfg.gan:
        options["gan"] = _gan_term(cfg, roles, teacher_meta)
    if cfg.teacher_pairs:
        options["pairs"] = _pairs_term(cfg, sigmas, roles, source, teacher_sha256)
    return make_objective(cfg.objective, **options)


def _pairs_term(cfg: DistillConfig, sigmas, roles: DistillRoles, source: PromptSource, teacher_sha256: str):
    """The teacher pairs, checked against this teacher (hash), schedule and latent size."""
    from training.teacher_pairs import load_pairs

    pairs = load_pairs(repo_path(cfg.teacher_pairs), teacher_sha256, source.encode,
                       cfg.pairs_weight, cfg.pairs_every_step)
    latent = (roles.teacher_model.cfg.in_dim, cfg.latent_frames, cfg.latent_height, cfg.latent_width)
    pairs.check_student(sigmas, latent)
    return pairs


def _synchronise_exit_index(objective, device) -> None:
    """Under torchrun every process must take the same exit step (method doc s2): each draws its
    own (keeping its random stream in step) and rank 0's value is used. The objectives draw it
    through `draw_exit_index(batch)`, which is wrapped here."""
    if distributed.world_size() == 1:
        return
    draw = getattr(objective, "draw_exit_index", None)
    if draw is None:
        warn(f"objective {objective.name!r} has no draw_exit_index: exit steps are not synchronised across processes")
        return
    objective.draw_exit_index = lambda batch: distributed.broadcast_int(draw(batch), device)


def _gan_term(cfg: DistillConfig, roles: DistillRoles, teacher_meta: dict):
    """The GAN head needs real videos: only the toy task can render them (for its prompts), encoded in the
    codec the teacher was trained in."""
    from sgmd import codec
    from sgmd.objectives import GANTerm
    from sgmd.teacher_sampling import codec_of

    codec_id = codec_of(teacher_meta)
    if codec_id is None:
        raise SGMDError("--gan needs real videos in the teacher's latent space: only a toy teacher (its file names its "
                        "toy codec) has one")

    if not on_toy_task(cfg):
        raise SGMDError(f"--gan needs real videos, which only the toy task provides: use the default prompts and latent "
                        f"size {toyvideo.FRAMES}x{toyvideo.SIZE}x{toyvideo.SIZE}")

    def real_latents(batch):
        clips = [toyvideo.clip_for_prompt(toyvideo.Prompt.parse(p), batch.generator) for p in batch.prompts]
        return codec.encode(toyvideo.render(clips), codec_id)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # the head's initialisation
        return GANTerm(model=roles.models["fake"], real_latents=real_latents, generator_weight=cfg.gan_weight)


def _resume(run: Run) -> None:
    cfg = run.cfg
    if distributed.is_main():
        remove_temp_files(cfg.out)
    if cfg.resume is False:
        if list_checkpoints(cfg.out):
            raise SGMDError(f"{checkpoint_dir(cfg.out)} already has checkpoints: pass --resume to continue that run, "
                            f"or choose another --out")
        return
    if isinstance(cfg.resume, str):
        path = cfg.resume
        if os.path.isdir(path):
            ckpt = latest_checkpoint(path if os.path.basename(path) != "checkpoints" else os.path.dirname(path))
            if ckpt is None:
                raise SGMDError(f"no readable checkpoint in {path}")
        else:
            ckpt = read_checkpoint(path)
    else:
        ckpt = latest_checkpoint(cfg.out)
        if ckpt is None:
            info(f"--resume: no checkpoint in {checkpoint_dir(cfg.out)}, starting from scratch")
            return
    run.restore(ckpt)


def _arch(d) -> str:
    if not isinstance(d, dict):
        return "unknown"
    return f"dim {d.get('dim')}, ffn {d.get('ffn_dim')}, {d.get('num_layers')} blocks"
