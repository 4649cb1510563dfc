"""The toy task's fixed evaluation set and quality bar, shared by the evaluator and the run config.

A module of its own so that `training/config.py` can name the default seed count without importing
the evaluator (and through it the samplers and metrics).
"""
from __future__ import annotations

from sgmd import toyvideo
from sgmd.errors import SGMDError

# 400 clips. At 4 seeds a student-teacher speed gap's standard error is 3-5 points, as wide as the
# 5-point bar, and the teacher's speed moves by 10 points between blocks of 4 seeds (docs/tiny-model.md).
DEFAULT_SEEDS = 16
SEED_BASE = 10_000  # clip seed = SEED_BASE + 100 * prompt index + k

# Partially specified prompts (all in the teacher's training grammar): 7 without a speed (4 name a
# direction, 3 name nothing; the speed is then random in the data, so these measure mode collapse),
# and 4 with a speed but no direction.
PARTIAL_PROMPTS = (
    "a red circle moving left",
    "a green square moving up",
    "a blue circle moving down",
    "a yellow square moving right",
    "a magenta circle",
    "a cyan square",
    "a white circle",
    "a red square moving quickly",
    "a blue square moving slowly",
    "a green circle moving quickly",
    "a white square moving slowly",
)

# Quality bar (issue): teacher absolute floors; student relative to the teacher.
TEACHER_FLOORS = {"colour_accuracy": 0.95, "direction_accuracy": 0.90, "speed_accuracy": 0.85}
STUDENT_ACCURACY_TOLERANCE = 0.05  # accuracies within 5 points of the teacher's
STUDENT_MOTION_RATIO = 0.9  # motion on unspecified-speed prompts >= 0.9x the teacher's
STUDENT_DIVERSITY_RATIO = 0.8  # trajectory diversity >= 0.8x the teacher's
ACCURACIES = ("colour_accuracy", "shape_accuracy", "direction_accuracy", "speed_accuracy")


# ------------------------------------------------------------------------------- prompt set


def eval_prompt_set(seeds_per_prompt: int = DEFAULT_SEEDS) -> tuple[list[str], list[int]]:
    """The fixed evaluation set, flattened to one entry per clip: the 14 held-out fully specified
    prompts (`toyvideo.heldout_prompts`, never seen by the teacher) then `PARTIAL_PROMPTS`, each with
    `seeds_per_prompt` seeds `SEED_BASE + 100 * prompt_index + k`."""
    if not 1 <= seeds_per_prompt <= 100:
        raise SGMDError(f"--seeds must be between 1 and 100; got {seeds_per_prompt}")
    texts = [p.text for p in toyvideo.heldout_prompts()] + list(PARTIAL_PROMPTS)
    prompts, seeds = [], []
    for i, t in enumerate(texts):
        for k in range(seeds_per_prompt):
            prompts.append(t)
            seeds.append(SEED_BASE + 100 * i + k)
    return prompts, seeds
