"""Model-free measures on decoded RGB clips of the synthetic task (`toyvideo`), for the evaluator.

Input clips are `[N, T, H, W, 3]` (or one `[T, H, W, 3]`), float in [0, 1] or uint8, torch or numpy.
Only numpy is used (no scipy: it is not a runtime dependency).

Tracking, per frame: intensity = max channel; the *core* mask is intensity > `CORE_THRESHOLD`;
8-connected components of the core are the blobs; the heaviest blob (by summed intensity) is the
shape, its *support* is the blob dilated by one pixel (to take back the anti-aliased fringe) and
restricted to intensity > `SUPPORT_THRESHOLD`. On the support, intensity-weighted sums give the
area (in pixels: intensity = coverage for rendered clips), the centroid and the moments.

Per clip (definitions; calibrated on `toyvideo.render`, see tests/test_metrics.py):
- colour: mean RGB of the core pixels over the frames, divided by its largest channel (so
  anti-aliasing / dimming does not matter, only which channels are on), nearest `toyvideo.COLOURS`.
- shape: 4th-moment test. Circles and squares of this task have nearly the same area and second
  moments, but a square's projection is flatter along its axes (kurtosis 1.8) than along its
  diagonals (2.4), a disk's is the same in every direction (2.0). Score = mean diagonal kurtosis -
  mean axis kurtosis, median over frames; square if > `SHAPE_SPLIT` (rendered: circle |s| < 0.08,
  square s > 0.53). `fill` (core pixels / their bounding box; circle <= 0.89, square 1.0) is kept
  as a feature.
- velocity: least-squares line fit of the centroid vs frame index (pixels / frame); start = the
  fitted position at frame 0; speed = |velocity|; speed class = `toyvideo.speed_class(speed)`;
  direction = dominant axis and its sign (image y grows downwards), only when not still.
- steps: the centroid's per-frame displacement projected on the net direction (first to last
  frame), for a valid clip; constant for the task's clips. Set measures over the valid clips that
  travel >= `MOVING_TRAVEL` pixels: `step_profile`, the mean of each clip's steps divided by its
  mean step, and `end_speed_ratio`, the mean of the first and last entries of that profile (1 =
  constant speed, as in the data; < 1 = the clip eases in and out, which also inflates the fitted
  speed: positions following the codec-v2 cosine ramp, cos(pi (i + 0.5) / 8), give 0.53).
- temporal consistency: mean of clip01(1 - CV of the per-frame area) and clip01(1 - RMS deviation
  of the per-frame mean colour / norm of the clip's mean colour); a frame without a shape has area 0
  and colour 0, so flicker and vanishing shapes lower it; 0 when nothing is ever found.
- degenerate clips (a frame without a shape, several significant blobs in a frame, or an area
  outside `AREA_RANGE`): `valid = False`, every attribute check counts as wrong, never an error.

Set measures (`evaluate_clips`):
- diversity: mean over prompts (with >= 2 clips) of the mean pairwise Euclidean distance between
  the clips' trajectory vectors (start x, start y, displacement x, displacement y over the clip),
  all divided by the frame size. Chosen over pixel distance as the headline because it measures
  exactly what the task randomises (start point, speed, direction) in the task's own units, while a
  pixel distance saturates as soon as two shapes stop overlapping (a 1-pixel and a 10-pixel offset
  score alike) and rewards noise and artefacts. `diversity_pixels` (mean pairwise RMS pixel
  distance) is reported too, as a tracking-free cross-check.
- FD: Frechet distance between Gaussian fits of the per-clip feature vectors `FEATURE_NAMES`
  (each divided by the fixed `FEATURE_SCALES` so the numbers compare across runs) of the generated
  clips and of real clips rendered by `toyvideo` for the same prompts (unspecified attributes and
  start points random, `REAL_PER_CLIP` real clips per generated clip, fixed seed).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from . import toyvideo

CORE_THRESHOLD = 0.4
SUPPORT_THRESHOLD = 0.05
MIN_BLOB_MASS = 1.0  # a component lighter than this (summed intensity, pixels) is a speck, not a blob
MIN_BLOB_FRACTION = 0.2  # a second component this heavy relative to the main one makes "several blobs"
NOMINAL_AREA = 0.5 * (math.pi * toyvideo.CIRCLE_RADIUS**2 + (2 * toyvideo.SQUARE_HALF) ** 2)
AREA_RANGE = (0.4 * NOMINAL_AREA, 2.0 * NOMINAL_AREA)
SHAPE_SPLIT = 0.3
REAL_PER_CLIP = 4
MOVING_TRAVEL = 2.0  # pixels first to last frame: below this a clip's step profile is noise
REAL_SEED = 20260523
FEATURE_NAMES = ("colour_r", "colour_g", "colour_b", "area", "fill", "start_x", "start_y", "vel_x", "vel_y", "speed")
_VMAX = toyvideo.SPEEDS["quickly"]
FEATURE_SCALES = np.array([1, 1, 1, NOMINAL_AREA, 1, toyvideo.SIZE, toyvideo.SIZE, _VMAX, _VMAX, _VMAX], dtype=np.float64)

_COLOUR_NAMES = list(toyvideo.COLOURS)
_COLOUR_TABLE = np.array([toyvideo.COLOURS[c] for c in _COLOUR_NAMES], dtype=np.float64)


# ----------------------------------------------------------------------------------------- input


def as_clips(videos) -> np.ndarray:
    """Clips -> float64 numpy `[N, T, H, W, 3]` in [0, 1] (uint8 is divided by 255, NaN -> 0)."""
    if isinstance(videos, torch.Tensor):
        videos = videos.detach().cpu()
        videos = videos.numpy() if videos.dtype == torch.uint8 else videos.double().numpy()
    a = np.asarray(videos)
    if a.dtype == np.uint8:
        a = a.astype(np.float64) / 255.0
    else:
        a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=1.0, neginf=0.0)
    if a.ndim == 4:
        a = a[None]
    if a.ndim != 5 or a.shape[-1] != 3:
        raise ValueError(f"clips must be [N, T, H, W, 3] RGB; got shape {tuple(a.shape)}")
    return np.clip(a, 0.0, 1.0)


# -------------------------------------------------------------------------------------- tracking


def _components(core: np.ndarray) -> np.ndarray:
    """8-connected components of `[M, H, W]` masks: each pixel gets the largest flat index + 1 of
    its component (0 = background); labels are unique across all frames."""
    m, h, w = core.shape
    ids = np.arange(1, m * h * w + 1, dtype=np.int64).reshape(m, h, w)
    lab = np.where(core, ids, 0)
    while True:
        p = np.pad(lab, ((0, 0), (1, 1), (1, 1)))
        nb = lab.copy()
        for dy in range(3):
            for dx in range(3):
                np.maximum(nb, p[:, dy:dy + h, dx:dx + w], out=nb)
        nb = np.where(core, nb, 0)
        if np.array_equal(nb, lab):
            return lab
        lab = nb


def _dilate(mask: np.ndarray) -> np.ndarray:
    """3x3 dilation of `[M, H, W]` masks."""
    _, h, w = mask.shape
    p = np.pad(mask, ((0, 0), (1, 1), (1, 1)))
    out = np.zeros_like(mask)
    for dy in range(3):
        for dx in range(3):
            out |= p[:, dy:dy + h, dx:dx + w]
    return out


@dataclass
class FrameTrack:
    status: str  # "ok", "empty", "several blobs", "size"
    mass: float = 0.0  # summed intensity of the shape's support (pixels)
    cx: float = math.nan
    cy: float = math.nan
    colour: tuple = (0.0, 0.0, 0.0)  # mean RGB of the shape's core pixels
    shape_score: float = math.nan  # diagonal minus axis kurtosis
    fill: float = 0.0


def _kurtosis(w, d, mass):
    """Per-frame kurtosis of the coordinate `d` under weights `w` (`[M, H, W]` -> `[M]`)."""
    m2 = (w * d**2).sum((1, 2)) / mass
    m4 = (w * d**4).sum((1, 2)) / mass
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(m2 > 1e-9, m4 / np.maximum(m2, 1e-12) ** 2, np.nan)


def track_frames(clips) -> list[list[FrameTrack]]:
    """Per-clip, per-frame tracking of the shape (see the module doc); vectorised over all frames."""
    a = as_clips(clips)
    n, t, h, w, _ = a.shape
    m = n * t
    if m == 0:
        return [[] for _ in range(n)]
    rgb = a.reshape(m, h, w, 3)
    inten = rgb.max(-1)
    core = inten > CORE_THRESHOLD
    lab = _components(core)
    blob_mass = np.bincount(lab.ravel(), weights=(inten * core).ravel(), minlength=m * h * w + 1)
    blob_mass[0] = 0.0
    pixel_mass = blob_mass[lab]  # mass of the component each pixel belongs to
    flat = pixel_mass.reshape(m, -1)
    top = flat.max(1)
    best = lab.reshape(m, -1)[np.arange(m), flat.argmax(1)]
    roots = core & (lab == np.arange(1, m * h * w + 1).reshape(m, h, w))  # one pixel per component
    limit = np.maximum(MIN_BLOB_MASS, MIN_BLOB_FRACTION * top)[:, None, None]
    significant = (roots & (pixel_mass >= limit)).sum((1, 2))
    found = top >= MIN_BLOB_MASS
    blob = (lab == best[:, None, None]) & found[:, None, None]
    support = _dilate(blob) & (inten > SUPPORT_THRESHOLD)
    wt = inten * support
    mass = wt.sum((1, 2))
    safe = np.where(mass > 0, mass, 1.0)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5  # pixel centres (toyvideo coordinates)
    cx, cy = (wt * xs).sum((1, 2)) / safe, (wt * ys).sum((1, 2)) / safe
    dx, dy = xs[None] - cx[:, None, None], ys[None] - cy[:, None, None]
    k_axis = 0.5 * (_kurtosis(wt, dx, safe) + _kurtosis(wt, dy, safe))
    r2 = math.sqrt(2)
    k_diag = 0.5 * (_kurtosis(wt, (dx + dy) / r2, safe) + _kurtosis(wt, (dx - dy) / r2, safe))
    npix = blob.sum((1, 2))
    rows, cols = blob.any(2), blob.any(1)
    height = h - rows[:, ::-1].argmax(1) - rows.argmax(1)
    width = w - cols[:, ::-1].argmax(1) - cols.argmax(1)
    fill = npix / np.maximum(height * width, 1)
    colour = (rgb * blob[..., None]).sum((1, 2)) / np.maximum(npix, 1)[:, None]
    out = []
    for i in range(m):
        if not found[i]:
            out.append(FrameTrack("empty"))
            continue
        status = ("several blobs" if significant[i] > 1 else
                  "size" if not AREA_RANGE[0] <= mass[i] <= AREA_RANGE[1] else "ok")
        out.append(FrameTrack(status, float(mass[i]), float(cx[i]), float(cy[i]), tuple(float(c) for c in colour[i]),
                              float(k_diag[i] - k_axis[i]), float(fill[i])))
    return [out[i * t:(i + 1) * t] for i in range(n)]


# --------------------------------------------------------------------------------- per-clip

@dataclass
class ClipAnalysis:
    valid: bool
    reason: str  # "ok", "no shape", "shape missing in some frames", "several blobs", "implausible size"
    colour: str | None
    shape: str | None
    direction: str | None  # None when still or degenerate
    speed_class: str | None
    speed: float  # pixels / frame (0 when it cannot be measured)
    velocity: tuple  # (vx, vy) pixels / frame
    start: tuple  # fitted centre at frame 0 (NaN when never found)
    mean_colour: tuple
    area: float  # mean over frames where found
    fill: float
    shape_score: float
    consistency: float
    steps: tuple = ()  # per-frame displacement along the net direction (valid clips only)

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def classify_colour(rgb) -> str | None:
    """Nearest `toyvideo.COLOURS` entry after dividing by the brightest channel (hue only)."""
    rgb = np.asarray(rgb, dtype=np.float64)
    top = rgb.max()
    if not np.isfinite(top) or top <= 1e-6:
        return None
    return _COLOUR_NAMES[int(np.argmin(((_COLOUR_TABLE - rgb / top) ** 2).sum(1)))]


def classify_direction(vx: float, vy: float) -> str:
    if abs(vx) >= abs(vy):
        return "right" if vx > 0 else "left"
    return "down" if vy > 0 else "up"


def fit_line(t, x) -> tuple[float, float]:
    """Least squares `x = start + v t` -> (start, v)."""
    t, x = np.asarray(t, dtype=np.float64), np.asarray(x, dtype=np.float64)
    tm, xm = t.mean(), x.mean()
    var = ((t - tm) ** 2).sum()
    v = float(((t - tm) * (x - xm)).sum() / var) if var > 0 else 0.0
    return float(xm - v * tm), v


def mass_centres(frames: torch.Tensor) -> torch.Tensor:
    """Per-frame centre of mass `[N, T, 2]` (x, y, pixel centres at +0.5) of RGB clips `[N, T, H, W, 3]`
    in [0, 1]. Mass, not a mask: a blurred estimate counts as the mean of the clips it mixes."""
    m = frames.sum(-1)
    grid = torch.arange(m.shape[-1], dtype=torch.float32) + 0.5
    tot = m.sum((2, 3)).clamp_min(1e-6)
    return torch.stack([(m.sum(2) * grid).sum(-1) / tot, (m.sum(3) * grid).sum(-1) / tot], -1)


def temporal_consistency(frames: list[FrameTrack]) -> float:
    areas = np.array([f.mass if f.status != "empty" else 0.0 for f in frames])
    cols = np.array([f.colour if f.status != "empty" else (0.0, 0.0, 0.0) for f in frames])
    if areas.mean() <= 0:
        return 0.0
    area_term = 1.0 - areas.std() / areas.mean()
    cbar = cols.mean(0)
    norm = float(np.linalg.norm(cbar))
    col_term = 1.0 - math.sqrt(float(((cols - cbar) ** 2).sum(1).mean())) / norm if norm > 0 else 0.0
    return 0.5 * (min(1.0, max(0.0, area_term)) + min(1.0, max(0.0, col_term)))


def analyse_track(frames: list[FrameTrack]) -> ClipAnalysis:
    found = [i for i, f in enumerate(frames) if f.status != "empty"]
    statuses = {f.status for f in frames}
    if not found:
        reason = "no shape"
    elif len(found) < len(frames):
        reason = "shape missing in some frames"
    elif "several blobs" in statuses:
        reason = "several blobs"
    elif "size" in statuses:
        reason = "implausible size"
    else:
        reason = "ok"
    valid = reason == "ok"
    nan2 = (math.nan, math.nan)
    if not found:
        return ClipAnalysis(False, reason, None, None, None, None, 0.0, (0.0, 0.0), nan2, (0.0, 0.0, 0.0), 0.0, 0.0,
                            math.nan, 0.0)
    fs = [frames[i] for i in found]
    mean_colour = tuple(float(c) for c in np.mean([f.colour for f in fs], axis=0))
    scores = [f.shape_score for f in fs if math.isfinite(f.shape_score)]
    score = float(np.median(scores)) if scores else math.nan
    if len(found) >= 2:
        x0, vx = fit_line(found, [f.cx for f in fs])
        y0, vy = fit_line(found, [f.cy for f in fs])
    else:
        (x0, y0), vx, vy = (fs[0].cx, fs[0].cy), 0.0, 0.0
    speed = math.hypot(vx, vy)
    cls = toyvideo.speed_class(speed) if valid else None
    steps = ()
    if valid:
        pos = np.array([[f.cx, f.cy] for f in fs])
        net = pos[-1] - pos[0]
        norm = float(np.linalg.norm(net))
        if norm > 0:
            steps = tuple(float(d) for d in np.diff(pos, axis=0) @ (net / norm))
    direction = classify_direction(vx, vy) if valid and cls != "still" else None
    return ClipAnalysis(
        valid, reason,
        classify_colour(mean_colour) if valid else None,
        (None if not math.isfinite(score) else ("square" if score > SHAPE_SPLIT else "circle")) if valid else None,
        direction, cls, speed, (vx, vy), (x0, y0), mean_colour,
        float(np.mean([f.mass for f in fs])), float(np.mean([f.fill for f in fs])), score,
        temporal_consistency(frames), steps)


def step_profile(analyses: list[ClipAnalysis]) -> list[float] | None:
    """Mean per-frame step of the moving valid clips, each divided by its own mean step."""
    rows = [np.array(a.steps) for a in analyses if a.valid and len(a.steps) and sum(a.steps) >= MOVING_TRAVEL]
    if not rows:
        return None
    return [float(v) for v in np.mean([r / r.mean() for r in rows], axis=0)]


def analyse_clips(videos) -> list[ClipAnalysis]:
    return [analyse_track(fr) for fr in track_frames(videos)]


# ------------------------------------------------------------------------------ feature vectors


def feature_vector(a: ClipAnalysis) -> np.ndarray:
    """Per-clip features `FEATURE_NAMES`, divided by `FEATURE_SCALES`; always finite (a clip
    without a shape gets colour 0, area 0, start at the frame centre, no motion)."""
    centre = toyvideo.SIZE / 2
    sx, sy = (c if math.isfinite(c) else centre for c in a.start)
    raw = np.array([*a.mean_colour, a.area, a.fill, sx, sy, *a.velocity, a.speed], dtype=np.float64)
    return raw / FEATURE_SCALES


def feature_matrix(analyses: list[ClipAnalysis]) -> np.ndarray:
    if not analyses:
        return np.zeros((0, len(FEATURE_NAMES)))
    return np.stack([feature_vector(a) for a in analyses])


def trajectory_vector(a: ClipAnalysis) -> np.ndarray:
    """(start x, start y, displacement x, displacement y over the clip) / frame size; NaN if never found."""
    steps = toyvideo.FRAMES - 1
    return np.array([a.start[0], a.start[1], a.velocity[0] * steps, a.velocity[1] * steps]) / toyvideo.SIZE


# ------------------------------------------------------------------------------ set measures


def _mean_pairwise(vectors: np.ndarray, rms: bool = False) -> float:
    n = len(vectors)
    if n < 2:
        return math.nan
    flat = vectors.reshape(n, -1)
    d2 = ((flat[:, None, :] - flat[None, :, :]) ** 2).sum(-1)
    if rms:
        d2 = d2 / flat.shape[1]
    iu = np.triu_indices(n, 1)
    return float(np.sqrt(np.maximum(d2[iu], 0)).mean())


def _groups(prompts) -> dict:
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(p, []).append(i)
    return groups


def trajectory_diversity(analyses: list[ClipAnalysis], prompts) -> float:
    """Mean over prompts of the mean pairwise distance of `trajectory_vector`s (clips where a shape
    was found); NaN if no prompt has two such clips."""
    vals = []
    for idx in _groups(prompts).values():
        vecs = np.array([trajectory_vector(analyses[i]) for i in idx])
        vecs = vecs[np.isfinite(vecs).all(1)] if len(vecs) else vecs
        d = _mean_pairwise(vecs)
        if math.isfinite(d):
            vals.append(d)
    return float(np.mean(vals)) if vals else math.nan


def pixel_diversity(videos, prompts) -> float:
    """Mean over prompts of the mean pairwise RMS pixel distance (RGB in [0, 1]) of their clips."""
    a = as_clips(videos)
    vals = [d for idx in _groups(prompts).values() if math.isfinite(d := _mean_pairwise(a[idx], rms=True))]
    return float(np.mean(vals)) if vals else math.nan


def same_noise_distance(teacher: list[ClipAnalysis], student: list[ClipAnalysis]) -> dict:
    """How closely a student follows the teacher clip by clip, both sampled from the same noise and
    prompt: mean Euclidean distance of the fitted start positions (pixels) and velocities (pixels /
    frame) over the clips valid in both. A student that has learnt which clip each noise gives
    scores near 0; one that ignores its noise scores about the spread of the teacher's clips."""
    if len(teacher) != len(student):
        raise ValueError(f"{len(teacher)} teacher clips against {len(student)} student clips")
    both = [(t, s) for t, s in zip(teacher, student) if t.valid and s.valid]
    if not both:
        return {"start": None, "velocity": None, "n": 0}
    return {"start": float(np.mean([math.dist(t.start, s.start) for t, s in both])),
            "velocity": float(np.mean([math.dist(t.velocity, s.velocity) for t, s in both])), "n": len(both)}


def paired_accuracy_gaps(teacher_checks: list[dict], student_checks: list[dict],
                         keys=("colour", "shape", "direction", "speed")) -> dict:
    """Student minus teacher accuracy per attribute over the clips checked in both (same prompt and
    noise, so the comparison is paired), with the standard error of that mean difference: d_i = s_i -
    t_i in {-1, 0, 1}, se = sd(d) / sqrt(n) (ddof 1). Why: a bar like "within 5 points" is read off a
    few dozen clips; the se says how far the gap would move with other noises for the same prompts."""
    if len(teacher_checks) != len(student_checks):
        raise ValueError(f"{len(teacher_checks)} teacher clips against {len(student_checks)} student clips")
    out = {}
    for k in keys:
        d = np.array([float(s[k]) - float(t[k]) for t, s in zip(teacher_checks, student_checks)
                      if t.get(k) is not None and s.get(k) is not None])
        n = len(d)
        out[k] = {"gap": float(d.mean()) if n else None,
                  "se": float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else None, "n": n}
    return out


def gaussian_fit(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(features, dtype=np.float64)
    mu = f.mean(0)
    cov = np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1]) if len(f) > 1 else np.zeros((f.shape[1],) * 2)
    return mu, cov


def _psd_sqrt(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(0.5 * (m + m.T))
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """Squared Frechet (2-Wasserstein) distance between two Gaussians:
    `|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2)` (symmetric, real arithmetic)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    cov1, cov2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    s1h = _psd_sqrt(cov1)
    cross = np.linalg.eigvalsh(0.5 * ((s1h @ cov2 @ s1h) + (s1h @ cov2 @ s1h).T))
    tr_cross = float(np.sqrt(np.clip(cross, 0, None)).sum())
    d = float(((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2 * tr_cross)
    return max(d, 0.0)


def feature_frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """FD between Gaussian fits of two feature matrices `[N, D]`; NaN if either is empty."""
    if len(f1) == 0 or len(f2) == 0:
        return math.nan
    return frechet_distance(*gaussian_fit(f1), *gaussian_fit(f2))


def render_real_clips(prompts, per_clip: int = REAL_PER_CLIP, seed: int = REAL_SEED):
    """Real clips for a prompt list: `per_clip` renders per entry (unspecified attributes and start
    points random, fixed seed); entries that are not grammar prompts are skipped. -> (clips, prompts)."""
    g = torch.Generator().manual_seed(seed)
    clips, texts = [], []
    for text in prompts:
        p = toyvideo.Prompt.parse(text)
        if p.colour is None or p.shape is None:
            continue
        for _ in range(per_clip):
            clips.append(toyvideo.clip_for_prompt(p, g))
            texts.append(text)
    if not clips:
        return torch.zeros(0, toyvideo.FRAMES, toyvideo.SIZE, toyvideo.SIZE, 3), texts
    return toyvideo.render(clips), texts


# ------------------------------------------------------------------------------ the evaluation


def attribute_checks(prompt: str, a: ClipAnalysis) -> dict:
    """Per-attribute right/wrong for one clip (None = not applicable). Direction is checked when the
    prompt names one and the target moves: it names a speed (then a still or degenerate clip is
    wrong), or it leaves speed open and the clip moves (a still clip is a legitimate answer then)."""
    p = toyvideo.Prompt.parse(prompt)
    out = {
        "colour": None if p.colour is None else (a.valid and a.colour == p.colour),
        "shape": None if p.shape is None else (a.valid and a.shape == p.shape),
        "speed": None if p.speed is None else (a.valid and a.speed_class == p.speed),
        "direction": None,
    }
    if p.direction is not None and (p.speed is not None or not a.valid or a.speed_class != "still"):
        out["direction"] = a.valid and a.direction == p.direction
    return out


def _frac(flags) -> float | None:
    flags = [bool(f) for f in flags if f is not None]
    return float(np.mean(flags)) if flags else None


def _finite_or_none(x):
    return float(x) if x is not None and math.isfinite(x) else None


def evaluate_clips(videos, prompts, seeds, real_videos=None, *, real_per_clip: int = REAL_PER_CLIP,
                   real_seed: int = REAL_SEED, return_per_clip: bool = False) -> dict:
    """All measures for a set of generated clips (see the module doc). Accuracies are fractions in
    [0, 1]; a measure that cannot be computed (nothing applicable) is None. `real_videos` defaults
    to clips rendered for `prompts` (`render_real_clips`)."""
    a = as_clips(videos)
    prompts, seeds = [str(p) for p in prompts], [int(s) for s in seeds]
    if not (len(a) == len(prompts) == len(seeds)):
        raise ValueError(f"{len(a)} clips, {len(prompts)} prompts and {len(seeds)} seeds: need one of each per clip")
    analyses = analyse_clips(a) if len(a) else []
    checks = [attribute_checks(p, x) for p, x in zip(prompts, analyses)]
    parsed = [toyvideo.Prompt.parse(p) for p in prompts]

    res: dict = {"n_clips": len(a), "n_prompts": len(set(prompts)), "n_valid": sum(x.valid for x in analyses)}
    reasons: dict[str, int] = {}
    for x in analyses:
        if not x.valid:
            reasons[x.reason] = reasons.get(x.reason, 0) + 1
    res["n_degenerate"] = len(a) - res["n_valid"]
    res["degenerate_reasons"] = reasons
    for key in ("colour", "shape", "direction", "speed"):
        res[f"{key}_accuracy"] = _frac(c[key] for c in checks)
        res[f"n_{key}"] = sum(c[key] is not None for c in checks)
    accs = [res[f"{k}_accuracy"] for k in ("colour", "shape", "direction", "speed") if res[f"{k}_accuracy"] is not None]
    res["overall_accuracy"] = float(np.mean(accs)) if accs else None
    res["all_correct"] = _frac(all(v for v in c.values() if v is not None) for c in checks) if checks else None

    valid = [i for i, x in enumerate(analyses) if x.valid]
    unspec = [i for i in valid if parsed[i].speed is None]
    res["mean_motion"] = _finite_or_none(np.mean([analyses[i].speed for i in valid])) if valid else None
    res["mean_motion_unspecified_speed"] = _finite_or_none(np.mean([analyses[i].speed for i in unspec])) if unspec else None
    res["n_unspecified_speed"] = sum(p.speed is None for p in parsed)
    res["speed_classes_unspecified_speed"] = {
        c: (sum(analyses[i].speed_class == c for i in unspec) / len(unspec) if unspec else None)
        for c in toyvideo.SPEEDS}
    res["temporal_consistency"] = float(np.mean([x.consistency for x in analyses])) if analyses else None
    res["step_profile"] = step_profile(analyses)
    res["end_speed_ratio"] = None if res["step_profile"] is None else 0.5 * (res["step_profile"][0] + res["step_profile"][-1])
    res["diversity"] = _finite_or_none(trajectory_diversity(analyses, prompts))
    res["diversity_pixels"] = _finite_or_none(pixel_diversity(a, prompts)) if len(a) else None

    if real_videos is None:
        real_videos, _ = render_real_clips(prompts, real_per_clip, real_seed)
    real = analyse_clips(real_videos) if len(real_videos) else []
    res["fd"] = _finite_or_none(feature_frechet_distance(feature_matrix(analyses), feature_matrix(real)))
    res["n_real"] = len(real)
    if return_per_clip:
        res["per_clip"] = [{"prompt": p, "seed": s, **x.to_dict(), "checks": c}
                           for p, s, x, c in zip(prompts, seeds, analyses, checks)]
    return res
