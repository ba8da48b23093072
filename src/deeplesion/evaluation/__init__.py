"""Evaluation exactly as the published DeepLesion numbers were computed.

Modules: :mod:`.froc` (key-slice detection FROC), :mod:`.froc3d` (LENS 3-D protocol),
:mod:`.tagging` (LesaNet/MULAN tag metrics), :mod:`.measurement` (RECIST errors),
:mod:`.sweep` (the shared vectorised FROC sweep), :mod:`.plot`, :mod:`.synthetic`.
"""

from .errors import EvaluationError, PredictionError
from .froc import (AVERAGE_RATES, FP_RATES, DetectionResult, Detections, GroundTruth,
                   evaluate_detection, ground_truth, read_predictions, write_predictions_csv)
from .froc3d import Boxes3D, evaluate_detection_3d, read_boxes_3d
from .measurement import evaluate_measurements, measurement_errors
from .plot import PUBLISHED_FROC, plot_froc
from .sweep import FrocCurve, read_curve, sweep
from .synthetic import demo, noisy_predictions
from .tagging import auc, choose_thresholds, tagging_metrics

__all__ = [
    "AVERAGE_RATES", "FP_RATES", "PUBLISHED_FROC", "Boxes3D", "DetectionResult", "Detections",
    "EvaluationError", "FrocCurve", "GroundTruth", "PredictionError", "auc",
    "choose_thresholds", "demo", "evaluate_detection", "evaluate_detection_3d",
    "evaluate_measurements", "ground_truth", "measurement_errors", "noisy_predictions",
    "plot_froc", "read_boxes_3d", "read_curve", "read_predictions", "sweep",
    "tagging_metrics", "write_predictions_csv",
]
