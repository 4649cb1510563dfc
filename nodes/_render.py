"""Pictures for the training status node, with numpy and PIL only (no matplotlib): a contact sheet
of sample clips and a loss plot. Arrays are float32 [1, H, W, 3] in [0, 1] (ComfyUI IMAGE)."""
from __future__ import annotations

import math

import numpy as np

BACKGROUND = (24, 24, 28)
SERIES = (("generator_loss", "generator", (86, 156, 255)), ("fake_loss", "fake score", (255, 150, 60)))


def _image(pixels: np.ndarray) -> np.ndarray:
    return (pixels.astype(np.float32) / 255.0)[None]


def contact_sheet(videos: np.ndarray) -> np.ndarray:
    """uint8 clips [N, T, H, W, 3] -> one picture: a row per clip, its frames left to right,
    each latent pixel enlarged to a block (up to 8x, at most 128 px per frame)."""
    n, t, h, w, _ = videos.shape
    s = max(1, min(8, 128 // max(h, w)))
    big = videos.repeat(s, axis=2).repeat(s, axis=3)  # [N, T, hs, ws, 3]
    sheet = big.transpose(0, 2, 1, 3, 4).reshape(n * h * s, t * w * s, 3)
    return _image(sheet)


def message(text: str, width: int = 512, height: int = 128) -> np.ndarray:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), BACKGROUND)
    ImageDraw.Draw(img).multiline_text((12, 12), text, fill=(220, 220, 220))
    return _image(np.asarray(img))


def loss_plot(records: list[dict], width: int = 640, height: int = 320) -> np.ndarray:
    """Generator and fake-score losses against the iteration, linear axes, min/max labelled."""
    from PIL import Image, ImageDraw

    points = {key: [(r["iteration"], r[key]) for r in records if _finite(r.get(key))] for key, _, _ in SERIES}
    values = [v for pts in points.values() for _, v in pts]
    if not values:
        return message("no losses yet: waiting for the first iteration", width, height)
    img = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = 64, width - 16, 28, height - 32
    its = [i for pts in points.values() for i, _ in pts]
    x0, x1 = min(its), max(max(its), min(its) + 1)
    y0, y1 = min(values), max(values)
    if y1 - y0 < 1e-12:
        y0, y1 = y0 - 0.5, y1 + 0.5
    px = lambda i: left + (right - left) * (i - x0) / (x1 - x0)  # noqa: E731
    py = lambda v: bottom - (bottom - top) * (v - y0) / (y1 - y0)  # noqa: E731
    draw.rectangle((left, top, right, bottom), outline=(90, 90, 90))
    if y0 < 0 < y1:
        draw.line((left, py(0.0), right, py(0.0)), fill=(60, 60, 60))
    for label, y in ((f"{y1:.4g}", top), (f"{y0:.4g}", bottom)):
        draw.text((4, y - 6), label, fill=(180, 180, 180))
    draw.text((left, bottom + 8), f"iteration {x0}", fill=(180, 180, 180))
    draw.text((right - 90, bottom + 8), f"{x1}", fill=(180, 180, 180))
    for n, (key, label, colour) in enumerate(SERIES):
        pts = [(px(i), py(v)) for i, v in points[key]]
        if len(pts) == 1:
            draw.ellipse((pts[0][0] - 2, pts[0][1] - 2, pts[0][0] + 2, pts[0][1] + 2), fill=colour)
        elif pts:
            draw.line(pts, fill=colour, width=2)
        draw.text((left + 8 + 150 * n, 8), f"{label} loss", fill=colour)
    return _image(np.asarray(img))


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)
