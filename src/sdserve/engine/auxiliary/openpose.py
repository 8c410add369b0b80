"""Pose keypoints drawn as the OpenPose skeleton image ControlNet's openpose models read.

The estimator (ViTPose) finds COCO's 17 body keypoints; ControlNet was trained on OpenPose's
18-point body layout drawn by the ControlNet extension's ``draw_bodypose``: limbs as filled
ellipses 4 px thick in 60% of their colour, then each joint as a 4 px disc in its full colour,
on black. The colours and limb order are OpenPose's (one colour per limb and per joint).
Torch-free (Pillow, numpy): tests draw hand-made keypoints.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["COCO_TO_OPENPOSE", "LIMBS", "COLORS", "to_openpose", "draw_bodypose"]

Point = tuple[float, float] | None

# OpenPose-18: nose, neck, R shoulder/elbow/wrist, L shoulder/elbow/wrist, R hip/knee/ankle,
# L hip/knee/ankle, R eye, L eye, R ear, L ear. COCO-17: nose, L/R eye, L/R ear, L/R shoulder,
# L/R elbow, L/R wrist, L/R hip, L/R knee, L/R ankle. None: the neck, made from the shoulders.
COCO_TO_OPENPOSE: tuple[int | None, ...] = (0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
# Limbs as pairs of OpenPose-18 indexes, in the order (and so the colours) OpenPose draws them.
LIMBS: tuple[tuple[int, int], ...] = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
                                      (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))
_STICK = 4  # the limbs' half thickness, px
_JOINT = 4  # the joints' radius, px


def to_openpose(keypoints: Sequence[tuple[float, float]], scores: Sequence[float], threshold: float) -> list[Point]:
    """COCO-17 keypoints (x, y in pixels) with their scores -> OpenPose-18 points; a point
    scoring below ``threshold`` is missing (None), and so is the neck unless both shoulders
    are found (it is their midpoint)."""
    found = [(float(x), float(y)) if s >= threshold else None for (x, y), s in zip(keypoints, scores, strict=True)]
    out: list[Point] = []
    for coco in COCO_TO_OPENPOSE:
        if coco is not None:
            out.append(found[coco])
            continue
        left, right = found[5], found[6]
        out.append(((left[0] + right[0]) / 2, (left[1] + right[1]) / 2) if left and right else None)
    return out


def _limb(a: tuple[float, float], b: tuple[float, float]) -> list[tuple[float, float]]:
    """The ellipse around the segment a-b (half-length by _STICK, rotated along it) as a
    polygon of one point per degree, as OpenCV's ellipse2Poly makes it."""
    cx, cy = (a[0] + b[0]) / 2, (a[1] + b[1]) / 2
    half = math.hypot(a[0] - b[0], a[1] - b[1]) / 2
    angle = math.atan2(a[1] - b[1], a[0] - b[0])
    t = np.deg2rad(np.arange(0, 361))
    ex, ey = half * np.cos(t), _STICK * np.sin(t)
    xs = cx + ex * math.cos(angle) - ey * math.sin(angle)
    ys = cy + ex * math.sin(angle) + ey * math.cos(angle)
    return list(zip(xs.tolist(), ys.tolist(), strict=True))


def draw_bodypose(size: tuple[int, int], people: Sequence[Sequence[Point]]) -> Image.Image:
    """The skeletons of ``people`` (OpenPose-18 points each, pixels) on a black RGB image."""
    canvas = Image.new("RGB", size)
    draw = ImageDraw.Draw(canvas)
    for points in people:  # person by person: limbs, then the joints over them
        for (i, j), color in zip(LIMBS, COLORS, strict=False):
            a, b = points[i], points[j]
            if a is not None and b is not None:
                draw.polygon(_limb(a, b), fill=tuple(int(c * 0.6) for c in color))
        for p, color in zip(points, COLORS, strict=True):
            if p is not None:
                x, y = int(p[0]), int(p[1])
                draw.ellipse((x - _JOINT, y - _JOINT, x + _JOINT, y + _JOINT), fill=color)
    return canvas
