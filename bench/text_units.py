"""How many of the text embedding's hidden units each prompt word still reaches (toy task).

    python bench/text_units.py --model TEACHER.safetensors [--words slowly,quickly,...] [--floor -2]

Wan's text embedding is `Linear(4096, dim) -> GELU(tanh) -> Linear(dim, dim)`. For each word of the toy
grammar it prints how many of the `dim` pre-activations `W v + b` (v: the word's fixed vector,
`sgmd.text.word_vector`) lie above `--floor` (GELU's slope at -2 is -0.09, at -4 -0.001). A word with
none left is embedded as the zero padding is, exactly up to GELU's tail: the model cannot tell it from
its absence, and no gradient reaches its input weights to change that (docs/tiny-model.md, v23)."""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from sgmd import text, toyvideo  # noqa: E402
from sgmd.weights import load_wan  # noqa: E402

GRAMMAR_WORDS = ("a", *toyvideo.COLOURS, *toyvideo.SHAPES, "moving", *toyvideo.DIRECTIONS, *toyvideo.NAMED_SPEEDS)


@torch.no_grad()
def units_reached(model, words, floor: float = -2.0) -> dict[str, int]:
    """Per word, how many hidden units of the text embedding its pre-activation puts above `floor`."""
    first = model.text_embedding[0]
    pre = first(torch.stack([text.word_vector(w) for w in words]).to(first.weight.dtype))
    return {w: int(n) for w, n in zip(words, (pre > floor).sum(1).tolist())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a teacher: Wan 2.1 T2V safetensors of the toy task")
    p.add_argument("--words", default=",".join(GRAMMAR_WORDS))
    p.add_argument("--floor", type=float, default=-2.0)
    args = p.parse_args(argv)
    model = load_wan(args.model, torch.float32, "cpu").eval()
    counts = units_reached(model, args.words.split(","), args.floor)
    print(f"hidden units of the text embedding above {args.floor:g}, of {model.text_embedding[0].out_features}:")
    for w, n in counts.items():
        print(f"  {w:8s} {n:4d}" + ("   (embedded as padding)" if n == 0 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
