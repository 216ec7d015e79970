"""The one evaluation loop: model + loader -> detections -> metric."""
import os

import numpy as np
import paddle
from tqdm import tqdm

__all__ = ["to_tensors", "predict_batches", "evaluate", "split_detections"]

_INPUT_KEYS = ("image", "im_shape", "scale_factor", "gt_bbox", "gt_class", "gt_score")


def to_tensors(batch):
    return {k: paddle.to_tensor(v) for k, v in batch.items()
            if k in _INPUT_KEYS and v is not None}


def _valid(bbox):
    # multiclass_nms may return a placeholder row with class -1 when nothing is kept
    return bbox[bbox[:, 0] >= 0] if bbox.size else bbox.reshape(0, 6)


def predict_batches(model, loader, progress=False, desc="eval"):
    """Yield ``{'bbox', 'bbox_num', 'im_id', ...}`` numpy outputs batch by batch."""
    model.eval()
    with paddle.no_grad():
        for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
            out = model(to_tensors(batch))
            bbox = out["bbox"].numpy().reshape(-1, 6)
            num = out["bbox_num"].numpy().reshape(-1)
            if bbox.shape[0] != num.sum():    # placeholder rows: count them per image
                num = np.zeros_like(num)
            yield {"bbox": bbox, "bbox_num": num, "im_id": np.asarray(batch["im_id"]),
                   "im_shape": batch.get("im_shape"), "scale_factor": batch.get("scale_factor")}


def split_detections(outputs):
    """Batch outputs -> ``{im_id: [K, 6] array}`` with placeholder rows dropped."""
    per_image = {}
    for out in outputs:
        start = 0
        for im_id, n in zip(out["im_id"].reshape(-1), out["bbox_num"]):
            per_image[int(im_id)] = _valid(out["bbox"][start:start + n])
            start += n
    return per_image


def evaluate(model, loader, metric, progress=True, output_eval=None):
    """Run ``model`` over ``loader`` and return ``metric.accumulate()``; with
    ``output_eval`` also write the detections there as COCO ``bbox.json``."""
    metric.reset()
    outputs = []
    for out in predict_batches(model, loader, progress=progress):
        metric.update(out)
        if output_eval:
            outputs.append(out)
    if output_eval:
        from ppdet.metrics.evaluator import coco_metric
        writer = metric if hasattr(metric, "save_json") else coco_metric(loader.dataset)
        if writer is not metric:
            for out in outputs:
                writer.update(out)
        os.makedirs(output_eval, exist_ok=True)
        writer.save_json(os.path.join(output_eval, "bbox.json"))
    return metric.accumulate()
