"""Can the GAN head see speed? The repository's head (`sgmd.objectives.gan.GANHead`, strided 3D
convolutions over the token grid) against a per-token MLP averaged over tokens (the first design),
side by side on the same draws.

    python bench/gan_head.py [--teacher models/diffusion_models/sgmd_tiny_teacher.safetensors] [--steps 300]
                             [--lr 2e-4] [--sigmas 0.1,0.3,0.5,0.7,0.85,0.95] [--threads 0] [--seed 0]

Both heads read the frozen teacher's middle-block tokens (what `GANTerm` taps on the fake network,
which starts as the teacher) and are trained with AdamW at the fake score's default rate, as in
distillation, to tell a real clip of a direction-free "quickly" prompt (label real) from a clip of
the same prompt that is slow or still (label fake): the student's failure on those prompts
(docs/tiny-model.md). Training noise levels are drawn as the objectives draw them
(`sgmd.schedules.sample_score_sigma`); the real and the fake clip of a pair share their noise. It
prints each head's accuracy on fresh pairs at fixed noise levels (0.5 = chance)."""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from sgmd import codec, text, toyvideo  # noqa: E402
from sgmd.teacher_sampling import file_codec  # noqa: E402
from sgmd.objectives.common import noised  # noqa: E402
from sgmd.objectives.gan import GANTerm, gan_discriminator_loss  # noqa: E402
from sgmd.schedules import sample_score_sigma, sigma_to_timestep  # noqa: E402
from sgmd.weights import load_wan  # noqa: E402
from training.config import DistillConfig, repo_path  # noqa: E402


class TokenMeanHead(nn.Module):
    """The first design: a per-token MLP, averaged over tokens (blind to where each token sits)."""

    def __init__(self, dim: int, hidden: int = 256):
        super().__init__()
        self.norm, self.fc1, self.fc2 = nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.Linear(hidden, 1)

    def forward(self, tokens: torch.Tensor, grid) -> torch.Tensor:
        return self.fc2(F.silu(self.fc1(self.norm(tokens.float())))).mean(dim=(1, 2))


def pairs(n: int, g: torch.Generator, codec_id: str = codec.CODEC_V2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n direction-free "quickly" prompts: real clips, slow-or-still clips of the same prompts (in the
    teacher's codec), context."""
    colours = list(toyvideo.COLOURS)
    prompts = [toyvideo.Prompt(colours[int(torch.randint(len(colours), (1,), generator=g))],
                               toyvideo.SHAPES[int(torch.randint(len(toyvideo.SHAPES), (1,), generator=g))], None, "quickly")
               for _ in range(n)]
    real = [toyvideo.clip_for_prompt(p, g) for p in prompts]
    slow = [toyvideo.clip_for_prompt(toyvideo.Prompt(p.colour, p.shape, None, ("still", "slowly")[i % 2]), g)
            for i, p in enumerate(prompts)]
    return (codec.encode(toyvideo.render(real), codec_id), codec.encode(toyvideo.render(slow), codec_id),
            text.encode_text([p.text for p in prompts]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default=DistillConfig.teacher, help="Wan file (default: the shipped tiny teacher)")
    p.add_argument("--steps", type=int, default=300, help="Adam steps per head (batch 8 pairs)")
    p.add_argument("--lr", type=float, default=2e-4, help="head learning rate (the fake score's default)")
    p.add_argument("--sigmas", default="0.1,0.3,0.5,0.7,0.85,0.95")
    p.add_argument("--eval-pairs", type=int, default=64, help="fresh pairs per noise level")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_wan(repo_path(args.teacher)).eval().requires_grad_(False)
    codec_id = file_codec(repo_path(args.teacher))
    torch.manual_seed(args.seed)  # the heads' initialisation
    term = GANTerm(model, real_latents=lambda batch: None)  # the training term's head and tap (its block choice)
    heads = {"grid convolutions (GANHead)": term.head, "per-token MLP, mean": TokenMeanHead(model.cfg.dim)}
    opts = {k: torch.optim.AdamW(h.parameters(), lr=args.lr, betas=(0.0, 0.999), weight_decay=0.01) for k, h in heads.items()}
    draws = torch.Generator().manual_seed(args.seed + 1)

    def both(real, fake, sigma, ctx):
        """Tokens of real and fake on the same noise, and their grid."""
        noise = torch.randn(real.shape, generator=draws)
        out = []
        for x in (real, fake):
            with term.tap, torch.no_grad():
                model(noised(x, noise, sigma), sigma_to_timestep(sigma), ctx)
            out.append(term.tap.tokens)
        return out[0], out[1], term.tap.grid

    for _ in range(args.steps):  # one draw of tokens serves both heads
        real, fake, ctx = pairs(8, draws, codec_id)
        t_real, t_fake, grid = both(real, fake, sample_score_sigma(8, draws), ctx)
        for k, head in heads.items():
            loss = gan_discriminator_loss(head(t_real, grid), head(t_fake, grid))
            opts[k].zero_grad()
            loss.backward()
            opts[k].step()
    sigmas = [float(s) for s in args.sigmas.split(",")]
    print(f"accuracy telling a real direction-free 'quickly' clip from a slow or still one ({args.steps} steps, "
          f"lr {args.lr:g}, {args.eval_pairs} pairs per level; 0.5 = chance)")
    print("noise  " + "  ".join(f"{k:>28}" for k in heads))
    for s in sigmas:
        real, fake, ctx = pairs(args.eval_pairs, draws)
        t_real, t_fake, grid = both(real, fake, torch.full((args.eval_pairs,), s), ctx)
        with torch.no_grad():
            acc = [0.5 * float((h(t_real, grid) > 0).float().mean() + (h(t_fake, grid) < 0).float().mean())
                   for h in heads.values()]
        print(f"{s:5.2f}  " + "  ".join(f"{a:28.3f}" for a in acc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
