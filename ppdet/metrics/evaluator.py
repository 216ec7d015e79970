"""The one evaluator interface: ``build_metric('VOC'|'COCO', dataset)`` used by every tool.

Both metrics share the batch contract of the models: ``bbox`` [sum K, 6] rows
``(class_index, score, x1, y1, x2, y2)``, ``bbox_num`` [B] and ``im_id`` [B]. The metric
classes are imported when built (pycocotools is slow to import); the batch helpers they
share live in ``ppdet.metrics.batch``.

The evaluation contract every metric keeps (training, eval, sensitivity, pruning, reports):

- ``reset()``, ``update(outputs)`` per batch, ``accumulate()`` -> dict whose ``'mAP'`` is
  the headline number in [0, 1]; ``log()`` prints it;
- ``score(detections)`` -> the same headline number for a whole detection set at once
  (``{im_id: [K, 6]}``), without touching the ``update`` state: sensitivity analysis calls
  it once per measurement;
- ``headline``: what the number is, for messages: ``mAP(0.50, 11point)``,
  ``mAP(0.50, integral)`` (VOC) or ``AP(0.50:0.95)`` (COCO, ``COCOeval.stats[0]``).
"""
from ppdet.core.registry import METRICS
from ppdet.metrics.batch import flatten_batch, to_numpy

__all__ = ["build_metric", "flatten_batch", "to_numpy", "METRIC_NAMES"]

METRIC_NAMES = ("VOC", "COCO")


@METRICS.register(name="VOC")
def voc_metric(dataset, map_type="11point", overlap_thresh=0.5, evaluate_difficult=False,
               bbox_plus_one=False):
    """VOC mAP over ``dataset.records``."""
    from .voc_map import VOCMetric
    classes = getattr(dataset, "class_names", None) or dataset.num_classes
    return VOCMetric(classes, dataset.records, map_type=map_type, overlap_thresh=overlap_thresh,
                     evaluate_difficult=evaluate_difficult, bbox_plus_one=bbox_plus_one)


@METRICS.register(name="COCO")
def coco_metric(dataset, verbose=False, output_eval=None):
    """COCO bbox AP against ``dataset.to_coco_gt()``."""
    from .coco_eval import COCOMetric
    return COCOMetric(dataset.to_coco_gt(), dataset.clsid2catid, verbose=verbose,
                      output_eval=output_eval)


def build_metric(metric, dataset, map_type="11point", **kw):
    """Build the named metric for ``dataset``; ``map_type`` only reaches metrics that take it."""
    name = str(metric)
    if name not in METRICS and name.upper() in METRICS:
        name = name.upper()
    return METRICS.build(name, kw, shared={"map_type": map_type}, dataset=dataset)
