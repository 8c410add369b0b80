"""The OpenPose skeleton drawing (engine.auxiliary.openpose) from hand-made keypoints."""

from __future__ import annotations

import numpy as np

from sdserve.engine.auxiliary.openpose import COLORS, LIMBS, draw_bodypose, to_openpose

# A standing person in COCO-17 order (x, y): nose, eyes, ears, shoulders, elbows, wrists,
# hips, knees, ankles (L before R; the person faces the viewer, so L is on the right).
COCO = [(50, 20), (54, 17), (46, 17), (58, 19), (42, 19), (62, 34), (38, 34), (66, 50), (34, 50), (68, 64),
        (32, 64), (58, 66), (42, 66), (58, 84), (42, 84), (58, 100), (42, 100)]


def test_coco_keypoints_become_openpose_18_with_the_neck_between_the_shoulders() -> None:
    points = to_openpose(COCO, [1.0] * 17, 0.3)
    assert len(points) == 18
    assert points[0] == (50, 20)  # nose
    assert points[1] == (50, 34)  # neck: the shoulders' midpoint
    assert points[2] == (38, 34) and points[5] == (62, 34)  # R shoulder is COCO's 6, L is 5
    assert points[14] == (46, 17) and points[17] == (58, 19)  # R eye, L ear
    low = [1.0] * 17
    low[6] = 0.1  # the right shoulder not found: it and the neck are missing
    points = to_openpose(COCO, low, 0.3)
    assert points[2] is None and points[1] is None and points[5] == (62, 34)


def test_joints_are_discs_of_their_colour_and_limbs_are_dimmed_on_black() -> None:
    points = to_openpose(COCO, [1.0] * 17, 0.3)
    img = np.asarray(draw_bodypose((100, 110), [points]))
    assert img.shape == (110, 100, 3)
    for k, p in enumerate(points):
        assert p is not None
        x, y = int(p[0]), int(p[1])
        # The joint's disc in its colour (a later, overlapping joint may cover its centre: the
        # eyes and ears sit close; check those one pixel out, on their own side).
        assert tuple(img[y, x]) == COLORS[k] or k in (14, 15, 16, 17), k
    assert tuple(img[34, 50]) == COLORS[1]  # neck
    assert tuple(img[100, 58]) == COLORS[13]  # left ankle
    # A limb's middle, away from its joints: 60% of the limb's colour (R knee -> R ankle, limb 8).
    i, j = LIMBS[8]
    mx, my = (points[i][0] + points[j][0]) / 2, (points[i][1] + points[j][1]) / 2  # type: ignore[index]
    assert tuple(img[int(my), int(mx)]) == tuple(int(c * 0.6) for c in COLORS[8])
    assert img[5, 5].tolist() == [0, 0, 0] and img[105, 95].tolist() == [0, 0, 0]  # background


def test_missing_points_draw_nothing_and_no_people_is_black() -> None:
    assert not np.asarray(draw_bodypose((32, 32), [])).any()
    alone = [None] * 18
    alone[0] = (16.0, 16.0)
    img = np.asarray(draw_bodypose((32, 32), [alone]))
    assert tuple(img[16, 16]) == COLORS[0]
    assert (img.any(axis=2)).sum() <= 81  # one disc of radius 4, no limbs
