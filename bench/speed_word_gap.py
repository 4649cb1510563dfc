"""What the speed word adds, over its absence, on clips that cover part of their travel (toy task).

    python bench/speed_word_gap.py --model TEACHER.safetensors [--clips 24] [--shares 1,0.5,0.3]
                                   [--sigmas 0.93,0.9,0.85] [--seed 5] [--threads 2]

For prompts that name a speed and no direction (`a red circle moving slowly`), it renders training
clips re-rendered over a share of their travel (`toyvideo.shortened`: where a sampler that drifts toward
the still clip goes, `train_teacher --short-travel`), noises them, and prints how far the shape travels
(`travel_drift.travel`, px) in four x0 estimates at the same state: the model's and the exact posterior
mean's (`sgmd.toy_posterior`), each with the prompt and with its speed word left out. On a short clip
the exact "slowly" points on to the full travel (3.15 px) and the exact speed-free prompt back toward
the still clip; a teacher that reads "slowly" as a no-op gives the same x0 for both
(docs/tiny-model.md, v23)."""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from sgmd import codec, text, toy_posterior, toyvideo  # noqa: E402
from sgmd.objectives.common import noised  # noqa: E402
from sgmd.samplers import denoised, model_velocity  # noqa: E402
from sgmd.teacher_sampling import file_codec  # noqa: E402
from sgmd.weights import load_wan  # noqa: E402
from travel_drift import travel  # noqa: E402


@torch.no_grad()
def gap(model, word: str, n: int, shares: list[float], sigmas: list[float], g: torch.Generator,
        codec_id: str = codec.CODEC_V2):
    """Rows `(share, sigma, model with the word, exact with it, model without, exact without)`, mean
    travel in px over `n` direction-free clips of speed `word` (in the model's codec `codec_id`); one
    batch of clips for every row."""
    pool = {p for p in toyvideo.training_prompts() if p.speed == word and not p.direction}
    prompts, _, clips = toyvideo.make_batch(n, g, pool)
    unsped = [toyvideo.without(p, "speed") for p in prompts]
    with_word, without = model_velocity(model, text.encode_text(prompts)), model_velocity(model, text.encode_text(unsped))
    mean = lambda t: float(travel(t).mean())  # noqa: E731
    rows = []
    for u in shares:
        x0 = codec.encode(toyvideo.render([toyvideo.shortened(c, u) for c in clips]), codec_id)
        for s in sigmas:
            sig = torch.full((n,), s)
            x = noised(x0, torch.randn(x0.shape, generator=g), sig)
            rows.append((u, s, mean(denoised(x, sig, with_word(x, sig))), mean(toy_posterior.posterior_mean(x, sig, prompts, codec_id=codec_id)),
                         mean(denoised(x, sig, without(x, sig))), mean(toy_posterior.posterior_mean(x, sig, unsped, codec_id=codec_id))))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a teacher: Wan 2.1 T2V safetensors of the toy task")
    p.add_argument("--clips", type=int, default=24)
    p.add_argument("--shares", default="1,0.5,0.3", help="shares of the travel the clips cover")
    p.add_argument("--sigmas", default="0.93,0.9,0.85")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_wan(args.model, torch.float32, "cpu").eval()
    shares, sigmas = [float(v) for v in args.shares.split(",")], [float(v) for v in args.sigmas.split(",")]
    g = torch.Generator().manual_seed(args.seed)
    print(f"travel (px) of the x0 estimate, model / exact, on {args.clips} direction-free clips per speed word, "
          f"covering a share of their travel (data: {', '.join(f'{w} {toyvideo.expected_travel(w):.2f}' for w in toyvideo.NAMED_SPEEDS)})")
    print(f"{'word':8s} {'share':>5s} {'sigma':>5s} {'with the word':>16s} {'without it':>16s}")
    for word in toyvideo.NAMED_SPEEDS:
        for u, s, m, e, m0, e0 in gap(model, word, args.clips, shares, sigmas, g, file_codec(args.model)):
            print(f"{word:8s} {u:5.2f} {s:5.2f} {m:>8.2f} / {e:<6.2f} {m0:>8.2f} / {e0:<6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
