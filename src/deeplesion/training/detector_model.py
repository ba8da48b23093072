"""The baseline detector's network: torchvision Faster R-CNN v2 configured for DeepLesion.

:func:`build_detector`: ``fasterrcnn_resnet50_fpn_v2`` with N input channels (context
slices; first convolution adapted), no ImageNet normalisation (mean 0, std 1), no resizing
inside the model (the dataset's preprocessing sets the size), anchors sized for lesions
(16..96 px, one size per FPN level) and MULAN's post-processing (NMS 0.5, score >= 0.05, at
most 50 boxes). No weights are downloaded unless ``pretrained_backbone``. ``arch='tiny'``
is a small stride-4 CNN with the same heads, for CPU smoke runs / tests.
:func:`check_device` refuses a device this machine does not have, before any work.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from deeplesion.errors import DeepLesionError

ARCHS = ("fasterrcnn_resnet50_fpn_v2", "tiny")
#: MULAN's anchor sizes (px); one per FPN level for the ResNet-50 FPN backbone.
LESION_ANCHORS = (16, 24, 32, 48, 96)


class DetectorError(DeepLesionError, ValueError):
    """A detector configuration or checkpoint that cannot be used."""


def check_device(device: str, error: type[Exception] = DetectorError) -> torch.device:
    """``device`` as a torch device, or ``error`` (:class:`DetectorError`) when it is not a
    device string or names hardware this machine does not have (checked before any work)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise error(f"invalid device {device!r}: expected cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise error(
                f"device {device!r}: CUDA is not available on this machine "
                "(no GPU found or PyTorch built without CUDA); use --device "
                "cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise error(
                f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise error(f"device {device!r}: MPS is not available on this machine")
    elif dev.type != "cpu":
        raise error(f"device {device!r}: only cpu, cuda and mps are supported")
    return dev


def _no_resize_transform(in_channels: int, size_divisible: int = 32):
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    class _Identity(GeneralizedRCNNTransform):
        """Pads to a batch; never resizes (preprocessing already fixed the size)."""

        def resize(self, image, target=None):
            return image, target

    return _Identity(
        min_size=512,
        max_size=512,
        image_mean=[0.0] * in_channels,
        image_std=[1.0] * in_channels,
        size_divisible=size_divisible,
    )


class TinyBackbone(nn.Sequential):
    """Five 3x3 conv-BN-ReLU layers, output stride 4, 128 channels (CPU smoke runs)."""

    def __init__(self, in_channels: int) -> None:
        def block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, stride, dilation, dilation, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]

        super().__init__(
            *block(in_channels, 32, 2),
            *block(32, 32),
            *block(32, 64, 2),
            *block(64, 64, dilation=2),
            *block(64, 128, dilation=4),
        )
        self.out_channels = 128


def build_detector(
    in_channels: int = 3,
    *,
    arch: str = "fasterrcnn_resnet50_fpn_v2",
    anchor_sizes: Sequence[float] = LESION_ANCHORS,
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    pretrained_backbone: bool = False,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.5,
    detections_per_img: int = 50,
) -> nn.Module:
    """A two-class (background, lesion) Faster R-CNN taking ``in_channels`` slices."""
    from torchvision.models.detection import FasterRCNN, fasterrcnn_resnet50_fpn_v2
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign

    if in_channels < 1:
        raise DetectorError(f"in_channels must be >= 1, got {in_channels}")
    sizes = tuple(float(s) for s in anchor_sizes)
    ratios = tuple(float(r) for r in aspect_ratios)
    post = {
        "box_score_thresh": score_thresh,
        "box_nms_thresh": nms_thresh,
        "box_detections_per_img": detections_per_img,
    }
    if arch == "fasterrcnn_resnet50_fpn_v2":
        from torchvision.models import ResNet50_Weights

        if len(sizes) != 5:
            raise DetectorError(f"the FPN has 5 levels: give 5 anchor sizes, got {sizes}")
        model = fasterrcnn_resnet50_fpn_v2(
            weights=None,
            num_classes=2,
            weights_backbone=ResNet50_Weights.IMAGENET1K_V1 if pretrained_backbone else None,
            **post,
        )
        model.rpn.anchor_generator = AnchorGenerator(
            tuple((s,) for s in sizes), (ratios,) * len(sizes)
        )
        if len(ratios) != 3:
            raise DetectorError("the v2 RPN head expects 3 aspect ratios")
        old = model.backbone.body.conv1
        if in_channels != 3:
            new = nn.Conv2d(
                in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False
            )
            if pretrained_backbone:  # spread the RGB filters over the slices
                with torch.no_grad():
                    new.weight.copy_(
                        old.weight.mean(1, keepdim=True).repeat(1, in_channels, 1, 1)
                        * 3.0
                        / in_channels
                    )
            model.backbone.body.conv1 = new
    elif arch == "tiny":
        from torchvision.models.detection.rpn import RPNHead

        backbone = TinyBackbone(in_channels)
        anchors = AnchorGenerator((sizes,), (ratios,))
        model = FasterRCNN(
            backbone,
            num_classes=None,
            rpn_anchor_generator=anchors,
            rpn_head=RPNHead(backbone.out_channels, anchors.num_anchors_per_location()[0]),
            box_roi_pool=MultiScaleRoIAlign(["0"], 7, 1),
            box_head=TwoMLPHead(backbone.out_channels * 49, 256),
            box_predictor=FastRCNNPredictor(256, 2),
            rpn_pre_nms_top_n_train=600,
            rpn_post_nms_top_n_train=300,
            rpn_pre_nms_top_n_test=300,
            rpn_post_nms_top_n_test=150,
            box_batch_size_per_image=64,
            **post,
        )
    else:
        raise DetectorError(f"unknown arch {arch!r}; allowed: {ARCHS}")
    model.transform = _no_resize_transform(in_channels)
    return model
