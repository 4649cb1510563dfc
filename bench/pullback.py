"""How much of DMD's residual SGMD's pull-back through the fake score keeps, per noise level.

    python bench/pullback.py RUN_DIR_OR_CHECKPOINT [--clips 8] [--sigmas 0.98,0.95,0.9,0.83,0.7,0.5,0.3,0.1]
                             [--exact] [--speed] [--threads 2]

From a distillation checkpoint (either objective; its own teacher, LoRA and schedule), on fully
rolled-out generator samples g of fresh prompts, at each noise level s with the same noise eps:

- DMD's generator gradient is `r / N`, with `r = (D_F - D_T) / n` (method doc s5);
- SGMD's is `(1-s)/N J_F^T [r - lambda_NR (D_F - g)/s]` (s4), taken here by autograd through the
  objective's own `sgmd_generator_loss`, so the figure is what training applies.

It prints their norm ratio and cosine. Cosine 1 would mean the pull-back only rescales DMD's
direction. `--exact` (the toy task only) adds the same for the task's exact denoiser
`E[x0 | x_s, prompt]` (`sgmd.toy_posterior`), whose Jacobian `(1-s)/s^2 Cov[x0 | x_s]` is symmetric
(Tweedie), so `J^T r` is a finite-difference directional derivative: what a perfect score of the
data law would keep of r (at sigma >= 0.8, where its grid is fine enough). `--speed` (toy task)
adds, on prompts naming a speed, the cosine of each update with the exact denoiser's change when the
speed word is swapped: whether the update points toward the named speed. Means over clips; one draw
of prompts and noise (`--seed`)."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from sgmd.objectives.common import noised, score_normaliser  # noqa: E402
from sgmd.objectives.sgmd import sgmd_generator_loss  # noqa: E402
from sgmd import toyvideo  # noqa: E402
from sgmd.samplers import denoised  # noqa: E402
from sgmd.toy_posterior import posterior_mean  # noqa: E402
from training.checkpoint import latest_checkpoint, read_checkpoint  # noqa: E402
from training.config import DistillConfig, coerce, finish  # noqa: E402
from training.loop import draw_batch  # noqa: E402
from training.trainer import build  # noqa: E402


EXACT_FROM = 0.8  # the exact denoiser's grid of start points is fine enough only at high noise (toy_posterior)


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample cosine over all but the batch dimension."""
    a, b = a.flatten(1), b.flatten(1)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-30)


def _ratio(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a.flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1).clamp_min(1e-30)


def config_of(checkpoint_path: str, out: str, clips: int, seed: int) -> DistillConfig:
    """The run's own options (teacher, LoRA, schedule, objective), resuming from that checkpoint."""
    saved = read_checkpoint(checkpoint_path).meta["config"]
    cfg = DistillConfig()
    for name, value in saved.items():
        if hasattr(cfg, name):
            setattr(cfg, name, coerce(name, value))
    cfg.out, cfg.resume, cfg.batch_size, cfg.seed, cfg.samples, cfg.evaluate = out, checkpoint_path, clips, seed, 0, False
    return finish(cfg)


def directional_derivative(f, x: torch.Tensor, v: torch.Tensor, h: float = 1e-3) -> torch.Tensor:
    """`J_f(x) v` by central differences (per sample; v is scaled to unit RMS per sample first)."""
    scale = v.flatten(1).pow(2).mean(1).sqrt().clamp_min(1e-30).reshape(-1, *([1] * (v.ndim - 1)))
    u = v / scale
    with torch.no_grad():
        return (f(x + h * u) - f(x - h * u)) / (2 * h) * scale


def generator_gradients(g: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor, fake_denoiser, d_teacher_of,
                        lambda_nr: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """At one noise level: (r, SGMD's Fisher gradient, SGMD's full gradient), all times N (the
    element count of the batch, since the losses are means), so that DMD's gradient is r itself.
    `fake_denoiser(x) -> D_F` must be differentiable in x; `d_teacher_of(x) -> D_T`."""
    gg = g.detach().clone().requires_grad_(True)
    x = noised(gg, eps, sigma)
    d_teacher = d_teacher_of(x.detach()).detach()
    d_fake = fake_denoiser(x)
    r = ((d_fake - d_teacher) / score_normaliser(g, d_teacher)).detach()
    fisher, _ = sgmd_generator_loss(gg, sigma, d_fake, d_teacher, lambda_nr=0.0)
    pull_fisher, = torch.autograd.grad(fisher * g.numel(), gg, retain_graph=True)
    full, _ = sgmd_generator_loss(gg, sigma, d_fake, d_teacher, lambda_nr=lambda_nr)
    pull_full, = torch.autograd.grad(full * g.numel(), gg)
    return r, pull_fisher, pull_full


def toward_named_speed(prompts: list[str], x: torch.Tensor, sigma: torch.Tensor, r: torch.Tensor,
                       pull: torch.Tensor) -> dict:
    """On clips whose prompt names a speed: cosine of each update (-r for DMD, -pull for SGMD) with
    `E[x0 | x_s, prompt] - E[x0 | x_s, the prompt with the other speed word]` (exact denoiser), the
    direction at x_s that separates the named speed from the other one."""
    swapped = [toyvideo.with_opposite(text, "speed") for text in prompts]
    keep = [i for i, (text, other) in enumerate(zip(prompts, swapped)) if other != text]
    if not keep:
        return {}
    idx = torch.tensor(keep)
    delta = (posterior_mean(x[idx], sigma[idx], [prompts[i] for i in keep])
             - posterior_mean(x[idx], sigma[idx], [swapped[i] for i in keep])).float()
    return {"speed_dmd": _cos(-r[idx], delta), "speed_sgmd": _cos(-pull[idx], delta), "speed_clips": len(keep)}


def measure(run, sigmas: list[float], exact: bool, speed: bool = False) -> list[dict]:
    obj, roles = run.objective, run.roles
    batch = draw_batch(run)
    with torch.no_grad():
        g = obj.generator_sample(roles, batch, obj.draw_noise(batch), obj.num_steps - 1)
    eps = obj.draw_noise(batch)
    rows = []
    for sv in sigmas:
        s = torch.full((g.shape[0],), sv)
        r, pull_fisher, pull_full = generator_gradients(
            g, eps, s, lambda x: denoised(x, s, roles.fake(x, s, batch.context)),
            lambda x: obj.teacher_denoised(roles, x, s, batch), run.cfg.lambda_nr)
        row = {"sigma": sv, "ratio": _ratio(pull_fisher, r), "cos": _cos(pull_fisher, r), "cos_nr": _cos(pull_full, r)}
        x = noised(g, eps, s)
        if exact and sv >= EXACT_FROM:
            jr = directional_derivative(lambda y: posterior_mean(y, s, batch.prompts).float(), x, r)
            row["ratio_exact"] = _ratio((1 - sv) * jr, r)
            row["cos_exact"] = _cos(jr, r)
            row["cos_fake_exact"] = _cos(pull_fisher, jr)
        if speed and sv >= EXACT_FROM:
            row.update(toward_named_speed(batch.prompts, x, s, r, pull_fisher))
        rows.append({k: (float(v.nanmean()) if torch.is_tensor(v) else v) for k, v in row.items()})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a run folder (its newest checkpoint) or a checkpoint file")
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--sigmas", default="0.98,0.95,0.9,0.83,0.7,0.5,0.3,0.1")
    p.add_argument("--exact", action="store_true", help="also the toy task's exact denoiser (slow at low noise)")
    p.add_argument("--speed", action="store_true", help="also how far each update points toward the prompt's own "
                   "speed word (toy task; prompts naming a speed; sigma >= 0.8)")
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    path = args.run
    if os.path.isdir(path):
        ckpt = latest_checkpoint(path)
        if ckpt is None:
            p.error(f"no checkpoint in {path}")
        path = ckpt.path
    sigmas = [float(v) for v in args.sigmas.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        run = build(config_of(path, tmp, args.clips, args.seed))
        run.state.rng.manual_seed(args.seed)
        rows = measure(run, sigmas, args.exact, args.speed)
    print(f"\n{path} ({run.cfg.objective}, iteration {run.state.step}), {args.clips} clips, lambda_NR "
          f"{run.cfg.lambda_nr}; DMD's gradient = r/N, SGMD's = pull-back of r through the fake score")
    head = f"{'sigma':>6} {'|SGMD|/|DMD|':>13} {'cos(SGMD, DMD)':>15} {'same, with NR':>14}"
    if args.exact:
        head += f" {'exact |.|/|DMD|':>16} {'cos(exact, DMD)':>16} {'cos(SGMD, exact)':>17}"
    print(head)
    for row in rows:
        line = f"{row['sigma']:>6.2f} {row['ratio']:>13.3f} {row['cos']:>15.3f} {row['cos_nr']:>14.3f}"
        if "cos_exact" in row:
            line += f" {row['ratio_exact']:>16.3f} {row['cos_exact']:>16.3f} {row['cos_fake_exact']:>17.3f}"
        if "speed_dmd" in row:
            line += f"  toward the named speed ({row['speed_clips']:.0f} clips): DMD {row['speed_dmd']:+.3f}, SGMD {row['speed_sgmd']:+.3f}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
