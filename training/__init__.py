"""Distillation trainer built on `sgmd`: config, roles, the objective-agnostic loop, checkpoints,
export and samples. Entry point: `python training/run.py --help`."""
