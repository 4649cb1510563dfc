"""Seconds per training step of the tiny teacher in each compute mode, measured side by side.

    python bench/teacher_step.py [--steps 20] [--rounds 3] [--threads 2]

One model per mode (fp32 eager, fp32 compiled, bf16 eager, bf16 compiled: `train_teacher.py
--dtype/--compile`), each taking the default recipe's steps (`train_teacher.train_step`: batch 16,
exact targets above sigma 0.9, training shift 6, gradient clip). Modes alternate within each round
so that load from other processes on this shared machine hits them alike; the figure is the median
over rounds of the mean seconds per step (forward, backward and AdamW; the compiled modes' first
steps, which compile, are warm-up and not timed). The ratio to fp32 eager is what the 44.5-minute
budget buys in steps."""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "training"))

import torch  # noqa: E402

import train_teacher as tt  # noqa: E402
from sgmd import toyvideo  # noqa: E402

MODES = (("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20, help="timed steps per mode and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before the first round (compiles)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    train_set = set(toyvideo.training_prompts())
    recipe = tt.build_parser().parse_args([])  # the default recipe: batch 16, shift 6, exact targets, ...
    runs = {}
    for dtype, compiled in MODES:
        torch.manual_seed(0)
        model = tt.WanModel(tt.TINY_CONFIG)
        runs[(dtype, compiled)] = (model, tt.training_forward(model, dtype, compiled),
                                   torch.optim.AdamW(model.parameters(), lr=1e-3), torch.Generator().manual_seed(0))

    def step(key):
        tt.train_step(*runs[key], train_set, recipe)

    for key in runs:
        for _ in range(args.warmup):
            step(key)
    times = {key: [] for key in runs}
    for r in range(args.rounds):
        for key in runs:
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(key)
            times[key].append((time.perf_counter() - t0) / args.steps)
            print(f"round {r + 1} {key[0]}{' compiled' if key[1] else ''}: {times[key][-1]:.3f} s/step", flush=True)
    base = statistics.median(times[("fp32", False)])
    print(f"\nteacher step, batch {recipe.batch_size}, {args.steps} steps x {args.rounds} rounds, torch {torch.__version__}, "
          f"{args.threads} threads")
    print(f"{'mode':<16}{'s/step (median)':>16}{'speed-up':>10}")
    for key, v in times.items():
        med = statistics.median(v)
        print(f"{key[0] + (' compiled' if key[1] else ''):<16}{med:>16.3f}{base / med:>9.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
