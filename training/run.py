"""Distil a Wan 2.1 text-to-video teacher into a few-step generator (SGMD or DMD2).

    python training/run.py [--config run.toml] [--objective sgmd] [--iterations 300] ...
    torchrun --nproc_per_node N training/run.py ...      (multi-process)

Options: `--help` or docs/config.md. User errors print one line `error: ...` and exit 2."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sgmd.errors import SGMDError  # noqa: E402
from training import distributed  # noqa: E402
from training.config import on_toy_task, parse_config, repo_path  # noqa: E402
from training.evaluate import evaluate_run  # noqa: E402
from training.loop import StopRequested  # noqa: E402
from training.trainer import train  # noqa: E402


def main(argv=None) -> int:
    try:
        cfg = parse_config(argv)
        outputs = train(cfg)
    except (SGMDError, StopRequested) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # unwritable --out, disk full...: the system's message says it
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; the last checkpoint is intact, continue with --resume", file=sys.stderr)
        return 2
    for name, path in outputs.items():
        print(f"{name}: {path}")
    if cfg.evaluate and on_toy_task(cfg) and outputs.get("generator") and distributed.is_main():
        try:
            evaluate_run(repo_path(cfg.teacher), outputs["generator"], os.path.join(cfg.out, "eval"), cfg.eval_seeds,
                         full=cfg.full, device=cfg.device, cfg=cfg.guidance)  # teacher sampled as its file records
        except SGMDError as e:
            print(f"error: evaluation: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
