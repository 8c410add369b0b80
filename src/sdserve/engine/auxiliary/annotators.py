"""The ControlNet annotators that run a network, as transformers models: depth estimation
(Depth Anything V2 or DPT/MiDaS, ``AutoModelForDepthEstimation``) and body pose (ViTPose on
the people an RT-DETR detector finds). Each is one auxiliary model in the engine's cache.

Their outputs are the maps the A1111 ControlNet extension makes, so ControlNets trained on
those read them: depth normalised to 0-255 with near = white (both models predict relative
inverse depth), grey in three channels; pose as OpenPose's body skeleton on black.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..memory import module_bytes
from .openpose import draw_bodypose, to_openpose

__all__ = ["DepthEstimator", "PersonDetector", "PoseEstimator", "load_depth", "load_detector", "load_pose"]

# A detection counts as a person from this score (RT-DETR's sigmoid class score).
PERSON_THRESHOLD = 0.5
# A keypoint is drawn from this score (ViTPose's heatmap peak), as transformers' examples do.
KEYPOINT_THRESHOLD = 0.3
_LOCAL: dict[str, Any] = {"local_files_only": True}


@dataclass
class DepthEstimator:
    """A depth map of an image at the image's size."""

    model: Any  # AutoModelForDepthEstimation
    processor: Any  # its image processor (DPTImageProcessor)
    device: torch.device
    dtype: torch.dtype

    def depth_map(self, image: Image.Image) -> Image.Image:
        rgb = image.convert("RGB")
        pixels = self.processor(images=rgb, return_tensors="pt").pixel_values.to(self.device, self.dtype)
        with torch.inference_mode():
            out = self.model(pixel_values=pixels)
        depth = self.processor.post_process_depth_estimation(out, target_sizes=[(rgb.height, rgb.width)])
        d = depth[0]["predicted_depth"].float().cpu().numpy()
        span = float(d.max() - d.min())
        # Min-max to 0-255 as the extension does; a flat prediction is mid-grey, not NaN.
        norm = (d - d.min()) / span if span > 0 else np.full_like(d, 0.5)
        return Image.fromarray((norm * 255.0).clip(0, 255).astype(np.uint8), "L").convert("RGB")

    def nbytes(self) -> int:
        return module_bytes(self.model)


@dataclass
class PersonDetector:
    """Boxes of the people in an image (COCO's "person" class of an object detector)."""

    model: Any  # AutoModelForObjectDetection (RT-DETR)
    processor: Any
    device: torch.device
    dtype: torch.dtype

    def people(self, image: Image.Image) -> np.ndarray:
        """(n, 4) boxes as x, y, width, height in pixels, clipped to the image."""
        inputs = self.processor(images=image, return_tensors="pt")
        with torch.inference_mode():
            out = self.model(pixel_values=inputs.pixel_values.to(self.device, self.dtype))
        out.logits, out.pred_boxes = out.logits.float(), out.pred_boxes.float()
        found = self.processor.post_process_object_detection(
            out, target_sizes=[(image.height, image.width)], threshold=PERSON_THRESHOLD)[0]
        person = [i for i, name in self.model.config.id2label.items() if str(name).lower() == "person"]
        labels, boxes_all = found["labels"].cpu(), found["boxes"].float().cpu()
        boxes = boxes_all[torch.isin(labels, torch.tensor(person, dtype=labels.dtype))].numpy()
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, image.width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, image.height)
        boxes[:, 2:] -= boxes[:, :2]  # corners -> the x, y, w, h ViTPose's processor takes
        return np.asarray(boxes[(boxes[:, 2] >= 1) & (boxes[:, 3] >= 1)])

    def nbytes(self) -> int:
        return module_bytes(self.model)


@dataclass
class PoseEstimator:
    """Body keypoints of the people in given boxes (ViTPose, COCO's 17 keypoints)."""

    model: Any  # VitPoseForPoseEstimation
    processor: Any  # VitPoseImageProcessor
    device: torch.device
    dtype: torch.dtype

    def skeleton(self, image: Image.Image, boxes: np.ndarray) -> Image.Image:
        """The OpenPose skeleton image of the people in ``boxes`` (black when none)."""
        rgb = image.convert("RGB")
        if len(boxes) == 0:
            return draw_bodypose(rgb.size, [])
        inputs = self.processor(rgb, boxes=[boxes], return_tensors="pt")
        with torch.inference_mode():
            out = self.model(pixel_values=inputs.pixel_values.to(self.device, self.dtype))
        out.heatmaps = out.heatmaps.float().cpu()
        poses = self.processor.post_process_pose_estimation(out, boxes=[boxes])[0]
        people = [to_openpose(p["keypoints"].tolist(), p["scores"].tolist(), KEYPOINT_THRESHOLD) for p in poses]
        return draw_bodypose(rgb.size, people)

    def nbytes(self) -> int:
        return module_bytes(self.model)


def _processor(folder: str) -> Any:
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(folder, **_LOCAL)


def load_depth(folder: str, device: torch.device, dtype: torch.dtype) -> DepthEstimator:
    from transformers import AutoModelForDepthEstimation

    model: Any = AutoModelForDepthEstimation.from_pretrained(folder, dtype=dtype, **_LOCAL)
    return DepthEstimator(model.to(device).eval(), _processor(folder), device, dtype)


def load_detector(folder: str, device: torch.device, dtype: torch.dtype) -> PersonDetector:
    from transformers import AutoModelForObjectDetection

    model: Any = AutoModelForObjectDetection.from_pretrained(folder, dtype=dtype, **_LOCAL)
    return PersonDetector(model.to(device).eval(), _processor(folder), device, dtype)


def load_pose(folder: str, device: torch.device, dtype: torch.dtype) -> PoseEstimator:
    from transformers import VitPoseForPoseEstimation

    model: Any = VitPoseForPoseEstimation.from_pretrained(folder, dtype=dtype, **_LOCAL)
    return PoseEstimator(model.to(device).eval(), _processor(folder), device, dtype)
