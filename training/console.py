"""Messages to the terminal (stderr), written so they do not break the tqdm progress bar.
Only the main process speaks."""
from __future__ import annotations

import sys

from tqdm import tqdm

from training import distributed


def info(message: str) -> None:
    if distributed.is_main():
        tqdm.write(message, file=sys.stderr)


def warn(message: str) -> None:
    if distributed.is_main():
        tqdm.write(f"warning: {message}", file=sys.stderr)
