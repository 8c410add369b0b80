"""RetinaFace, the face detector facexlib (and so GFPGAN, CodeFormer and A1111) uses:
a ResNet-50 or MobileNet-0.25 backbone, a 3-level feature pyramid, SSH context modules and
per-anchor heads for face/background, box offsets and five landmarks.

Written from the RetinaFace paper and the published architecture; module names follow
facexlib's ``retinaface.py`` / ``retinaface_net.py`` (the backbone under ``body.`` as
torchvision's ResNet names it), so ``detection_Resnet50_Final.pth`` and
``detection_mobilenet0.25_Final.pth`` load strictly. Widths and block counts are read from
the state dict, so a narrow test network shares the code.
"""

from __future__ import annotations

import re

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["RetinaFace", "retinaface_from_state_dict", "is_retinaface"]


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, leaky: float | None = 0.0,
             groups: int = 1) -> list[nn.Module]:
    mods: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if leaky is not None:  # None: no activation
        mods.append(nn.LeakyReLU(leaky))
    return mods


class _Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck (stride on the 3x3)."""

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4))
                           if stride != 1 or cin != planes * 4 else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = F.relu(out + (x if self.downsample is None else self.downsample(x)))
        return out


class _ResNet(nn.Module):
    """ResNet stem and four stages; returns the outputs of stages 2, 3 and 4."""

    def __init__(self, stem: int, planes: tuple[int, ...], blocks: tuple[int, ...]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.cin = stem
        self.layer1, self.layer2 = self._stage(planes[0], blocks[0], 1), self._stage(planes[1], blocks[1], 2)
        self.layer3, self.layer4 = self._stage(planes[2], blocks[2], 2), self._stage(planes[3], blocks[3], 2)

    def _stage(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layer = []
        for i in range(blocks):
            layer.append(_Bottleneck(self.cin, planes, stride if i == 0 else 1))
            self.cin = planes * 4
        return nn.Sequential(*layer)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x = self.layer1(x)
        c2 = self.layer2(x)
        c3 = self.layer3(c2)
        return [c2, c3, self.layer4(c3)]


def _dw(cin: int, cout: int, stride: int) -> nn.Sequential:
    """Depthwise 3x3 then pointwise 1x1, each with batch norm and leaky ReLU 0.1."""
    return nn.Sequential(*_conv_bn(cin, cin, 3, stride, 0.1, groups=cin), *_conv_bn(cin, cout, 1, 1, 0.1))


class _MobileNet025(nn.Module):
    """MobileNet-0.25's three stages (8x, 16x, 32x); the classifier is not in the files."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(nn.Sequential(*_conv_bn(3, 8, 3, 2, 0.1)), _dw(8, 16, 1), _dw(16, 32, 2),
                                    _dw(32, 32, 1), _dw(32, 64, 2), _dw(64, 64, 1))
        self.stage2 = nn.Sequential(_dw(64, 128, 2), *(_dw(128, 128, 1) for _ in range(5)))
        self.stage3 = nn.Sequential(_dw(128, 256, 2), _dw(256, 256, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c2 = self.stage1(x)
        c3 = self.stage2(c2)
        return [c2, c3, self.stage3(c3)]


class _FPN(nn.Module):
    def __init__(self, cins: list[int], cout: int) -> None:
        super().__init__()
        leaky = 0.1 if cout <= 64 else 0.0
        self.output1 = nn.Sequential(*_conv_bn(cins[0], cout, 1, 1, leaky))
        self.output2 = nn.Sequential(*_conv_bn(cins[1], cout, 1, 1, leaky))
        self.output3 = nn.Sequential(*_conv_bn(cins[2], cout, 1, 1, leaky))
        self.merge1 = nn.Sequential(*_conv_bn(cout, cout, 3, 1, leaky))
        self.merge2 = nn.Sequential(*_conv_bn(cout, cout, 3, 1, leaky))

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        o1, o2, o3 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        o2 = self.merge2(o2 + F.interpolate(o3, size=o2.shape[2:], mode="nearest"))
        o1 = self.merge1(o1 + F.interpolate(o2, size=o1.shape[2:], mode="nearest"))
        return [o1, o2, o3]


class _SSH(nn.Module):
    """Context module: 3x3, 5x5 (two 3x3) and 7x7 (three 3x3) receptive fields, concatenated."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        leaky = 0.1 if cout <= 64 else 0.0
        self.conv3X3 = nn.Sequential(*_conv_bn(cin, cout // 2, leaky=None))
        self.conv5X5_1 = nn.Sequential(*_conv_bn(cin, cout // 4, leaky=leaky))
        self.conv5X5_2 = nn.Sequential(*_conv_bn(cout // 4, cout // 4, leaky=None))
        self.conv7X7_2 = nn.Sequential(*_conv_bn(cout // 4, cout // 4, leaky=leaky))
        self.conv7x7_3 = nn.Sequential(*_conv_bn(cout // 4, cout // 4, leaky=None))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c5 = self.conv5X5_1(x)
        c7 = self.conv7X7_2(c5)
        return F.relu(torch.cat([self.conv3X3(x), self.conv5X5_2(c5), self.conv7x7_3(c7)], dim=1))


class _Head(nn.Module):
    def __init__(self, cin: int, anchors: int, per_anchor: int) -> None:
        super().__init__()
        self.per_anchor = per_anchor
        self.conv1x1 = nn.Conv2d(cin, anchors * per_anchor, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [B, A*k, H, W] -> [B, H*W*A, k]: row, column, anchor (the prior boxes' order)
        out: torch.Tensor = self.conv1x1(x).permute(0, 2, 3, 1).reshape(x.shape[0], -1, self.per_anchor)
        return out


class RetinaFace(nn.Module):
    def __init__(self, body: nn.Module, cins: list[int], cout: int, anchors: int = 2) -> None:
        super().__init__()
        self.body = body
        self.fpn = _FPN(cins, cout)
        self.ssh1, self.ssh2, self.ssh3 = _SSH(cout, cout), _SSH(cout, cout), _SSH(cout, cout)
        self.ClassHead = nn.ModuleList(_Head(cout, anchors, 2) for _ in range(3))
        self.BboxHead = nn.ModuleList(_Head(cout, anchors, 4) for _ in range(3))
        self.LandmarkHead = nn.ModuleList(_Head(cout, anchors, 10) for _ in range(3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """BGR minus the mean, [B, 3, H, W] -> (box offsets [B, N, 4], face probability
        [B, N], landmark offsets [B, N, 10]) for the N prior boxes of ``priors.prior_boxes``."""
        p = self.fpn(self.body(x))
        feats = [self.ssh1(p[0]), self.ssh2(p[1]), self.ssh3(p[2])]
        loc = torch.cat([h(f) for h, f in zip(self.BboxHead, feats, strict=True)], dim=1)
        conf = torch.cat([h(f) for h, f in zip(self.ClassHead, feats, strict=True)], dim=1)
        ldm = torch.cat([h(f) for h, f in zip(self.LandmarkHead, feats, strict=True)], dim=1)
        return loc, conf.softmax(dim=-1)[..., 1], ldm


def is_retinaface(sd: dict[str, torch.Tensor]) -> bool:
    return any(k.startswith("LandmarkHead.") for k in sd) and "fpn.output1.0.weight" in sd


def retinaface_from_state_dict(sd: dict[str, torch.Tensor]) -> RetinaFace:
    """The detector ``sd`` describes (``module.`` prefixes of a DataParallel save dropped),
    loaded strictly."""
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    body: nn.Module
    if "body.stage1.0.0.weight" in sd:
        with torch.device("meta"):
            body = _MobileNet025()
        cins = [64, 128, 256]
    else:
        blocks = tuple(1 + max(int(m[1]) for k in sd if (m := re.fullmatch(rf"body\.layer{n}\.(\d+)\.conv1\.weight", k)))
                       for n in range(1, 5))
        planes = tuple(sd[f"body.layer{n}.0.conv1.weight"].shape[0] for n in range(1, 5))
        with torch.device("meta"):
            body = _ResNet(sd["body.conv1.weight"].shape[0], planes, blocks)
        cins = [p * 4 for p in planes[1:]]
    with torch.device("meta"):  # weights come from sd: no random init first
        net = RetinaFace(body, cins, sd["fpn.output1.0.weight"].shape[0], sd["ClassHead.0.conv1x1.weight"].shape[0] // 2)
    # Files saved before torch 0.4.1 lack BatchNorm's step counter (unused at inference).
    for k in net.state_dict():
        if k.endswith("num_batches_tracked") and k not in sd:
            sd[k] = torch.zeros((), dtype=torch.long)
    net.load_state_dict(sd, strict=True, assign=True)
    return net
