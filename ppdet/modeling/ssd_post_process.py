"""SSD decoding: loc offsets + priors -> boxes in original-image pixels, softmax scores
without the background column -> ``multiclass_nms``. Only ops that also trace into a
legacy static program (export)."""
import math

import paddle
import paddle.nn.functional as F

from ppdet.core.registry import POST_PROCESS
from ppdet.modeling.post_process import MultiClassNMS

__all__ = ["SSDPostProcess", "decode_boxes"]


def _exp(x):
    """e ** x. ``paddle.exp`` has no legacy-static path when traced by ``to_static`` under
    ``DygraphOldIrGuard`` (Paddle 3.3: "must be Value, but got Variable"); pow has."""
    return paddle.pow(paddle.full_like(x, math.e), x)


def decode_boxes(loc, priors, variances):
    """Inverse of ``ssd_loss.encode_boxes``: loc [B, P, 4], priors [P, 4] -> [B, P, 4]."""
    pw, ph = priors[:, 2] - priors[:, 0], priors[:, 3] - priors[:, 1]
    px, py = priors[:, 0] + pw / 2, priors[:, 1] + ph / 2
    cx = px + loc[:, :, 0] * variances[0] * pw
    cy = py + loc[:, :, 1] * variances[1] * ph
    w = pw * _exp(loc[:, :, 2] * variances[2])
    h = ph * _exp(loc[:, :, 3] * variances[3])
    return paddle.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


@POST_PROCESS.register
class SSDPostProcess:
    """Output classes are 0-based foreground classes (the background column is dropped)."""
    __inject__ = ["nms"]

    def __init__(self, nms=None):
        self.nms = nms or MultiClassNMS(keep_top_k=200, nms_threshold=0.45)

    def __call__(self, outs, im_shape, scale_factor, head):
        loc, conf = head.flatten(outs)
        priors = paddle.assign(head.priors(outs))
        boxes = paddle.clip(decode_boxes(loc, priors, head.variances), 0., 1.)
        # original image size = network input size / resize scale, rounded (as YOLOv3)
        origin = (im_shape / scale_factor + 0.5).astype("int32").astype("float32")
        wh = paddle.concat([origin[:, 1:2], origin[:, 0:1]], axis=1).tile([1, 2])
        boxes = boxes * wh.unsqueeze(1)
        scores = F.softmax(conf, axis=-1)[:, :, 1:].transpose([0, 2, 1])
        return self.nms(boxes, scores)
