"""Evaluation exactly as the published DeepLesion numbers were computed.

Modules: :mod:`.froc` (key-slice detection FROC), :mod:`.froc3d` (LENS 3-D protocol),
:mod:`.tagging` (LesaNet/MULAN tag metrics), :mod:`.measurement` (RECIST errors),
:mod:`.sweep` (the shared vectorised FROC sweep), :mod:`.plot`, :mod:`.synthetic`.
"""

from deeplesion.evaluation.errors import EvaluationError, PredictionError
from deeplesion.evaluation.froc import (
    AVERAGE_RATES,
    FP_RATES,
    DetectionResult,
    Detections,
    GroundTruth,
    evaluate_detection,
    ground_truth,
    write_predictions_csv,
)
from deeplesion.evaluation.froc3d import Boxes3D, evaluate_detection_3d, read_boxes_3d
from deeplesion.evaluation.measurement import evaluate_measurements, measurement_errors
from deeplesion.evaluation.plot import PUBLISHED_FROC, plot_froc
from deeplesion.evaluation.predictions import read_predictions
from deeplesion.evaluation.sweep import FrocCurve, read_curve, sweep
from deeplesion.evaluation.synthetic import noisy_predictions
from deeplesion.evaluation.tagging import auc, choose_thresholds, tagging_metrics

__all__ = [
    "AVERAGE_RATES",
    "FP_RATES",
    "PUBLISHED_FROC",
    "Boxes3D",
    "DetectionResult",
    "Detections",
    "EvaluationError",
    "FrocCurve",
    "GroundTruth",
    "PredictionError",
    "auc",
    "choose_thresholds",
    "evaluate_detection",
    "evaluate_detection_3d",
    "evaluate_measurements",
    "ground_truth",
    "measurement_errors",
    "noisy_predictions",
    "plot_froc",
    "read_boxes_3d",
    "read_curve",
    "read_predictions",
    "sweep",
    "tagging_metrics",
    "write_predictions_csv",
]
