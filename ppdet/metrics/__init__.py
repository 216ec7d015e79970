"""Detection metrics: VOC mAP, COCO AP, and ``build_metric`` to pick one for a dataset."""
from .coco_eval import COCOMetric, load_coco_gt
from .evaluator import build_metric, flatten_batch
from .voc_map import VOCMetric, average_precision

__all__ = ["COCOMetric", "VOCMetric", "average_precision", "build_metric", "flatten_batch",
           "load_coco_gt"]
