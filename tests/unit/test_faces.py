"""Face restoration's own networks and geometry (engine.faces).

The key lists in ``tests/unit/data`` were produced by instantiating the upstream modules
(TencentARC/GFPGAN ``GFPGANv1Clean`` as ``GFPGANer`` builds it for v1.3/v1.4; facexlib's
RetinaFace over torchvision's ResNet-50, and over its MobileNet-0.25; sczhou/CodeFormer's
``CodeFormer`` as its inference script builds it) and listing their
``state_dict()`` names and shapes: the official weight files hold exactly these.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sdserve.engine.faces.align import TEMPLATE_512, feather_mask, paste_face, similarity_transform, warp_face
from sdserve.engine.faces.codeformer import CodeFormer, codeformer_from_state_dict
from sdserve.engine.faces.detect import decode_boxes, decode_landmarks, nms, prior_boxes
from sdserve.engine.faces.gfpgan import GFPGANv1Clean, gfpgan_from_state_dict
from sdserve.engine.faces.retinaface import retinaface_from_state_dict

DATA = Path(__file__).parent / "data"


def _keys(name: str) -> dict[str, tuple[int, ...]]:
    out = {}
    for line in (DATA / name).read_text().splitlines():
        key, _, shape = line.partition(" ")
        out[key] = tuple(int(s) for s in shape.split("x")) if shape.strip() else ()
    return out


def _filled(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """A state dict of these names and shapes (zeros: cheap at 87M values; the values do not matter here)."""
    return {k: torch.zeros(s, dtype=torch.long if k.endswith("num_batches_tracked") else torch.float32)
            for k, s in shapes.items()}


def test_gfpgan_at_full_width_has_the_official_keys_and_loads_them_strictly() -> None:
    official = _keys("gfpgan_v1_4_keys.txt")
    unet = {4: 256, 8: 256, 16: 256, 32: 256, 64: 256, 128: 128, 256: 64, 512: 32}
    with torch.device("meta"):
        ours = GFPGANv1Clean(9, unet, {r: 2 * c for r, c in unet.items()}).state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == official
    sd = _filled(official)  # the file's names and shapes, read back through the shape inference
    sd["final_linear.weight"] = torch.randn(sd["final_linear.weight"].shape)
    net = gfpgan_from_state_dict(sd)
    assert net.size == 512 and torch.equal(net.state_dict()["final_linear.weight"], sd["final_linear.weight"])
    bad = dict(sd)
    bad.pop("toRGB.0.weight")
    with pytest.raises(RuntimeError, match="toRGB.0.weight"):
        gfpgan_from_state_dict(bad)


def test_codeformer_at_full_width_has_the_official_keys_and_loads_them_strictly() -> None:
    official = _keys("codeformer_keys.txt")
    with torch.device("meta"):
        ours = CodeFormer().state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == official
    sd = _filled(official)
    sd["position_emb"] = torch.randn(sd["position_emb"].shape)
    net = codeformer_from_state_dict(sd)  # the shape read back from the file's tensors
    assert net.size == 512 and sorted(net.fuse_convs_dict) == ["128", "256", "32", "64"]
    assert net.ft_layers[0].self_attn.num_heads == 8 and len(net.ft_layers) == 9
    assert torch.equal(net.position_emb, sd["position_emb"])
    bad = dict(sd)
    bad.pop("fuse_convs_dict.64.shift.2.bias")
    with pytest.raises(RuntimeError, match="fuse_convs_dict.64.shift.2.bias"):
        codeformer_from_state_dict(bad)


@pytest.mark.parametrize("name", ["retinaface_resnet50_keys.txt", "retinaface_mobilenet025_keys.txt"])
def test_retinaface_loads_the_official_keys_strictly(name: str) -> None:
    official = _keys(name)
    sd = _filled(official)
    net = retinaface_from_state_dict({f"module.{k}": v for k, v in sd.items()})  # DataParallel prefix too
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == official
    loc, conf, ldm = net.eval()(torch.zeros(1, 3, 64, 96))
    n = len(prior_boxes(64, 96))
    assert loc.shape == (1, n, 4) and conf.shape == (1, n) and ldm.shape == (1, n, 10)
    sd.pop(next(k for k in official if k.startswith("ssh2.")))
    with pytest.raises(RuntimeError):
        retinaface_from_state_dict(sd)


def test_prior_boxes_by_hand() -> None:
    # 64 x 32 (h x w): stride 8 -> 8 x 4 cells, 16 -> 4 x 2, 32 -> 2 x 1; two sizes each.
    p = prior_boxes(64, 32)
    assert p.shape == ((32 + 8 + 2) * 2, 4)
    # first cell of the first level, anchor 16 then 32: centre (4/32, 4/64)
    assert torch.allclose(p[0], torch.tensor([4 / 32, 4 / 64, 16 / 32, 16 / 64]))
    assert torch.allclose(p[1], torch.tensor([4 / 32, 4 / 64, 32 / 32, 32 / 64]))
    # second cell runs along the row: x moves by one stride
    assert torch.allclose(p[2], torch.tensor([12 / 32, 4 / 64, 16 / 32, 16 / 64]))
    # the first cell of row 1 comes after the 4 cells of row 0
    assert torch.allclose(p[8, :2], torch.tensor([4 / 32, 12 / 64]))
    # last level's last cell (row 1, col 0), size 512: centre (16/32, 48/64)
    assert torch.allclose(p[-1], torch.tensor([16 / 32, 48 / 64, 512 / 32, 512 / 64]))
    # a side that is not a multiple of the stride rounds the cell count up
    assert len(prior_boxes(65, 32)) == (9 * 4 + 5 * 2 + 3 * 1) * 2


def test_box_and_landmark_decoding_by_hand() -> None:
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    # zero offsets: the prior itself
    assert torch.allclose(decode_boxes(torch.zeros(1, 4), priors), torch.tensor([[0.4, 0.3, 0.6, 0.7]]))
    # centre moves by 1 x 0.1 x size; size scales by exp(1 x 0.2)
    loc = torch.tensor([[1.0, -1.0, 1.0, 0.0]])
    w, h = 0.2 * math.exp(0.2), 0.4
    cx, cy = 0.5 + 0.1 * 0.2, 0.5 - 0.1 * 0.4
    assert torch.allclose(decode_boxes(loc, priors), torch.tensor([[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]]))
    pre = torch.tensor([[1.0, 0.0, 0.0, 1.0, -1.0, 0.0, 0.0, -1.0, 2.0, 2.0]])
    want = torch.tensor([[[0.52, 0.5], [0.5, 0.54], [0.48, 0.5], [0.5, 0.46], [0.54, 0.58]]])
    assert torch.allclose(decode_landmarks(pre, priors), want)


def test_nms_by_hand() -> None:
    boxes = torch.tensor([[0, 0, 10, 10],     # A: best
                          [1, 0, 11, 10],     # B: IoU with A = 90/110 = 0.82 -> suppressed
                          [6, 0, 16, 10],     # C: IoU with A = 40/160 = 0.25 -> kept
                          [20, 20, 30, 30],   # D: apart -> kept
                          [0, 0, 10, 10]], dtype=torch.float32)  # E: same as A, lower -> suppressed
    scores = torch.tensor([0.9, 0.95, 0.8, 0.5, 0.7])
    # B outscores A: B is kept, and suppresses A (0.82) and E; C's IoU with B is 50/150 = 0.33
    assert nms(boxes, scores, 0.4).tolist() == [1, 2, 3]
    assert nms(boxes, scores, 0.2).tolist() == [1, 3]  # C goes at a stricter threshold
    assert nms(boxes[:0], scores[:0], 0.4).tolist() == []


def test_similarity_transform_recovers_a_known_one() -> None:
    angle, scale, t = 0.3, 1.7, np.array([12.0, -5.0])
    rot = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    src = (TEMPLATE_512 - t) @ np.linalg.inv(rot).T  # points that the transform maps onto the template
    m = similarity_transform(src, TEMPLATE_512)
    assert np.allclose(m[:, :2], rot) and np.allclose(m[:, 2], t)
    assert np.allclose(src @ m[:, :2].T + m[:, 2], TEMPLATE_512)


def test_warp_then_paste_back_restores_the_face_region() -> None:
    ys, xs = torch.meshgrid(torch.arange(200.0), torch.arange(160.0), indexing="ij")
    img = torch.stack([xs / 160, ys / 200, (xs + ys) / 360])[None]  # smooth: interpolation stays close
    landmarks = TEMPLATE_512 * 0.25 + np.array([30.0, 40.0])  # a face 128 px wide, upright
    face, m = warp_face(img, landmarks, 512)
    assert face.shape == (1, 3, 512, 512)
    # the aligned face's pixel at a landmark is the image's there (to interpolation)
    x, y = (TEMPLATE_512[2]).round().astype(int)
    sx, sy = (np.array([x, y]) - m[:, 2]) @ np.linalg.inv(m[:, :2]).T
    assert torch.allclose(face[0, :, y, x], img[0, :, int(round(sy)), int(round(sx))], atol=0.01)
    # pasting a flat colour: inside the face it replaces the image, far outside it changes nothing
    out = paste_face(img, torch.ones_like(face) * 0.5, m)
    assert torch.equal(out[..., 180:, :], img[..., 180:, :])
    cx, cy = np.round(landmarks.mean(axis=0)).astype(int)
    assert torch.allclose(out[0, :, cy, cx], torch.full((3,), 0.5))
    mask = feather_mask(512, torch.device("cpu"), torch.float32)
    assert mask[0, 0, 0, 0] == 0 and mask[0, 0, 256, 256] == 1 and 0 < mask[0, 0, 256, 60] < 1


def test_tiny_detector_and_restorer_end_to_end(tmp_path: Path) -> None:
    """The demo's files, read back from disk like real ones: one face found, restored and
    pasted back; visibility blends; the same seed gives the same pixels."""
    from PIL import Image

    from sdserve.engine.addon_files import AddonFolders
    from sdserve.engine.faces import installed_restorers, restore_faces
    from sdserve.engine.faces.detect import detect_faces
    from sdserve.engine.faces.restore import load_network
    from sdserve.engine.faces.tiny import write_tiny_faces
    from sdserve.engine.params import FaceRestoration

    addons = AddonFolders(tmp_path)
    assert installed_restorers(addons) == []
    write_tiny_faces(addons.home("face_restorer"))
    addons.refresh("face_restorer")
    [(cf_name, cf), (name, f)] = installed_restorers(addons)
    assert cf_name == "CodeFormer" and name == "GFPGAN" and f.filename == "tiny-GFPGANv1.4.pth" and cf.filename == "tiny-codeformer.pth"
    assert "params_ema" in torch.load(f.path, weights_only=True)  # the official wrapper
    img = Image.fromarray(np.random.RandomState(0).randint(0, 256, (96, 128, 3), dtype=np.uint8))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)
    det = load_network(addons.files("face_restorer")[0], "retinaface", torch.device("cpu"), "f")
    [face] = detect_faces(det, x)  # type: ignore[arg-type]
    assert face.score > 0.97 and math.dist(face.landmarks[0], face.landmarks[1]) > 5
    kw = dict(device="cpu", addons=addons)
    [full] = restore_faces([img], [FaceRestoration(model="gfpgan")], [7], **kw)
    [again] = restore_faces([img], [FaceRestoration(model="GFPGAN")], [7], **kw)
    [half] = restore_faces([img], [FaceRestoration(visibility=0.5)], [7], **kw)
    [none] = restore_faces([img], [FaceRestoration(visibility=0.0)], [7], **kw)
    a, b, h, n = (np.asarray(i, dtype=np.int32) for i in (img, full, half, none))
    assert full.size == img.size and np.array_equal(b, np.asarray(again)) and np.array_equal(n, a)
    changed = np.abs(b - a).max(axis=2) > 2
    assert 0 < changed.mean() < 1  # the face's region, not the whole image
    assert np.abs(h - (a + b) / 2).max() <= 1  # visibility 0.5: halfway, as A1111's Image.blend


def test_tiny_codeformer_end_to_end_weight_and_visibility(tmp_path: Path) -> None:
    """CodeFormer from the demo's file: deterministic (no noise), its fidelity weight changes
    the face (w = 0 skips the fused encoder features), visibility 0 leaves the image."""
    from PIL import Image

    from sdserve.engine.addon_files import AddonFolders
    from sdserve.engine.faces import restore_faces
    from sdserve.engine.faces.tiny import write_tiny_faces
    from sdserve.engine.params import FaceRestoration

    addons = AddonFolders(tmp_path)
    write_tiny_faces(addons.home("face_restorer"))
    addons.refresh("face_restorer")
    img = Image.fromarray(np.random.RandomState(1).randint(0, 256, (96, 128, 3), dtype=np.uint8))
    kw = dict(device="cpu", addons=addons)
    runs = {(w, seed): np.asarray(restore_faces([img], [FaceRestoration(model="codeformer", weight=w)], [seed], **kw)[0],
                                  dtype=np.int32) for w, seed in ((0.5, 1), (0.5, 2), (0.0, 1), (1.0, 1))}
    a = np.asarray(img, dtype=np.int32)
    assert np.array_equal(runs[0.5, 1], runs[0.5, 2])  # the seed does not enter: CodeFormer draws no noise
    assert 0 < (np.abs(runs[0.5, 1] - a).max(axis=2) > 2).mean() < 1  # the face's region only
    assert not np.array_equal(runs[0.5, 1], runs[0.0, 1]) and not np.array_equal(runs[0.5, 1], runs[1.0, 1])
    [none] = restore_faces([img], [FaceRestoration(model="CodeFormer", visibility=0.0)], [1], **kw)
    assert np.array_equal(np.asarray(none, dtype=np.int32), a)


def test_missing_weights_name_what_to_do(tmp_path: Path) -> None:
    from sdserve.engine.addon_files import AddonFolders
    from sdserve.engine.faces import check_restorer
    from sdserve.errors import BadInput

    addons = AddonFolders(tmp_path)
    with pytest.raises(BadInput, match=r"restore_faces: GFPGAN .*sdserve pull gfpgan"):
        check_restorer(addons, "GFPGAN", field="restore_faces")
    with pytest.raises(BadInput, match=r"x: CodeFormer .*not installed.*codeformer.pth.*models/Codeformer by hand"):
        check_restorer(addons, "codeformer", field="x")
    with pytest.raises(BadInput, match="is not a face restorer"):
        check_restorer(addons, "RestoreFormer", field="x")


def test_pull_installs_only_the_release_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`sdserve pull gfpgan` through a stand-in hub: a file whose SHA-256 is not the release
    file's is refused and nothing is installed; the right bytes land in models/GFPGAN."""
    import hashlib

    import huggingface_hub

    from sdserve.engine.addon_files import AddonFolders
    from sdserve.engine.faces import pull

    blobs = {"a.pth": b"weights A", "b.pth": b"weights B"}
    fake = tuple(pull.FaceWeights(name, "org/mirror", "model", name, hashlib.sha256(data).hexdigest(), len(data))
                 for name, data in blobs.items())
    monkeypatch.setitem(pull.FACE_PULLS, "gfpgan", fake)
    served = dict(blobs)

    def download(repo: str, path: str, repo_type: str) -> str:
        out = tmp_path / "cache" / path
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(served[path])
        return str(out)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    addons = AddonFolders(tmp_path / "models")
    served["b.pth"] = b"tampered"
    with pytest.raises(RuntimeError, match="b.pth is not the release file"):
        pull.pull_faces("gfpgan", addons)
    assert not (addons.home("face_restorer") / "b.pth").exists()
    served["b.pth"] = blobs["b.pth"]
    lines = pull.pull_faces("gfpgan", addons)
    assert (addons.home("face_restorer") / "b.pth").read_bytes() == b"weights B"
    assert lines[0].endswith("(already installed)") and addons.home("face_restorer").name == "GFPGAN"
