"""The batch contract every metric reads: ``bbox`` [sum K, 6] rows ``(class_index, score,
x1, y1, x2, y2)``, ``bbox_num`` [B] and ``im_id`` [B] (see ``ppdet.metrics.evaluator``)."""
import numpy as np

__all__ = ["flatten_batch", "to_numpy"]


def to_numpy(x):
    """Accept paddle tensors, lists and arrays alike."""
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
        x = x.numpy()
    return np.asarray(x)


def flatten_batch(outputs):
    """Rows [N, 6] float32 and the im_id of each row [N] int64, from one batch's outputs."""
    bbox = outputs.get("bbox")
    bbox = np.zeros((0, 6), np.float32) if bbox is None else to_numpy(bbox)
    bbox = bbox.astype(np.float32, copy=False).reshape(-1, 6)
    im_id = to_numpy(outputs["im_id"]).reshape(-1).astype(np.int64)
    num = outputs.get("bbox_num")
    if num is None:
        if len(im_id) != 1:
            raise ValueError("outputs without 'bbox_num' must hold a single image")
        num = np.array([len(bbox)])
    num = to_numpy(num).reshape(-1).astype(np.int64)
    if len(num) != len(im_id) or num.sum() != len(bbox):
        raise ValueError(f"bbox_num {num.tolist()} does not match {len(bbox)} rows "
                         f"for {len(im_id)} images")
    return bbox, np.repeat(im_id, num)
