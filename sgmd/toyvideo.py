"""The synthetic text-to-video task of the embedded default (issue 3; other tools read it).

A clip is `FRAMES` RGB frames of `SIZE`x`SIZE` pixels: black background, one solid shape moving in a
straight line at constant speed without leaving the frame. Prompts read
`a {colour} {shape} moving {direction} {speed}`; direction and/or speed may be left out, and then
that attribute is random in the data (for speed, "random" includes standing still), which makes
the motion distribution deliberately multi-modal.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

FRAMES = 8
SIZE = 16  # latent pixels; one latent pixel per video pixel (the codec upsamples for viewing)

COLOURS = {
    "red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0), "yellow": (1.0, 1.0, 0.0),
    "magenta": (1.0, 0.0, 1.0), "cyan": (0.0, 1.0, 1.0), "white": (1.0, 1.0, 1.0),
}
SHAPES = ("circle", "square")
DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
SPEEDS = {"still": 0.0, "slowly": 0.45, "quickly": 1.1}  # pixels per frame; "still" is never named
NAMED_SPEEDS = ("slowly", "quickly")  # the speed words of the prompt grammar
CIRCLE_RADIUS = 3.2
SQUARE_HALF = 2.9
SUPERSAMPLE = 4


@dataclass(frozen=True)
class Clip:
    """Everything that determines one clip."""

    colour: str
    shape: str
    direction: str  # one of DIRECTIONS (irrelevant when still)
    speed: str  # "still", "slowly" or "quickly"
    x0: float  # centre at frame 0, pixels
    y0: float
    travel_share: float = 1.0  # share of the speed's travel the clip covers; 1 in the task's data


def shortened(clip: Clip, share: float) -> Clip:
    """`clip` covering `share` of its travel, about the same mid-clip centre: a training state of a
    sampler that has drifted toward the still mean (`train_teacher --short-travel`), not task data."""
    half = SPEEDS[clip.speed] * (FRAMES - 1) / 2 * (clip.travel_share - share)
    dx, dy = DIRECTIONS[clip.direction]
    return replace(clip, x0=clip.x0 + dx * half, y0=clip.y0 + dy * half, travel_share=share)


@dataclass(frozen=True)
class Prompt:
    colour: str
    shape: str
    direction: str | None = None
    speed: str | None = None  # "slowly" / "quickly" or None (unspecified)

    @property
    def text(self) -> str:
        words = ["a", self.colour, self.shape]
        if self.direction or self.speed:
            words.append("moving")
        words += [w for w in (self.direction, self.speed) if w]
        return " ".join(words)

    @classmethod
    def parse(cls, text: str) -> "Prompt":
        """Inverse of `text` for grammar prompts; attributes not named (or unknown) are None."""
        words = text.lower().replace(",", " ").split()
        pick = lambda vocab: next((w for w in words if w in vocab), None)  # noqa: E731
        return cls(pick(COLOURS), pick(SHAPES), pick(DIRECTIONS), pick(NAMED_SPEEDS))


OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up", "slowly": "quickly", "quickly": "slowly"}
_KIND_WORDS = {"direction": tuple(DIRECTIONS), "speed": NAMED_SPEEDS}


def with_opposite(prompt: str, kind: str) -> str:
    """`prompt` with its `kind` word ("direction" or "speed") replaced by the opposite (left/right,
    up/down, slowly/quickly); unchanged when it names none."""
    words = _KIND_WORDS[kind]
    return " ".join(OPPOSITE[w] if w in words else w for w in prompt.split())


def without(prompt: str, kind: str) -> str:
    """`prompt` with its `kind` word ("direction" or "speed") left out, in the grammar's form ("a red
    circle moving left slowly" -> "a red circle moving left" -> "a red circle"): that attribute is then
    random, as in the data. Grammar prompts only (`Prompt.parse`)."""
    return replace(Prompt.parse(prompt), **{kind: None}).text


def half_extent(shape: str) -> float:
    return CIRCLE_RADIUS if shape == "circle" else SQUARE_HALF


def all_prompts() -> list[Prompt]:
    """Every prompt of the grammar (7 colours x 2 shapes x 5 direction options x 3 speed options)."""
    return [Prompt(c, s, d, v) for c in COLOURS for s in SHAPES for d in (None, *DIRECTIONS) for v in (None, *NAMED_SPEEDS)]


def heldout_prompts() -> list[Prompt]:
    """Fully specified prompts never shown to the teacher in training: one per colour and shape,
    rotating through directions and speeds so each attribute value is held out somewhere."""
    dirs, speeds = list(DIRECTIONS), NAMED_SPEEDS
    out = []
    for i, c in enumerate(COLOURS):
        for j, s in enumerate(SHAPES):
            k = 2 * i + j
            out.append(Prompt(c, s, dirs[k % 4], speeds[(k // 4 + k) % 2]))
    return out


def training_prompts() -> list[Prompt]:
    held = {p.text for p in heldout_prompts()}
    return [p for p in all_prompts() if p.text not in held]


LEAVE_OUT = 0.3  # probability that a training prompt leaves out its direction (and, apart, its speed)


def random_prompt(g: torch.Generator, prompts: list[Prompt] | None = None, leave_out_direction: float = LEAVE_OUT) -> Prompt:
    """Draw a training prompt: direction and speed are each left out with probability `LEAVE_OUT`
    (the direction with `leave_out_direction`: a teacher recipe may show more direction-free prompts)."""
    while True:
        c = list(COLOURS)[_randint(g, len(COLOURS))]
        s = SHAPES[_randint(g, 2)]
        d = None if _rand(g) < leave_out_direction else list(DIRECTIONS)[_randint(g, 4)]
        v = None if _rand(g) < LEAVE_OUT else NAMED_SPEEDS[_randint(g, 2)]
        p = Prompt(c, s, d, v)
        if prompts is None or p in prompts:
            return p


def clip_for_prompt(p: Prompt, g: torch.Generator) -> Clip:
    """Fill the prompt's unspecified attributes at random, then a start point that keeps the whole
    motion inside the frame."""
    direction = p.direction or list(DIRECTIONS)[_randint(g, 4)]
    speed = p.speed or ("still", *NAMED_SPEEDS)[_randint(g, 3)]
    travel = SPEEDS[speed] * (FRAMES - 1)
    dx, dy = DIRECTIONS[direction]
    r = half_extent(p.shape) + 0.5
    lo, hi = r, SIZE - r

    def start(d):  # the coordinate moves by d * travel over the clip
        a, b = (lo, hi - d * travel) if d >= 0 else (lo - d * travel, hi)
        return a + (b - a) * _rand(g)

    return Clip(p.colour, p.shape, direction, speed, start(dx), start(dy))


def render(clips: list[Clip]) -> torch.Tensor:
    """Anti-aliased RGB clips in [0, 1]: `[N, FRAMES, SIZE, SIZE, 3]`."""
    n, ss = len(clips), SUPERSAMPLE
    coords = (torch.arange(SIZE * ss, dtype=torch.float32) + 0.5) / ss
    yy, xx = coords.view(1, 1, -1, 1), coords.view(1, 1, 1, -1)
    t = torch.arange(FRAMES, dtype=torch.float32).view(1, -1, 1, 1)
    vel = torch.tensor([[DIRECTIONS[c.direction][i] * SPEEDS[c.speed] * c.travel_share for i in (0, 1)] for c in clips])
    start = torch.tensor([[c.x0, c.y0] for c in clips])
    cx = (start[:, 0].view(n, 1, 1, 1) + vel[:, 0].view(n, 1, 1, 1) * t)
    cy = (start[:, 1].view(n, 1, 1, 1) + vel[:, 1].view(n, 1, 1, 1) * t)
    is_circle = torch.tensor([c.shape == "circle" for c in clips]).view(n, 1, 1, 1)
    circle = ((xx - cx) ** 2 + (yy - cy) ** 2) <= CIRCLE_RADIUS**2
    square = ((xx - cx).abs() <= SQUARE_HALF) & ((yy - cy).abs() <= SQUARE_HALF)
    mask = torch.where(is_circle, circle, square).float()
    cover = torch.nn.functional.avg_pool2d(mask.view(n * FRAMES, 1, SIZE * ss, SIZE * ss), ss).view(n, FRAMES, SIZE, SIZE, 1)
    rgb = torch.tensor([COLOURS[c.colour] for c in clips]).view(n, 1, 1, 1, 3)
    return cover * rgb


def make_batch(n: int, g: torch.Generator, prompts: list[Prompt] | None = None,
               leave_out_direction: float = LEAVE_OUT) -> tuple[list[str], torch.Tensor, list[Clip]]:
    """A batch of training data: prompt texts, clips `[n, F, H, W, 3]`, and the clip parameters."""
    ps = [random_prompt(g, prompts, leave_out_direction) for _ in range(n)]
    clips = [clip_for_prompt(p, g) for p in ps]
    return [p.text for p in ps], render(clips), clips


def _rand(g: torch.Generator) -> float:
    return float(torch.rand((), generator=g))


def _randint(g: torch.Generator, n: int) -> int:
    return int(torch.randint(0, n, (), generator=g))


def speed_class(pixels_per_frame: float) -> str:
    """Classify a measured speed; thresholds halfway between the classes."""
    still, slow, quick = SPEEDS["still"], SPEEDS["slowly"], SPEEDS["quickly"]
    if pixels_per_frame < (still + slow) / 2:
        return "still"
    return "slowly" if pixels_per_frame < (slow + quick) / 2 else "quickly"


def expected_travel(speed: str) -> float:
    return SPEEDS[speed] * (FRAMES - 1)

