"""Where a teacher's own sampler loses the travel of the speed prompts (toy task).

    python bench/travel_drift.py --model TEACHER.safetensors [--cfg 3] [--steps 50] [--shift 5]
                                 [--sigmas 0.99,0.97,0.95,0.93,0.9,0.85,0.8,0.7,0.5,0.2] [--threads 2]

It runs the evaluator's teacher sampler (`evaluate.generate_teacher`: 50-step CFG Euler, empty-prompt
uncond) on the evaluation set's prompts that name a speed, and at each listed noise level compares, on
the sampler's own state x, how far the shape travels over the clip (first to last frame, the clip's
mass centre) in two x0 estimates: the model's conditional one, and the task's exact posterior mean
`E[x0 | x, prompt]` (`sgmd.toy_posterior`). The exact denoiser knows a "slowly" clip travels 3.15 px
and a "quickly" one 7.7; where the model's travel stays below it while the exact one has reached it,
the sampler has settled on a clip that moves too little, and later steps only keep what the state
shows (docs/tiny-model.md, "--short-travel"). Mean over clips, per speed word, with and without a
direction named; the data's travel is the last column."""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from sgmd import codec, metrics, text, toy_posterior, toyvideo  # noqa: E402
from sgmd.noise import CLIP_LATENT_SHAPE, noise_for_seeds  # noqa: E402
from sgmd.samplers import DEFAULT_GUIDANCE, cfg_velocity, denoised, model_velocity, sample_teacher  # noqa: E402
from sgmd.schedules import teacher_sigmas  # noqa: E402
from sgmd.teacher_sampling import file_codec  # noqa: E402
from sgmd.weights import load_wan  # noqa: E402
from training.eval_set import eval_prompt_set  # noqa: E402


def travel(x0: torch.Tensor) -> torch.Tensor:
    """Distance (px) the mass centre of the decoded clip moves from the first frame to the last, `[B]`
    (`metrics.mass_centres`: a blurred x0 estimate counts as the mean of the clips it mixes)."""
    centre = metrics.mass_centres(codec.decode(x0.float()).clamp(0, 1))  # [B, T, 2]
    return (centre[:, -1] - centre[:, 0]).norm(dim=-1)


@torch.no_grad()
def drift(model_denoiser, guided_velocity, noise: torch.Tensor, prompts: list[str], sigmas: torch.Tensor,
          at: list[float], codec_id: str = codec.CODEC_V2) -> list[tuple[float, torch.Tensor, torch.Tensor]]:
    """Run `sample_teacher(guided_velocity)` from `noise`; at the first step at or below each level of
    `at`, the travel of `model_denoiser(x, sigma)` and of the exact posterior mean at that state x (in codec
    `codec_id`):
    [(sigma, model [B], exact [B])]."""
    pending, out = sorted(at, reverse=True), []

    def watch(i, x, _guided_x0):
        s = float(sigmas[i])
        if pending and s <= pending[0] + 1e-6 and s > 0:  # the tolerance: float32 schedules
            while pending and s <= pending[0] + 1e-6:
                pending.pop(0)
            sig = sigmas[i].expand(len(prompts))
            out.append((s, travel(model_denoiser(x, sig)), travel(toy_posterior.posterior_mean(x, sig, prompts, codec_id=codec_id))))

    sample_teacher(guided_velocity, noise, sigmas, callback=watch)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a teacher: Wan 2.1 T2V safetensors of the toy task")
    p.add_argument("--cfg", type=float, default=DEFAULT_GUIDANCE)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--shift", type=float, default=5.0)
    p.add_argument("--sigmas", default="0.99,0.97,0.95,0.93,0.9,0.85,0.8,0.7,0.5,0.2")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_wan(args.model, torch.float32, "cpu").eval()
    prompts, seeds = eval_prompt_set(4)  # the 4-seed set its documented figures were measured on
    keep = [i for i, q in enumerate(prompts) if toyvideo.Prompt.parse(q).speed]
    prompts, seeds = [prompts[i] for i in keep], [seeds[i] for i in keep]
    parsed = [toyvideo.Prompt.parse(q) for q in prompts]
    cond, uncond = text.encode_text(prompts), text.encode_text([""] * len(prompts))
    model_cond = model_velocity(model, cond)
    rows = drift(lambda x, s: denoised(x, s, model_cond(x, s)), cfg_velocity(model, cond, uncond, args.cfg),
                 noise_for_seeds(seeds, CLIP_LATENT_SHAPE), prompts, teacher_sigmas(args.steps, args.shift),
                 [float(s) for s in args.sigmas.split(",")], file_codec(args.model))
    groups = [(f'"{w}", {"a direction" if named else "no direction"}',
               [i for i, q in enumerate(parsed) if q.speed == w and bool(q.direction) == named])
              for w in toyvideo.NAMED_SPEEDS for named in (True, False)]
    print(f"travel (px) of the model's x0 / the exact posterior mean's, on the sampler's own states "
          f"(CFG {args.cfg:g}, {args.steps} steps, shift {args.shift:g})")
    print("sigma  " + "".join(f"{name + f' ({len(idx)})':>28s}" for name, idx in groups))
    for s, tm, te in rows:
        print(f"{s:5.3f}  " + "".join(f"{float(tm[idx].mean()):>19.2f} / {float(te[idx].mean()):<6.2f}"
                                      for _, idx in groups))
    print("data   " + "".join(f"{toyvideo.expected_travel(w):>28.2f}" for w in toyvideo.NAMED_SPEEDS for _ in (0, 1)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
