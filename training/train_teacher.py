"""Train the embedded tiny Wan 2.1 teacher on the synthetic text-to-video task (issue 3).

    python training/train_teacher.py [--steps 5200] [--out models/diffusion_models/sgmd_tiny_teacher.safetensors]

Flow matching on clips generated on the fly (`sgmd.toyvideo`), encoded with the toy codec and the
toy text encoder (at sigma >= 0.9 onto the task's exact velocity, `sgmd.toy_posterior`), 10% prompt
dropout for classifier-free guidance, stopped at the 44.5-minute budget, EMA weights exported in the Wan
key format (so ComfyUI's UNETLoader loads the file). Resumable: checkpoints go to `--checkpoint`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from functools import partial

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from sgmd import codec, text, toy_posterior, toyvideo  # noqa: E402
from sgmd.errors import SGMDError  # noqa: E402
from sgmd.objectives.common import noised  # noqa: E402
from sgmd.samplers import DEFAULT_GUIDANCE, cfg_velocity, sample_teacher  # noqa: E402
from sgmd.schedules import sigma_to_timestep, warp  # noqa: E402
from sgmd.wan import WanConfig, WanModel  # noqa: E402
from sgmd.weights import read_safetensors, write_safetensors  # noqa: E402
from training.checkpoint import flatten_optimizer, unflatten_optimizer  # noqa: E402
from training.loop import skip_streak  # noqa: E402
from training.roles import AUTOCAST, autocast, emulated_dtype_warning  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = WanConfig(dim=128, ffn_dim=256, num_layers=3)
TRAIN_SIGMA_SHIFT = 6.0  # 40% of clips at sigma >= 0.9, where the layout and the motion words are decided (v11)
EXACT_TARGET_FROM = 0.9  # above it, regress onto the task's exact velocity: the words are routed sooner (v8, v11)
MAX_MINUTES = 44.5  # the budget of issue 3 (45 min on the 2-core reference machine)
CFG_DROPOUT = 0.1
# options a run may change when it resumes: its length and schedule, where files go, pacing, logging
RESUME_FREE = {"steps", "lr_cycles", "out", "checkpoint", "checkpoint_every", "max_minutes", "threads", "probe_every",
               "compile"}  # compiling changes the float rounding only, not the recipe
CONTRAST_SWAPS = ("opposite", "drop", "either")  # what --word-contrast turns the motion word into
NOISE_CONTRAST_ON = ("all", "no-direction")  # which exact-target clips --noise-contrast re-noises
WORD_CONTRAST_ON = ("all", "direction")  # which exact-target clips --word-contrast runs on
ROLLOUT_STEPS = 3  # guided Euler steps from sigma 1 down to a --sampled-states clip's noise level


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=5200, help="optimizer steps")
    p.add_argument("--lr-cycles", default="",
                   help="comma-separated steps where the lr jumps onto the cosine of a longer run: below the first "
                        "value the lr follows the cosine of a run that long, then the next one's, finally --steps' "
                        "(how a run extended by resuming is replayed in one command); empty = one cosine")
    p.add_argument("--batch-size", type=int, default=16, help="clips per step (more, smaller steps learn the motion words sooner)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak AdamW lr (100-step warm-up, cosine to 10%%)")
    p.add_argument("--lr-text", type=float, default=1e-3,
                   help="peak lr of the text path (text embedding, cross-attention), same schedule (equal to --lr: one rate). "
                        "At 3e-3 there too the motion words were never routed (v3, docs/tiny-model.md)")
    p.add_argument("--lr-text-in", type=float, default=None,
                   help="peak lr of the text embedding's input projection (4096 -> dim) alone; default: --lr-text. Its "
                        "fan-in is 32x the others': at 1e-3 Adam moves each word's projected embedding by about a fifth "
                        "of its length per step, 40x the other layers' relative move (docs/tiny-model.md, vT)")
    p.add_argument("--leave-out-direction", type=float, default=toyvideo.LEAVE_OUT,
                   help="share of training prompts that name no direction (their clips move in a random one); the "
                        "speed is left out apart, with probability %(default)g")
    p.add_argument("--ema", type=float, default=0.995, help="EMA decay of the exported weights (~200-step horizon)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join(ROOT, "models", "diffusion_models", "sgmd_tiny_teacher.safetensors"),
                   help="the defaults reproduce this file, the default teacher (v11: stopped by --max-minutes at step "
                        "4915 of 5200 here, docs/tiny-model.md)")
    p.add_argument("--checkpoint", default=os.path.join(ROOT, "runs", "teacher", "checkpoint.safetensors"),
                   help="resumable training state (kept out of the model folders ComfyUI lists)")
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--max-minutes", type=float, default=MAX_MINUTES,
                   help="stop early (and export) after this wall time; 0 = off")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--dim", type=int, default=TINY_CONFIG.dim, help="Wan width (multiple of 128; heads = dim / 128)")
    p.add_argument("--ffn-dim", type=int, default=TINY_CONFIG.ffn_dim)
    p.add_argument("--layers", type=int, default=TINY_CONFIG.num_layers)
    p.add_argument("--sigma-shift", type=float, default=TRAIN_SIGMA_SHIFT, help="training noise level warp_k(u), u uniform")
    p.add_argument("--exact-target-from", type=float, default=EXACT_TARGET_FROM,
                   help="noise level from which clips regress onto the task's exact velocity instead of eps - x0 (0 = off)")
    p.add_argument("--word-contrast", type=float, default=0.0,
                   help="weight of the motion-word contrast on the exact-target clips (flow_matching_step; 0 = off)")
    p.add_argument("--contrast-swap", choices=CONTRAST_SWAPS, default="opposite",
                   help="what the contrast turns the word into: its opposite, nothing (drop), or either (per clip)")
    p.add_argument("--word-contrast-on", choices=WORD_CONTRAST_ON, default="all",
                   help="which exact-target clips the word contrast runs on: all that name a motion word, or only those "
                        "whose prompt names a direction (with no direction named the contrast made \"slowly\" still, v12)")
    p.add_argument("--exact-weight", type=float, default=1.0,
                   help="loss weight of the exact-target clips (sigma >= --exact-target-from) against 1 for the others")
    p.add_argument("--noise-contrast", type=float, default=0.0,
                   help="weight of the noise contrast on the exact-target clips: each is noised a second time and the "
                        "error of the velocity's change between the two draws is added (flow_matching_step; 0 = off)")
    p.add_argument("--noise-contrast-on", choices=NOISE_CONTRAST_ON, default="all",
                   help="which exact-target clips the noise contrast re-noises: all, or only those whose prompt names "
                        "no direction (the empty prompt included), whose layout the noise alone decides")
    p.add_argument("--sampled-states", type=float, default=0.0,
                   help="share of the exact-target clips (prompt not empty) whose noisy input is where the model's own "
                        "guided sampler (CFG 3, the evaluator's) takes their noise by their noise level, instead of the "
                        "noised clip; the target stays the exact velocity there (flow_matching_step; 0 = off)")
    p.add_argument("--short-travel", type=float, default=0.0,
                   help="share of the exact-target clips whose noisy input is their clip re-rendered covering a uniform "
                        "random share of its travel (about the same mid-clip centre), noised with the same noise: the "
                        "state of a sampler drifting toward the still mean; the target stays the exact velocity there "
                        "(flow_matching_step; 0 = off)")
    p.add_argument("--short-travel-from", type=float, default=0.0,
                   help="lowest noise level of the --short-travel clips, at most --exact-target-from: the shortened "
                        "clips below --exact-target-from regress onto the exact velocity too (flow_matching_step; "
                        "0 = --exact-target-from)")
    p.add_argument("--short-contrast", type=float, default=0.0,
                   help="weight of the speed word's contrast against its absence on the --short-travel clips whose "
                        "prompt names a speed and no direction, where the two exact means differ most "
                        "(flow_matching_step; 0 = off)")
    p.add_argument("--exact-sharpen", type=float, default=1.0,
                   help="multiply the exact targets' Gaussian log-likelihood by K >= 1: each exact-target clip regresses "
                        "onto the exact velocity as if its state were less noisy (toy_posterior.posterior_mean; 1 = the "
                        "exact minimiser). A bias on purpose, against a network that commits less than the posterior")
    p.add_argument("--exact-sharpen-on", choices=("all", "speed-no-direction"), default="all",
                   help="which prompts' exact targets --exact-sharpen sharpens: all, or only those that name a speed and "
                        "no direction, whose posterior has no still clip to commit to (flow_matching_step)")
    p.add_argument("--codec", choices=tuple(codec.CODECS), default="v2",
                   help="the toy codec the clips are encoded in: v2 colour + position code; v3 also the clip's time "
                        "derivative on three more channels (decoding is the same; recorded in the file, sgmd/codec.py)")
    p.add_argument("--probe-every", type=int, default=0, help="print the motion-word probe every N steps (0 = off)")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                   help="compute dtype of the training passes: bf16 = autocast with fp32 master weights, optimizer "
                        "state, EMA and targets (1.3x faster alone on a CPU with avx512_bf16, 1.7x with --compile: "
                        "bench/teacher_step.py)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the training passes (about 40 s to compile on CPU; where compiling fails, e.g. "
                        "without a C++ compiler, it warns and trains uncompiled; where a compiled step's gradient is not "
                        "finite, it recompiles with 256-bit CPU vectors, then trains uncompiled: CompiledForward)")
    return p


NARROW_SIMD_BITS = 256  # inductor's CPU vector width for the second compile (see CompiledForward)
MAX_NONFINITE = 5  # skipped steps in a row (non-finite loss or gradient) before a run stops (loop.skip_streak)


def training_forward(model, dtype: str = "fp32", compile_: bool = False):
    """The model as the training step calls it, `f(x, t, context) -> fp32 velocity`: under autocast when
    `dtype` is bf16/fp16 and compiled with `compile_` (a `CompiledForward`). Probes, EMA and export keep
    using `model` itself."""
    cast = AUTOCAST[dtype]

    def forward(x, t, context):
        with autocast(x.device.type, cast):
            return model(x, t, context).float()

    return CompiledForward(forward) if compile_ else forward


class CompiledForward:
    """`forward` under `torch.compile`, with two ways down to the same math, each announced once on
    stderr: where compiling raises (e.g. no C++ compiler) it runs uncompiled; and `demote()`, which
    `train_step` calls when a compiled step's loss or gradient is not finite, recompiles with inductor's
    CPU vectors at 256 bits and then, called again, runs uncompiled. On a Xeon with AMX (2026-12-05,
    torch 2.13) the compiled bf16 backward at the default 512 bits gave NaN gradients for the patch
    embedding on every step, where 256 bits and eager gave finite ones. The vector width is inductor's
    process-wide setting: the backward graph is compiled lazily, outside any call here."""

    def __init__(self, forward):
        self.eager = forward
        self.stage = 0
        self.current = torch.compile(forward)

    def __call__(self, x, t, context):
        try:
            return self.current(x, t, context)
        except Exception as e:  # compiling failed (e.g. no C++ compiler here): train uncompiled, same math
            if self.current is self.eager:
                raise
            self._down(f"torch.compile failed ({type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]})", eager=True)
            return self.eager(x, t, context)

    def demote(self, why: str) -> bool:
        """One stage down (256-bit vectors, then uncompiled); False when already uncompiled."""
        if self.current is self.eager:
            return False
        self._down(why, eager=self.stage >= 1)
        return True

    def _down(self, why: str, eager: bool) -> None:
        if eager:
            self.current, self.stage = self.eager, 2
            print(f"warning: {why}; training uncompiled", file=sys.stderr, flush=True)
            return
        import torch._inductor.config as inductor_config
        inductor_config.cpp.simdlen = NARROW_SIMD_BITS
        # a new function object: dynamo caches the first compile by code object, and would reuse it
        self.current, self.stage = torch.compile(lambda x, t, context: self.eager(x, t, context)), 1
        print(f"warning: {why}; recompiling with {NARROW_SIMD_BITS}-bit CPU vectors", file=sys.stderr, flush=True)


def train_step(model, forward, opt, g, train_set, args) -> tuple[torch.Tensor, bool]:
    """One optimizer step of the recipe in `args` (a parsed `build_parser()`): a batch drawn from `g`,
    its flow-matching loss through `forward` (`training_forward`), gradient clip 1, AdamW. Returns the
    loss and whether the step was taken: a non-finite loss or gradient skips it, after a compiled
    `forward` has been demoted as far as it goes and the same batch redrawn at each stage."""
    state = g.get_state()
    while True:
        prompts, frames, clips = toyvideo.make_batch(args.batch_size, g, train_set, args.leave_out_direction)
        # by keyword: fifteen options in a row are easy to misorder, and a swapped pair would still run
        loss = flow_matching_step(
            forward, frames, prompts, g, sigma_shift=args.sigma_shift, exact_from=args.exact_target_from,
            word_contrast=args.word_contrast, contrast_swap=args.contrast_swap, exact_weight=args.exact_weight,
            noise_contrast=args.noise_contrast, noise_contrast_on=args.noise_contrast_on,
            word_contrast_on=args.word_contrast_on, sampled_states=args.sampled_states, short_travel=args.short_travel,
            clips=clips, short_travel_from=args.short_travel_from, short_contrast=args.short_contrast,
            exact_sharpen=args.exact_sharpen, exact_sharpen_on=args.exact_sharpen_on, codec_id=codec.CODECS[args.codec])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if torch.isfinite(loss) and torch.isfinite(norm):
            opt.step()
            return loss, True
        demote = getattr(forward, "demote", None)
        if demote is None or not demote(f"the compiled training pass gave a non-finite loss or gradient "
                                        f"(loss {loss.item():.4g}, gradient norm {norm.item():.4g})"):
            opt.zero_grad(set_to_none=True)
            return loss, False
        g.set_state(state)


def is_text_path(name: str) -> bool:
    """Parameters that carry the prompt into the video tokens: the text embedding and every
    block's cross-attention."""
    return name.startswith("text_embedding.") or ".cross_attn." in name


TEXT_IN = "text_embedding.0.weight"  # the 4096 -> dim projection of the word vectors


def param_groups(model, lr: float, lr_text: float, lr_text_in: float | None = None) -> list[dict]:
    """AdamW groups; each carries its `lr_scale` relative to the schedule's peak `lr`. One group
    when the text path has no lr of its own (`--lr-text` equal to `--lr`: the recipe of v1-v5);
    the text embedding's input projection gets a group of its own when `lr_text_in` differs from
    `lr_text`."""
    named = list(model.named_parameters())
    lr_text_in = lr_text if lr_text_in is None else lr_text_in
    rate = lambda n: lr_text_in if n == TEXT_IN else lr_text if is_text_path(n) else lr  # noqa: E731
    return [{"params": [p for n, p in named if rate(n) == r], "lr_scale": r / lr if lr else 0.0}
            for r in dict.fromkeys(rate(n) for n, _ in named)]


def parse_cycles(text: str, steps: int) -> list[int]:
    """`--lr-cycles` -> the increasing cosine lengths in force, ending with `steps`."""
    try:
        cycles = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise SGMDError(f"--lr-cycles must be comma-separated step counts; got {text!r}") from None
    if any(b <= a for a, b in zip(cycles, cycles[1:])) or any(c <= 0 for c in cycles):
        raise SGMDError(f"--lr-cycles must be positive and increasing; got {text!r}")
    return [c for c in cycles if c < steps] + [steps]


def cycled_lr(step: int, cycles: list[int], peak: float) -> float:
    return lr_at(step, next((c for c in cycles if step < c), cycles[-1]), peak)


def lr_at(step: int, total: int, peak: float) -> float:
    if step < 100:
        return peak * (step + 1) / 100
    frac = (step - 100) / max(1, total - 100)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def flow_matching_step(model, frames, prompts, g, sigma_shift: float = TRAIN_SIGMA_SHIFT, exact_from: float = 0.0,
                       word_contrast: float = 0.0, contrast_swap: str = "opposite", exact_weight: float = 1.0,
                       noise_contrast: float = 0.0, noise_contrast_on: str = "all", word_contrast_on: str = "all",
                       sampled_states: float = 0.0, short_travel: float = 0.0, clips=None,
                       short_travel_from: float = 0.0, short_contrast: float = 0.0, exact_sharpen: float = 1.0,
                       exact_sharpen_on: str = "all", codec_id: str = codec.CODEC_V2):
    """One flow-matching loss on a batch of RGB clips. With `exact_from` > 0, clips noised to sigma >=
    `exact_from` regress onto the exact velocity `E[eps - x0 | x_s, prompt]` instead of their own
    `eps - x0`: the same minimiser without the target's spread, which at high noise is mostly the
    spread (a stable target field computed over the task's clip bank, `sgmd.toy_posterior`).

    With `word_contrast` > 0 as well, each of those clips whose prompt names a motion word is also
    run with that word swapped (`motion_swap`), and `word_contrast * mean(((v - v') - (v* - v*'))^2)`
    is added: the error of the word's own effect on the velocity. Its minimiser is the exact
    velocity too, so the term only weights the small, word-dependent part of the field that plain
    flow matching learns last (speed, docs/tiny-model.md). `contrast_swap` says what the word
    becomes: its `opposite` (slowly <-> quickly), nothing (`drop`: the attribute is then random, as
    in the data, so "slowly" is contrasted with still and quick clips alike), or `either`, drawn per
    clip. Only `either` draws: with the term off, or `opposite`, the batch is the same as without it.
    With `word_contrast_on="direction"` only the clips whose prompt names a direction take part.

    `exact_weight` multiplies the squared error of the exact-target clips: their target has no
    one-clip spread, so their error is all learnable, and it is where the motion words decide the
    layout; it draws nothing.

    With `noise_contrast` > 0, each exact-target clip is noised a second time (fresh noise, same clip,
    prompt and sigma) and `noise_contrast * mean(((v1 - v2) - (v1* - v2*))^2)` is added. With
    `x0_hat = x - s v`, that is the error of how the x0 estimate changes with the noise: the part of the
    posterior read from the noise rather than from the prompt, which at high noise decides where a clip
    with no direction named goes (a teacher that reads it too little draws the prompt's still mean,
    docs/tiny-model.md). Its minimiser is the exact velocity too. Off, it draws nothing. With
    `noise_contrast_on="no-direction"` only the exact-target clips whose prompt names no direction are
    re-noised (the still clips come from those prompts), at about a third of the extra pass's cost.

    With `sampled_states` > 0, that share of the exact-target clips (one coin each; the empty prompt
    excluded) takes as input not its noised clip but `guided_state`: where the model's own CFG sampler
    takes the clip's noise by the clip's noise level. The exact velocity is the minimiser at any state,
    so the target is the same field; what changes is where it is learned: on the states sampling visits,
    where a wrong early drift (a still "slowly" clip) would otherwise never be corrected. Off, it draws
    nothing.

    With `short_travel` > 0 (it needs `clips`, the batch's `toyvideo.Clip`s), that share of the
    exact-target clips (one coin each) takes as input its clip re-rendered covering a share u ~ U(0, 1)
    of its travel (`toyvideo.shortened`), noised with the same noise. A sampler that drifts toward the
    still mean visits such states (a "slowly" clip that has chosen its direction but covers a third of
    its travel, docs/tiny-model.md); the exact velocity there points back to the full travel, and it is
    the same minimiser, learned on those states too. No model passes: it costs a render. Off, it draws
    nothing. With `short_travel_from` > 0 (at most `exact_from`) the coins are drawn for every clip at
    sigma >= `short_travel_from` instead, and the shortened ones below `exact_from` take the exact
    velocity too (the others there keep `eps - x0`): a sampler that kept a short travel through the
    high noise levels can still be pulled back lower down, where the model otherwise keeps what its
    state shows. At sigma 0.3-0.7 the exact posterior mean of a data clip keeps its mass centres to
    0.08 px on average (the bank's 0.2 px grid), so the targets hold that far down.

    With `short_contrast` > 0 as well, each shortened clip whose prompt names a speed and no direction
    is also run with the speed word left out (`toyvideo.without`), and `short_contrast * mean(((v - v')
    - (v* - v*'))^2)` is added: the error of what the speed word adds there. On data clips the two
    exact means differ little, and teachers learned "slowly" as a no-op beside its absence; on a clip
    that covers part of its travel they differ most: "slowly" points on to the full travel, no speed
    word back to the still clip it may be (docs/tiny-model.md, v23). Its minimiser is the exact
    velocity too. It draws nothing.

    `exact_sharpen` k > 1 replaces every exact velocity above (targets and contrasts alike) by the one
    whose Gaussian log-likelihood is multiplied by k: at sigma s, the exact answer for the same clip
    seen at s' = s / (s + sqrt(k) (1 - s)) (`toy_posterior.posterior_mean`). Not the minimiser: a bias
    toward committing sooner, for a network whose x0 keeps less travel than the posterior's. It draws
    nothing. With `exact_sharpen_on="speed-no-direction"` only the exact velocities of prompts that name
    a speed and no direction are sharpened (a contrast's other prompt follows its own words): there the
    posterior has no still clip to commit to, and sharpening every prompt made still clips (vS).

    `codec_id`: the toy codec clips and exact targets are in (`sgmd.codec`)."""
    where = None if exact_sharpen_on == "all" else speed_without_direction
    exact_v = partial(sharpened_where, sharpen=exact_sharpen, where=where, codec_id=codec_id)
    x0 = codec.encode(frames, codec_id)
    b = x0.shape[0]
    drop = torch.rand(b, generator=g) < CFG_DROPOUT
    used = [("" if d else p) for p, d in zip(prompts, drop.tolist())]
    ctx = text.encode_text(used)
    sigma = warp(torch.rand(b, generator=g), sigma_shift)
    eps = torch.randn(x0.shape, generator=g)
    x_in = noised(x0, eps, sigma)
    target = eps - x0
    high = (sigma >= exact_from).nonzero().flatten().tolist() if exact_from > 0 else []
    exact = high  # the rows whose target is the exact velocity
    short = []  # the shortened rows
    if short_travel > 0 and exact_from > 0:
        if clips is None:
            raise ValueError("short_travel needs the batch's clips (toyvideo.make_batch's third value)")
        pool = (sigma >= short_travel_from).nonzero().flatten().tolist() if short_travel_from > 0 else high
        if pool:
            coins, shares = torch.rand(2, len(pool), generator=g).tolist()
            picked = [(i, u) for i, c, u in zip(pool, coins, shares) if c < short_travel]
            if picked:
                short = [i for i, _ in picked]
                x0[short] = codec.encode(toyvideo.render([toyvideo.shortened(clips[i], u) for i, u in picked]), codec_id)
                x_in[short] = noised(x0[short], eps[short], sigma[short])
                exact = sorted(set(high) | set(short))
    if high and sampled_states > 0:
        coins = torch.rand(len(high), generator=g).tolist()
        rolled = [i for c, i in zip(coins, high) if c < sampled_states and used[i]]
        if rolled:
            x_in[rolled] = guided_state(model, eps[rolled], sigma[rolled], ctx[rolled])
    if exact:
        target[exact] = exact_v(x_in[exact], sigma[exact], [used[i] for i in exact])
    x_s = x_in[high]
    pairs = []
    if word_contrast > 0:
        on = [j for j, i in enumerate(high) if word_contrast_on == "all" or names_direction(used[i])]  # rows of x_s
        drops = ((torch.rand(len(on), generator=g) < 0.5).tolist() if contrast_swap == "either"
                 else [contrast_swap == "drop"] * len(on))
        pairs = [(j, high[j], w) for j, d in zip(on, drops) if (w := motion_swap(used[high[j]], d))]
    weight = None
    if high and exact_weight != 1.0:
        weight = torch.ones(b)
        weight[high] = exact_weight
    rn = [] if noise_contrast <= 0 else high if noise_contrast_on == "all" else [
        i for i in high if not names_direction(used[i])]  # the clips noised a second time
    sc = [i for i in short if speed_without_direction(used[i])] if short_contrast > 0 else []  # rows whose speed word goes
    if not pairs and not rn and not sc:
        return _weighted_mse(model(x_in, sigma_to_timestep(sigma), ctx), target, weight)
    rows, idx, swapped = (list(z) for z in zip(*pairs)) if pairs else ([], [], [])
    x_sw, sig_sw = x_s[rows], sigma[idx]
    x_rn = noised(x0[rn], torch.randn((len(rn), *x0.shape[1:]), generator=g), sigma[rn]) if rn else x_sw[:0]
    ctx_sw = text.encode_text(swapped) if swapped else ctx[:0]
    unsped = [toyvideo.without(used[i], "speed") for i in sc]
    ctx_sc = text.encode_text(unsped) if sc else ctx[:0]
    # one pass over the batch and its extra copies: the word-swapped ones, the re-noised ones, the unsped ones
    v_all = model(torch.cat([x_in, x_sw, x_rn, x_in[sc]]),
                  sigma_to_timestep(torch.cat([sigma, sig_sw, sigma[rn], sigma[sc]])),
                  torch.cat([ctx, ctx_sw, ctx[rn], ctx_sc]))
    v, v_sw, v_rn, v_sc = v_all.split([b, len(rows), len(rn), len(sc)])
    loss = _weighted_mse(v, target, weight)
    if pairs:
        loss = loss + word_contrast * _weighted_mse(v[idx] - v_sw, target[idx] - exact_v(x_sw, sig_sw, swapped))
    if rn:
        t_rn = exact_v(x_rn, sigma[rn], [used[i] for i in rn])
        loss = loss + noise_contrast * _weighted_mse(v[rn] - v_rn, target[rn] - t_rn)
    if sc:
        t_sc = exact_v(x_in[sc], sigma[sc], unsped)
        loss = loss + short_contrast * _weighted_mse(v[sc] - v_sc, target[sc] - t_sc)
    return loss


def sharpened_where(x_s, sigma, prompts, sharpen: float = 1.0, where=None, codec_id: str = codec.CODEC_V2) -> torch.Tensor:
    """The exact velocity, sharpened by `sharpen` on the rows whose prompt satisfies `where` (every row
    when it is None), in one pass over the rows."""
    ks = [sharpen if where is None or where(p) else 1.0 for p in prompts]
    return exact_velocity(x_s, sigma, prompts, sharpen=ks, codec_id=codec_id)


@torch.no_grad()
def guided_state(model, noise, sigma, ctx, scale: float = DEFAULT_GUIDANCE, steps: int = ROLLOUT_STEPS):
    """Where the guided Euler sampler (standard CFG `scale`, empty-prompt uncond: the evaluator's form)
    takes `noise`, at sigma 1, by noise level `sigma` [B], in `steps` equal steps of sigma."""
    velocity = cfg_velocity(model, ctx, text.encode_text([""] * len(ctx)), scale)
    schedules = torch.stack([1 - (1 - sigma) * k / steps for k in range(steps + 1)])  # [steps + 1, B]
    return sample_teacher(velocity, noise, schedules)


def names_direction(prompt: str) -> bool:
    """Whether a prompt names a direction (the empty prompt of CFG dropout does not)."""
    return bool(toyvideo.Prompt.parse(prompt).direction)


def speed_without_direction(prompt: str) -> bool:
    """Whether a prompt names a speed and no direction: where teachers stand still (docs/tiny-model.md)."""
    p = toyvideo.Prompt.parse(prompt)
    return bool(p.speed) and not p.direction


def motion_swap(prompt: str, drop: bool = False) -> str | None:
    """The prompt with its speed word swapped for the opposite (or left out, `drop`), else its
    direction word; None when it names neither (or is the empty prompt of CFG dropout)."""
    p = toyvideo.Prompt.parse(prompt)
    kind = "speed" if p.speed else "direction" if p.direction else None
    if kind is None:
        return None
    return toyvideo.without(prompt, kind) if drop else toyvideo.with_opposite(prompt, kind)


exact_velocity = toy_posterior.velocity  # the minimiser of flow matching on the task (tests and probes use it)


def flow_matching_loss(model, x0, eps, sigma, ctx, target=None, weight=None):
    """Mean squared error of the predicted velocity against `target` (default `eps - x0`) at noise
    level `sigma`, each clip's error times its `weight` (default 1)."""
    v = model(noised(x0, eps, sigma), sigma_to_timestep(sigma), ctx)
    return _weighted_mse(v, eps - x0 if target is None else target, weight)


def _weighted_mse(v, target, weight=None):
    err = (v - target).pow(2)
    if weight is None:
        return err.mean()
    return (err.flatten(1).mean(1) * weight).mean()


def _specified_clips(n: int, seed: int, codec_id: str = codec.CODEC_V2):
    """`n` fixed clips of fully specified training prompts (the probes' data, encoded in `codec_id`)
    and the generator that drew them, for the probes' noise."""
    g = torch.Generator().manual_seed(seed)
    specified = [p for p in toyvideo.training_prompts() if p.direction and p.speed]
    prompts, frames, _ = toyvideo.make_batch(n, g, set(specified))
    return g, prompts, codec.encode(frames, codec_id)


_WORD_INDEX = {"direction": 4, "speed": 5}  # token positions in "a {colour} {shape} moving {direction} {speed}"


@torch.no_grad()
def motion_word_probe(model, n: int = 32, sigmas=(0.6, 0.8, 0.95), seed: int = 1, codec_id: str = codec.CODEC_V2) -> dict:
    """How much the model uses the motion words: the relative rise of its flow-matching loss on
    fully specified clips when the direction (or speed) word is swapped for its opposite. Zero
    means the word is ignored; it is cheap (forward passes only) and moves long before sampled
    direction accuracy does."""
    g, prompts, x0 = _specified_clips(n, seed, codec_id)
    eps = torch.randn(x0.shape, generator=g)
    ctx = {name: text.encode_text([toyvideo.with_opposite(p, name) for p in prompts]) for name in _WORD_INDEX}
    right_ctx = text.encode_text(prompts)
    rises = {name: [] for name in _WORD_INDEX}
    for s in sigmas:  # the unswapped loss is shared by both words
        sigma = torch.full((n,), s)
        right = flow_matching_loss(model, x0, eps, sigma, right_ctx)
        for name in _WORD_INDEX:
            rises[name].append(float(flow_matching_loss(model, x0, eps, sigma, ctx[name]) / right - 1))
    return {name: sum(r) / len(r) for name, r in rises.items()}


@torch.no_grad()
def word_attention(model, n: int = 16, sigma: float = 0.95, seed: int = 3, codec_id: str = codec.CODEC_V2) -> dict:
    """Per word (direction, speed) and block, the largest cross-attention weight any video token and
    head gives that word, on fully specified clips at noise level `sigma`. Near 1/16 (uniform over
    the 16 tokens) in every block means no video token singles the word out: the model reads only a
    bag-of-words average (the lr-3e-3 teacher in docs/tiny-model.md)."""
    g, prompts, x0 = _specified_clips(n, seed, codec_id)
    sig = torch.full((n,), sigma)
    seen = []
    hooks = [b.cross_attn.register_forward_hook(lambda mod, args, kw, out: seen.append(mod.weights(args[0], kw["context"])),
                                                with_kwargs=True) for b in model.blocks]
    try:
        model(noised(x0, torch.randn(x0.shape, generator=g), sig), sigma_to_timestep(sig), text.encode_text(prompts))
    finally:
        for h in hooks:
            h.remove()
    return {name: [float(w[..., idx].max()) for w in seen] for name, idx in _WORD_INDEX.items()}


@torch.no_grad()
def word_use(model, n: int = 32, sigma: float = 0.95, seed: int = 1, drop: bool = False, codec_id: str = codec.CODEC_V2) -> dict:
    """Per motion word, `(model, exact)`: the absolute rise of the flow-matching loss when the word is
    swapped for its opposite, for the model and for the task's exact denoiser on the same noisy
    clips. `model / exact` is the share of what the word can tell at this noise level that the model
    uses (the relative probe above cannot say: its denominator includes the model's own error).
    With `drop`, the word is left out instead (`toyvideo.without`), and the speed word is reported
    per word ("slowly", "quickly"): what each adds over a prompt that leaves the speed random, which
    a teacher can miss for one word while it over-uses the other (docs/tiny-model.md, v13)."""
    g, prompts, x0 = _specified_clips(n, seed, codec_id)
    eps = torch.randn(x0.shape, generator=g)
    sig = torch.full((n,), sigma)
    x_s, target = noised(x0, eps, sig), eps - x0
    per_clip = lambda v: (v - target).pow(2).flatten(1).mean(1)  # noqa: E731
    model_loss = lambda ps: per_clip(model(x_s, sigma_to_timestep(sig), text.encode_text(ps)))  # noqa: E731
    exact_loss = lambda ps: per_clip(exact_velocity(x_s, sig, ps, codec_id=codec_id))  # noqa: E731
    base = model_loss(prompts), exact_loss(prompts)
    change = toyvideo.without if drop else toyvideo.with_opposite
    everyone = torch.ones(n, dtype=torch.bool)
    slow = torch.tensor([toyvideo.Prompt.parse(p).speed == "slowly" for p in prompts])
    groups = ({"direction": ("direction", everyone), "slowly": ("speed", slow), "quickly": ("speed", ~slow)} if drop
              else {name: (name, everyone) for name in _WORD_INDEX})
    rises = {}  # per kind, per clip: "slowly" and "quickly" share the speed word's passes
    for kind in {kind for kind, _ in groups.values()}:
        changed = [change(p, kind) for p in prompts]
        rises[kind] = model_loss(changed) - base[0], exact_loss(changed) - base[1]
    return {name: tuple(float(r[rows].mean()) for r in rises[kind]) for name, (kind, rows) in groups.items()}


@torch.no_grad()
def posterior_gap(model, n: int = 32, sigmas=(0.97, 0.93, 0.9), seed: int = 2, codec_id: str = codec.CODEC_V2) -> dict:
    """Per noise level, the mean squared distance between the model's velocity and the exact
    posterior-mean velocity of the toy task (`sgmd.toy_posterior`) on fully specified clips: 0 is
    the best any network can do. These are the noise levels where the layout (start point,
    direction, speed) is decided; the grid of the exact mean resolves them (not much lower)."""
    g, prompts, x0 = _specified_clips(n, seed, codec_id)
    eps = torch.randn(x0.shape, generator=g)
    ctx = text.encode_text(prompts)
    out = {}
    for s in sigmas:
        sigma = torch.full((n,), s)
        x_s = noised(x0, eps, sigma)
        out[s] = float((model(x_s, sigma_to_timestep(sigma), ctx) - exact_velocity(x_s, sigma, prompts, codec_id=codec_id)).pow(2).mean())
    return out


def _show(v):
    return f"{v:g}" if isinstance(v, float) else v


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cycles = parse_cycles(args.lr_cycles, args.steps)
    for name in ("word_contrast", "noise_contrast"):
        # each contrast is taken on the exact-target clips only: without them it would silently do nothing
        weight = getattr(args, name)
        if weight < 0 or (weight > 0 and args.exact_target_from <= 0):
            raise SGMDError(f"--{name.replace('_', '-')} must be >= 0 and needs --exact-target-from > 0; got "
                            f"{weight:g} with {args.exact_target_from:g}")
    if args.exact_weight <= 0 or (args.exact_weight != 1.0 and args.exact_target_from <= 0):
        raise SGMDError(f"--exact-weight must be > 0 and, other than 1, needs --exact-target-from > 0; got "
                        f"{args.exact_weight:g} with {args.exact_target_from:g}")
    if args.lr_text_in is None:
        args.lr_text_in = args.lr_text
    if args.lr_text_in < 0:
        raise SGMDError(f"--lr-text-in must be >= 0; got {args.lr_text_in:g}")
    if not 0 <= args.leave_out_direction < 1:
        raise SGMDError(f"--leave-out-direction must be in [0, 1); got {args.leave_out_direction:g}")
    if args.contrast_swap != "opposite" and not args.word_contrast:
        raise SGMDError(f"--contrast-swap {args.contrast_swap} needs --word-contrast > 0")
    if not 0 <= args.sampled_states <= 1 or (args.sampled_states > 0 and args.exact_target_from <= 0):
        raise SGMDError(f"--sampled-states must be in [0, 1] and needs --exact-target-from > 0; got "
                        f"{args.sampled_states:g} with {args.exact_target_from:g}")
    if not 0 <= args.short_travel <= 1 or (args.short_travel > 0 and (args.exact_target_from <= 0 or args.sampled_states > 0)):
        raise SGMDError(f"--short-travel must be in [0, 1], needs --exact-target-from > 0 and goes without "
                        f"--sampled-states; got {args.short_travel:g} with {args.exact_target_from:g} and "
                        f"{args.sampled_states:g}")
    if args.short_travel_from and not (args.short_travel > 0 and 0 < args.short_travel_from <= args.exact_target_from):
        raise SGMDError(f"--short-travel-from must be in (0, --exact-target-from] and needs --short-travel > 0; got "
                        f"{args.short_travel_from:g} with {args.exact_target_from:g} and {args.short_travel:g}")
    if args.short_contrast < 0 or (args.short_contrast > 0 and not args.short_travel):
        raise SGMDError(f"--short-contrast must be >= 0 and needs --short-travel > 0; got {args.short_contrast:g} "
                        f"with {args.short_travel:g}")
    if not args.exact_sharpen >= 1 or (args.exact_sharpen != 1 and args.exact_target_from <= 0):
        raise SGMDError(f"--exact-sharpen must be >= 1 and needs --exact-target-from > 0; got {args.exact_sharpen:g} "
                        f"with {args.exact_target_from:g}")
    if args.exact_sharpen_on != "all" and args.exact_sharpen == 1:
        raise SGMDError(f"--exact-sharpen-on {args.exact_sharpen_on} needs --exact-sharpen > 1")
    if args.word_contrast_on != "all" and not args.word_contrast:
        raise SGMDError(f"--word-contrast-on {args.word_contrast_on} needs --word-contrast > 0")
    if args.noise_contrast_on != "all" and not args.noise_contrast:
        raise SGMDError(f"--noise-contrast-on {args.noise_contrast_on} needs --noise-contrast > 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config = WanConfig(dim=args.dim, ffn_dim=args.ffn_dim, num_layers=args.layers).validate()
    model = WanModel(config)
    torch.nn.init.zeros_(model.head.head.weight)
    torch.nn.init.zeros_(model.head.head.bias)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(param_groups(model, args.lr, args.lr_text, args.lr_text_in), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01)
    g = torch.Generator().manual_seed(args.seed)
    train_set = set(toyvideo.training_prompts())
    ckpt = args.checkpoint
    step = 0
    recipe = {k: v for k, v in vars(args).items() if k not in RESUME_FREE}
    if os.path.exists(ckpt):
        tensors, meta = read_safetensors(ckpt)
        changed = {k: (v, recipe.get(k)) for k, v in json.loads(meta.get("recipe", "{}")).items() if recipe.get(k) != v}
        if changed:  # resuming under another recipe would mix two runs (or fail inside the optimizer's load)
            raise SGMDError(f"{ckpt} was trained with " + ", ".join(
                f"--{k.replace('_', '-')} {_show(a)} (now {_show(b)})" for k, (a, b) in sorted(changed.items()))
                + "; pass the same options or delete the checkpoint to start over")
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        ema = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
        opt.load_state_dict(unflatten_optimizer(tensors, json.loads(meta["opt"]), "opt"))
        g.set_state(tensors["rng"])
        step = int(meta["step"])
        print(f"resumed from {ckpt} at step {step}", flush=True)
    forward = training_forward(model, args.dtype, args.compile)
    if why := emulated_dtype_warning("cpu", args.dtype):
        print(f"warning: --dtype {args.dtype}: {why}", file=sys.stderr, flush=True)
    t0, losses, streak = time.time(), [], 0
    while step < args.steps:
        for group in opt.param_groups:
            group["lr"] = cycled_lr(step, cycles, args.lr) * group.get("lr_scale", 1.0)  # absent in older checkpoints
        loss, taken = train_step(model, forward, opt, g, train_set, args)
        step += 1
        streak = skip_streak(streak, not taken, "", f"step {step}", loss.item(), MAX_NONFINITE,
                             lambda: f"{ckpt} (step {read_safetensors(ckpt)[1]['step']})" if os.path.exists(ckpt)
                             else "none written yet", "lower --lr or use --dtype fp32 and start over")
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in model.state_dict().items():
                ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay) if v.is_floating_point() else ema[k].copy_(v)
        losses.append(loss.item())
        if step % 10 == 0:
            el = time.time() - t0
            print(f"step {step}/{args.steps} loss {sum(losses[-10:]) / 10:.4f} lr {cycled_lr(step, cycles, args.lr):.2e} "
                  f"{el / 60:.1f} min", flush=True)
        if args.probe_every and step % args.probe_every == 0:
            cid = codec.CODECS[args.codec]
            probe = motion_word_probe(model, codec_id=cid)
            gap = ", ".join(f"{v:.3f} at {k:g}" for k, v in posterior_gap(model, codec_id=cid).items())
            att = "; ".join(f"{k} " + "/".join(f"{w:.2f}" for w in v) for k, v in word_attention(model, codec_id=cid).items())
            use = ", ".join(f"{k} {m / e:.0%}" for k, (m, e) in word_use(model, codec_id=cid).items())
            use += "; left out: " + ", ".join(f"{k} {m / e:.0%}" for k, (m, e) in word_use(model, drop=True, codec_id=cid).items())
            print(f"probe step {step}: loss rise when the word is swapped: direction {probe['direction']:+.1%}, "
                  f"speed {probe['speed']:+.1%}; share of the exact denoiser's word use at sigma 0.95: {use}; "
                  f"distance to the exact denoiser {gap}; "
                  f"largest attention on the word per block: {att}", flush=True)
        out_of_time = args.max_minutes and time.time() - t0 > args.max_minutes * 60
        if step % args.checkpoint_every == 0 or step == args.steps or out_of_time:
            flat, struct = flatten_optimizer(opt.state_dict(), "opt")
            tensors = {**{"model." + k: v for k, v in model.state_dict().items()},
                       **{"ema." + k: v for k, v in ema.items()}, **flat, "rng": g.get_state()}
            write_safetensors(ckpt, tensors, {"step": str(step), "opt": json.dumps(struct), "recipe": json.dumps(recipe)})
        if out_of_time:
            print(f"stopping at step {step}: --max-minutes reached", flush=True)
            break
    meta = {
        "sgmd_teacher": json.dumps({
            "task": "sgmd-toyvideo-v1", "codec": codec.CODECS[args.codec], "frames": toyvideo.FRAMES, "size": toyvideo.SIZE,
            "config": config.to_dict(), "steps": step, "lr_cycles": cycles, "batch_size": args.batch_size, "lr": args.lr, "lr_text": args.lr_text,
            "lr_text_in": args.lr_text_in, "leave_out_direction": args.leave_out_direction,
            "ema": args.ema, "seed": args.seed, "train_sigma_shift": args.sigma_shift, "cfg_dropout": CFG_DROPOUT,
            "exact_target_from": args.exact_target_from, "word_contrast": args.word_contrast,
            "contrast_swap": args.contrast_swap, "word_contrast_on": args.word_contrast_on,
            "sampled_states": args.sampled_states, "short_travel": args.short_travel,
            "short_travel_from": args.short_travel_from or args.exact_target_from,
            "short_contrast": args.short_contrast, "exact_weight": args.exact_weight, "exact_sharpen": args.exact_sharpen,
            "exact_sharpen_on": args.exact_sharpen_on,
            "noise_contrast": args.noise_contrast, "noise_contrast_on": args.noise_contrast_on,
            "dtype": args.dtype, "compile": args.compile,
        }),
    }
    write_safetensors(args.out, ema, meta)
    print(f"wrote {args.out} after {step} steps in {(time.time() - t0) / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SGMDError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
