"""Evaluation metrics (COCO box and mask AP with pycocotools)."""
from .coco_eval import (  # noqa: F401
    IOU_TYPES,
    STAT_NAMES,
    COCOMetric,
    build_clsid2catid,
    detections_to_coco,
    evaluate_results,
    format_metrics,
    gt_to_results,
    json_eval,
)

__all__ = [
    "IOU_TYPES",
    "STAT_NAMES",
    "COCOMetric",
    "build_clsid2catid",
    "detections_to_coco",
    "evaluate_results",
    "format_metrics",
    "gt_to_results",
    "json_eval",
]
