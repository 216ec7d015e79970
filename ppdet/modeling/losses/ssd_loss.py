"""SSD loss: prior matching, box encoding and hard negative mining.

Matching and mining are index bookkeeping without gradients, so they run in numpy (a batch
of 8 x 20 boxes x ~2000 priors takes well under a millisecond); the losses are paddle ops.
"""
import numpy as np
import paddle
import paddle.nn.functional as F

from ppdet.core.registry import LOSSES

__all__ = ["SSDLoss", "iou_matrix", "match_priors", "encode_boxes"]


def _numpy(x):
    return x.numpy() if isinstance(x, paddle.Tensor) else np.asarray(x)


def iou_matrix(a, b):
    """IoU of boxes ``a`` [..., N, 4] with ``b`` [M, 4] -> [..., N, M] (x1, y1, x2, y2)."""
    a, b = a[..., :, None, :], b[None, :, :]
    inter = np.prod(np.clip(np.minimum(a[..., 2:], b[..., 2:]) -
                            np.maximum(a[..., :2], b[..., :2]), 0, None), -1)
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])
    return inter / np.maximum(area(a) + area(b) - inter, 1e-10)


def match_priors(gt_bbox, priors, threshold=0.5, with_iou=False):
    """Index of the matched GT per prior, -1 for background: [B, P] (and, ``with_iou``,
    each prior's best IoU with any object: [B, P]).

    ``gt_bbox`` [B, G, 4], padded rows have zero size. Each GT first takes its best prior
    (so every object gets one, however it lies), then any prior whose best IoU is at least
    ``threshold`` takes that GT.
    """
    valid = (gt_bbox[..., 2] > gt_bbox[..., 0]) & (gt_bbox[..., 3] > gt_bbox[..., 1])
    iou = np.where(valid[..., None], iou_matrix(gt_bbox, priors), -1.)      # [B, G, P]
    match = np.where(iou.max(1) >= threshold, iou.argmax(1), -1)           # [B, P]
    b, g = np.nonzero(valid)
    match[b, iou[b, g].argmax(-1)] = g   # forced: the best prior of each GT
    return (match, np.maximum(iou.max(1), 0.)) if with_iou else match


def encode_boxes(boxes, priors, variances):
    """Centre-size offsets of ``boxes`` from ``priors`` (both [..., 4] x1, y1, x2, y2),
    divided by the variances: what the loc conv learns to predict."""
    pw, ph = priors[..., 2] - priors[..., 0], priors[..., 3] - priors[..., 1]
    px, py = priors[..., 0] + pw / 2, priors[..., 1] + ph / 2
    bw = np.maximum(boxes[..., 2] - boxes[..., 0], 1e-6)
    bh = np.maximum(boxes[..., 3] - boxes[..., 1], 1e-6)
    bx, by = boxes[..., 0] + bw / 2, boxes[..., 1] + bh / 2
    v = variances
    return np.stack([(bx - px) / pw / v[0], (by - py) / ph / v[1],
                     np.log(bw / pw) / v[2], np.log(bh / ph) / v[3]], -1).astype("float32")


@LOSSES.register
class SSDLoss:
    """Smooth-L1 on the positives' offsets + softmax cross-entropy on the positives and the
    hardest negatives (``neg_pos_ratio`` per positive, per image), both divided by the
    number of positives in the batch.

    Negatives are mined only among priors whose best IoU with any object is below
    ``neg_overlap`` (PaddleDetection's name): a prior half on an object is neither taught
    "object" nor "background" (the default, equal to ``overlap_threshold``, mines them all).
    """

    def __init__(self, overlap_threshold=0.5, neg_pos_ratio=3.0, loc_loss_weight=1.0,
                 conf_loss_weight=1.0, neg_overlap=None):
        self.overlap_threshold = overlap_threshold
        self.neg_overlap = overlap_threshold if neg_overlap is None else neg_overlap
        if not (isinstance(self.neg_overlap, (int, float))
                and 0 < self.neg_overlap <= overlap_threshold):
            from ppdet.core.errors import ConfigError
            raise ConfigError(f"SSDLoss.neg_overlap must be in (0, overlap_threshold="
                              f"{overlap_threshold}], got {self.neg_overlap!r}")
        self.neg_pos_ratio = neg_pos_ratio
        self.loc_loss_weight = loc_loss_weight
        self.conf_loss_weight = conf_loss_weight

    def targets(self, gt_bbox, gt_class, priors, variances):
        """Numpy (labels [B, P] with 0 = background, loc targets [B, P, 4], positives,
        priors that may be mined as negatives)."""
        if gt_bbox.size and gt_bbox.max() > 1.01:
            raise ValueError("SSDLoss needs gt_bbox as x1,y1,x2,y2 normalised to [0, 1]: "
                             "add NormalizeBox to TrainReader before Permute")
        match, best = match_priors(gt_bbox, priors, self.overlap_threshold, with_iou=True)
        pos = match >= 0
        idx = np.maximum(match, 0)
        rows = np.arange(len(match))[:, None]
        labels = np.where(pos, gt_class.reshape(gt_class.shape[:2])[rows, idx] + 1, 0)
        loc_t = encode_boxes(gt_bbox[rows, idx], priors[None], variances)
        return (labels.astype("int64"), np.where(pos[..., None], loc_t, 0.), pos,
                ~pos & (best < self.neg_overlap))

    def __call__(self, loc, conf, priors, variances, gt_bbox, gt_class):
        labels, loc_t, pos, negatives = self.targets(_numpy(gt_bbox).astype("float32"),
                                          _numpy(gt_class).astype("int64"), priors,
                                          variances)
        ce = F.cross_entropy(conf, paddle.to_tensor(labels)[..., None],
                             reduction="none").squeeze(-1)                 # [B, P]
        # hard negatives: the background priors the model gets most wrong
        neg_loss = np.where(negatives, ce.numpy(), -np.inf)
        rank = np.empty_like(labels)
        np.put_along_axis(rank, np.argsort(-neg_loss, axis=1, kind="stable"),
                          np.arange(labels.shape[1])[None], axis=1)
        num_neg = np.minimum(self.neg_pos_ratio * pos.sum(1), negatives.sum(1))
        keep = pos | (rank < num_neg[:, None])
        n = float(max(pos.sum(), 1))
        conf_loss = (ce * paddle.to_tensor(keep.astype("float32"))).sum() / n
        loc_loss = (F.smooth_l1_loss(loc, paddle.to_tensor(loc_t, "float32"), reduction="none")
                    .sum(-1) * paddle.to_tensor(pos.astype("float32"))).sum() / n
        loc_loss, conf_loss = self.loc_loss_weight * loc_loss, self.conf_loss_weight * conf_loss
        return {"loss": loc_loss + conf_loss, "loss_loc": loc_loss, "loss_conf": conf_loss}
