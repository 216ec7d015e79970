"""The one evaluation loop: model + loader -> detections -> metric."""
import os
import sys

import numpy as np
import paddle
from tqdm import tqdm

__all__ = ["to_tensors", "predict_batches", "evaluate", "normalise_output",
           "split_per_image"]

_INPUT_KEYS = ("image", "im_shape", "scale_factor", "gt_bbox", "gt_class", "gt_score")


def to_tensors(batch):
    return {k: paddle.to_tensor(v) for k, v in batch.items()
            if k in _INPUT_KEYS and v is not None}


def _valid(bbox):
    # multiclass_nms may return a placeholder row with class -1 when nothing is kept
    return bbox[bbox[:, 0] >= 0] if bbox.size else bbox.reshape(0, 6)


def normalise_output(bbox, num):
    """NMS outputs as numpy ``[K, 6]`` and ``[B]``; a lone placeholder row (nothing kept)
    counts for no image."""
    bbox = np.asarray(bbox).reshape(-1, 6)
    num = np.asarray(num).reshape(-1)
    if bbox.shape[0] != num.sum():
        num = np.zeros_like(num)
    return bbox, num


def split_per_image(bbox, num, im_ids, into=None):
    """``{im_id: [K, 6] detections}`` from one batch's outputs, placeholder rows dropped."""
    into = {} if into is None else into
    start = 0
    for im_id, k in zip(np.asarray(im_ids).reshape(-1), num):
        into[int(im_id)] = _valid(bbox[start:start + k])
        start += k
    return into


def predict_batches(model, loader, progress=False, desc="eval"):
    """Yield ``{'bbox', 'bbox_num', 'im_id', ...}`` numpy outputs batch by batch."""
    model.eval()
    with paddle.no_grad():
        # a progress bar only on a terminal: redirected to a file it is hundreds of lines
        bar = progress and sys.stderr.isatty()
        for batch in tqdm(loader, desc=desc, disable=not bar, leave=False):
            out = model(to_tensors(batch))
            bbox, num = normalise_output(out["bbox"].numpy(), out["bbox_num"].numpy())
            yield {"bbox": bbox, "bbox_num": num, "im_id": np.asarray(batch["im_id"]),
                   "im_shape": batch.get("im_shape"), "scale_factor": batch.get("scale_factor")}



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
