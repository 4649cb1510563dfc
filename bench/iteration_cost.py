"""Seconds per iteration of SGMD vs DMD2 (or, with `--motion`, of SGMD toward the teacher with and without
its motion guidance; with `--merge`, of SGMD with its LoRA adapters merged into the base weight where that
is cheaper (the default, `sgmd.lora.merge_pays`) and never merged), measured side by side in one run (issue 2).

    python bench/iteration_cost.py [--teacher models/diffusion_models/sgmd_tiny_teacher.safetensors] [--iterations 12] [--rounds 3] [--motion | --merge]

Both objectives run the same trainer on the same teacher, batch and LoRA settings. Runs alternate
(sgmd, dmd2, sgmd, dmd2, ...) so that load from other processes on this shared machine hits both
alike; the figure is the median over rounds of the mean training seconds per iteration (the
loop's own `wall_time`, which excludes checkpoint and sample writing; the first iteration of each
run is dropped as warm-up). It also prints the model passes per iteration that the objectives
declare (docs/objectives.md)."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from contextlib import nullcontext

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sgmd.lora import merging  # noqa: E402
from training.config import parse_config  # noqa: E402
from training.trainer import build, train  # noqa: E402


def seconds_per_iteration(out: str) -> float:
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    times = [r["sec_per_iter"] for r in rows[1:] if r.get("sec_per_iter") is not None]
    return sum(times) / len(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="models/diffusion_models/sgmd_tiny_teacher.safetensors")
    p.add_argument("--iterations", type=int, default=12)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--motion", action="store_true",
                   help="compare SGMD with the teacher file's motion guidance against SGMD with plain CFG")
    p.add_argument("--merge", action="store_true",
                   help="compare SGMD with adapters merged where cheaper (the default) against never merged")
    args = p.parse_args(argv)
    if args.motion and args.merge:
        p.error("--motion and --merge are separate comparisons; pick one")
    common = ["--teacher", args.teacher, "--iterations", str(args.iterations), "--batch-size", str(args.batch_size),
              "--samples", "0", "--no-evaluate", "--checkpoint-every", str(10 ** 6), "--device", "cpu"]
    if args.motion:
        variants = {"sgmd": ["--objective", "sgmd"], "sgmd_plain_cfg": ["--objective", "sgmd", "--motion-guidance", "0"]}
    elif args.merge:
        variants = {"sgmd": ["--objective", "sgmd"], "sgmd_unmerged": ["--objective", "sgmd"]}
    else:
        variants = {"sgmd": ["--objective", "sgmd"], "dmd2": ["--objective", "dmd2"]}
    results = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for objective in results:
                out = os.path.join(tmp, f"{objective}_{r}")
                with merging(False) if objective == "sgmd_unmerged" else nullcontext():
                    train(parse_config(common + variants[objective] + ["--out", out]))
                results[objective].append(seconds_per_iteration(out))
                print(f"round {r + 1} {objective}: {results[objective][-1]:.3f} s/iter", flush=True)
        passes = {o: build(parse_config(common + variants[o] + ["--out", os.path.join(tmp, "p" + o)]))
                  .objective.passes_per_iteration() for o in results}
    med = {o: statistics.median(v) for o, v in results.items()}
    print(f"\nteacher {args.teacher}, batch {args.batch_size}, {args.iterations} iterations x {args.rounds} rounds, "
          f"torch threads {__import__('torch').get_num_threads()}")
    print(f"{'run':<16}{'s/iter (median)':>18}{'rounds':>30}")
    for o in results:
        print(f"{o:<16}{med[o]:>18.3f}{'  '.join(f'{v:.3f}' for v in results[o]):>30}")
    other = [o for o in results if o != "sgmd"][0]
    print(f"{other} / sgmd seconds per iteration: {med[other] / med['sgmd']:.2f}x")
    print("declared passes per iteration:", json.dumps(passes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
