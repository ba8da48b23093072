"""``deeplesion evaluate``: detection FROC (2-D and 3-D), tagging, measurement,
classification and segmentation metrics (each in the module of its kind)."""

from __future__ import annotations

import click

from deeplesion.cli.evaluate_detection import detection, detection3d
from deeplesion.cli.evaluate_lesions import classification, measurement, tagging
from deeplesion.cli.segmentation import segmentation_cmd


@click.group()
def evaluate() -> None:
    """Evaluate predictions exactly as the published DeepLesion numbers were computed."""


for _command in (detection, detection3d, tagging, measurement, classification):
    evaluate.add_command(_command)
evaluate.add_command(segmentation_cmd, "segmentation")
