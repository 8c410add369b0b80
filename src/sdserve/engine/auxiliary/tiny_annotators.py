"""Tiny random-weight ControlNet annotators in the hub models' on-disk formats (transformers
``save_pretrained`` folders with their image processors): Depth Anything V2, DPT-hybrid
(MiDaS), ViTPose and RT-DETR, each the real architecture at toy sizes. Demo mode and the
tests run the depth and pose preprocessors on them without a download.

The random weights are steered only where the demo would otherwise draw nothing: the detector
calls every query a person in a large box, and the pose head's heatmaps peak above the drawing
threshold, so the pose map shows skeletons (at random joints).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

__all__ = ["write_depth", "write_dpt", "write_pose", "write_detector"]

_SEED = 1234


def _args(**kw: Any) -> dict[str, Any]:
    # transformers' configs type only their own arguments; the backbone ones (out_features,
    # out_indices) and the shared ones (num_labels) go through **kwargs.
    return kw


def write_depth(folder: Path, full_size: bool = False) -> None:
    """Depth Anything V2 (DINOv2 backbone + DPT head), relative depth."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    torch.manual_seed(_SEED)
    backbone = Dinov2Config(**_args(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=37,
                                    patch_size=14, image_size=126, reshape_hidden_states=False,
                                    out_features=["stage1", "stage2", "stage3", "stage4"]))
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32],
                                 fusion_hidden_size=16, head_hidden_size=8, depth_estimation_type="relative")
    DepthAnythingForDepthEstimation(config).eval().save_pretrained(str(folder))
    # As the hub model's processor, at 126 px instead of 518 (multiples of the 14 px patch).
    DPTImageProcessor(**_args(size={"height": 126, "width": 126}, keep_aspect_ratio=True, ensure_multiple_of=14,
                              resample=3, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]),
                      ).save_pretrained(str(folder))


def write_dpt(folder: Path, full_size: bool = False) -> None:
    """DPT-hybrid (a BiT ResNet stem under a ViT), Intel/dpt-hybrid-midas's architecture."""
    from transformers import BitConfig, DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    torch.manual_seed(_SEED)
    bit = BitConfig(**_args(global_padding="same", layer_type="bottleneck", depths=[1, 1, 1], hidden_sizes=[16, 32, 64],
                            embedding_size=16, num_groups=8, out_features=["stage1", "stage2", "stage3"],
                            embedding_dynamic_padding=True))
    config = DPTConfig(is_hybrid=True, backbone_config=bit, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                       intermediate_size=37, image_size=64, patch_size=16, backbone_out_indices=[0, 1, 2, 3],
                       neck_hidden_sizes=[16, 32, 32, 32], fusion_hidden_size=16, readout_type="project",
                       reassemble_factors=[1, 1, 1, 0.5], neck_ignore_stages=[0, 1], backbone_featmap_shape=[1, 64, 4, 4])
    DPTForDepthEstimation(config).eval().save_pretrained(str(folder))
    # The hub model squares its input (384 px there) and maps the depth back to the image's size.
    DPTImageProcessor(size={"height": 64, "width": 64}, keep_aspect_ratio=False, image_mean=[0.5] * 3,
                      image_std=[0.5] * 3).save_pretrained(str(folder))


def write_pose(folder: Path, full_size: bool = False) -> None:
    """ViTPose with the simple decoder: 17 COCO keypoint heatmaps per person box."""
    from transformers import VitPoseBackboneConfig, VitPoseConfig, VitPoseForPoseEstimation, VitPoseImageProcessor

    torch.manual_seed(_SEED)
    backbone = VitPoseBackboneConfig(**_args(image_size=[64, 48], patch_size=[8, 8], hidden_size=32, num_hidden_layers=2,
                                             num_attention_heads=2, mlp_ratio=2, out_indices=[2]))
    config = VitPoseConfig(**_args(backbone_config=backbone, use_simple_decoder=True, scale_factor=4, num_labels=17))
    model = VitPoseForPoseEstimation(config).eval()
    with torch.no_grad():
        model.head.conv.bias.add_(1.0)  # heatmap peaks (the keypoint scores) above the drawing threshold
    model.save_pretrained(str(folder))
    VitPoseImageProcessor(size={"height": 64, "width": 48}).save_pretrained(str(folder))


def write_detector(folder: Path, full_size: bool = False) -> None:
    """RT-DETR (ResNet backbone, hybrid encoder, DETR decoder); class 0 is "person" as in COCO."""
    from transformers import RTDetrConfig, RTDetrForObjectDetection, RTDetrImageProcessor, RTDetrResNetConfig

    torch.manual_seed(_SEED)
    resnet = RTDetrResNetConfig(**_args(embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
                                        layer_type="basic", out_features=["stage2", "stage3", "stage4"]))
    config = RTDetrConfig(backbone_config=resnet, d_model=32, encoder_hidden_dim=32, encoder_in_channels=[32, 64, 128],
                          encoder_ffn_dim=64, encoder_attention_heads=2, encoder_layers=1, decoder_ffn_dim=64,
                          decoder_attention_heads=2, decoder_layers=2, decoder_n_points=2, decoder_in_channels=[32] * 3,
                          num_feature_levels=3, num_queries=4, id2label={0: "person", 1: "cat"},
                          label2id={"person": 0, "cat": 1})
    model = RTDetrForObjectDetection(config).eval()
    with torch.no_grad():
        # The last decoder layer's heads: every query a person (score 0.98), its box grown
        # (width and height logits +3) around the centre the earlier layers chose.
        head = model.model.decoder.class_embed[-1]
        head.weight.zero_()
        head.bias.copy_(torch.tensor([4.0, -4.0]))
        box = model.model.decoder.bbox_embed[-1].layers[-1]
        box.weight.zero_()
        box.bias.copy_(torch.tensor([0.0, 0.0, 3.0, 3.0]))
    model.save_pretrained(str(folder))
    RTDetrImageProcessor(size={"height": 64, "width": 64}).save_pretrained(str(folder))
