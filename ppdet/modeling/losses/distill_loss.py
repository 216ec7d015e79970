"""Distillation losses: a student's raw head outputs against a frozen teacher's.

One small callable per head, named by the head class (``YOLOv3Head.distill_loss``,
``SSDHead.distill_loss``), so the training loop never asks which architecture it trains.
Every loss has the same call, ``loss(student_outs, teacher_outs, head, inputs)`` -> scalar
tensor (``head``: the student's, for its layout; ``inputs``: the batch, for SSD's matching),
a ``default_weight``, and ``check_pair(student_head, teacher_head)``: why the two heads'
outputs cannot be compared (other classes, anchors or layout), or None. Their options come
from the student's config section of the loss's name (e.g. ``DistillSSDLoss:
{temperature: 2}``).

Each term is written so that it is 0 when the student's outputs equal the teacher's: a
cross-entropy against a soft target has the target's entropy subtracted (that is the KL
divergence; same gradient), so the logged loss says how far the student is from its teacher.
"""
import numpy as np
import paddle
import paddle.nn.functional as F

from ppdet.core.errors import ConfigError
from ppdet.core.registry import LOSSES

__all__ = ["DistillYOLOv3Loss", "DistillSSDLoss", "soft_bce"]


def soft_bce(logits, target_logits):
    """Sigmoid cross-entropy of ``logits`` against ``sigmoid(target_logits)``, less the
    target's own entropy: elementwise, >= 0, 0 where the logits agree."""
    p = F.sigmoid(target_logits)
    return (F.binary_cross_entropy_with_logits(logits, p, reduction="none")
            - F.binary_cross_entropy_with_logits(target_logits, p, reduction="none"))


def _differ(what, a, b):
    return f"the teacher's {what}: {b}, the student's: {a}" if a != b else None


@LOSSES.register
class DistillYOLOv3Loss:
    """The objectness-weighted output loss (after Mehta and Ozay, arXiv 1805.06361), per
    output level and summed over the levels:

    - x, y: sigmoid cross-entropy against the teacher's sigmoid(x, y);
    - w, h: L1 against the teacher's w, h (log-space offsets from the same anchors);
    - class scores: sigmoid cross-entropy against the teacher's sigmoid scores;

    each weighted by the teacher's sigmoid objectness (only where the teacher sees an object
    do its boxes and classes mean anything), plus objectness: sigmoid cross-entropy against
    "teacher objectness logit > 0". The box terms are x + y and w + h per anchor, every term
    a mean over the map's cells and anchors (the class term also over classes), as in
    PaddleDetection, so its default weight, 1000, means the same here. The hard objectness
    target's cross-entropy is taken relative to the teacher's own, and only where it exceeds
    it: a cell where the student already gives the teacher's answer at least as surely as
    the teacher adds nothing. So the loss is >= 0, 0 when student == teacher, and the
    student is pulled to its teacher's decisions, not past them (plain hard-target
    cross-entropy would push every background cell towards -inf, which the detection loss
    already does).

    ``obj_target: soft`` (config section ``DistillYOLOv3Loss``) takes the teacher's sigmoid
    objectness as the target instead, like the other terms (KL, no hinge needed)."""

    default_weight = 1000.0

    def __init__(self, obj_target="hard"):
        if obj_target not in ("hard", "soft"):
            raise ConfigError(f"DistillYOLOv3Loss.obj_target must be hard or soft, got "
                              f"{obj_target!r}")
        self.obj_target = obj_target

    @staticmethod
    def check_pair(student, teacher):
        return (_differ("class count", student.num_classes, teacher.num_classes)
                or _differ("anchors", student.anchors, teacher.anchors)
                or _differ("anchor masks (anchors per output level)", student.anchor_masks,
                           teacher.anchor_masks)
                or _differ("output strides", student.downsample_ratios,
                           teacher.downsample_ratios))

    def __call__(self, student_outs, teacher_outs, head, inputs=None):
        total = 0.
        for s, t, mask in zip(student_outs, teacher_outs, head.anchor_masks):
            b, _, h, w = s.shape
            shape = [b, len(mask), 5 + head.num_classes, h, w]
            s, t = s.reshape(shape), t.reshape(shape)
            obj_w = F.sigmoid(t[:, :, 4:5])                 # [B, A, 1, H, W]
            # x + y and w + h summed per anchor, then the mean over cells and anchors
            # (PaddleDetection's reduction; a mean over the pair would halve the box terms)
            xy = (soft_bce(s[:, :, 0:2], t[:, :, 0:2]) * obj_w).sum(axis=2).mean()
            wh = (paddle.abs(s[:, :, 2:4] - t[:, :, 2:4]) * obj_w).sum(axis=2).mean()
            cls = (soft_bce(s[:, :, 5:], t[:, :, 5:]) * obj_w).mean()
            total = total + xy + wh + cls + self._objectness(s[:, :, 4], t[:, :, 4])
        return total

    def _objectness(self, s, t):
        if self.obj_target == "soft":
            return soft_bce(s, t).mean()
        hard = (t > 0).astype("float32")
        return F.relu(F.binary_cross_entropy_with_logits(s, hard, reduction="none")
                      - F.binary_cross_entropy_with_logits(t, hard, reduction="none")).mean()


@LOSSES.register
class DistillSSDLoss:
    """SSD: the matched priors' locations, and softened class scores.

    - locations: smooth-L1 between the student's and the teacher's box offsets on the priors
      matched to a ground-truth object (as SSDLoss matches them). Only there is a box
      trained, and only there is it used: an unmatched prior's offsets are never decoded
      into a kept detection once its class score says background.
    - class scores: KL divergence of the student's softmax from the teacher's, both at
      ``temperature`` (Hinton et al.'s softening; x T^2 keeps the gradient's scale), on every
      prior, weighted by the teacher's foreground probability (1 on matched priors): the
      teacher's soft scores carry which classes look alike and where it sees objects the
      labels missed, and the weighting keeps thousands of easy background priors from
      drowning the few that hold objects (the role objectness plays for YOLOv3).

    Both are divided by the number of matched priors, as SSDLoss divides its terms.
    ``temperature``: config section ``DistillSSDLoss``."""

    default_weight = 1.0

    def __init__(self, temperature=2.0):
        self.temperature = float(temperature)

    @staticmethod
    def check_pair(student, teacher):
        return (_differ("class count", student.num_classes, teacher.num_classes)
                or _differ("priors per location", student.num_priors, teacher.num_priors)
                or _differ("prior shapes", student.prior_shapes, teacher.prior_shapes)
                or _differ("prior base size", student.base_size, teacher.base_size))

    def __call__(self, student_outs, teacher_outs, head, inputs):
        from ppdet.modeling.losses.ssd_loss import match_priors
        loc_s, conf_s = head.flatten(student_outs)
        loc_t, conf_t = head.flatten(teacher_outs)
        gt = inputs["gt_bbox"]
        gt = gt.numpy() if isinstance(gt, paddle.Tensor) else np.asarray(gt)
        threshold = getattr(head.loss, "overlap_threshold", 0.5)
        matched = match_priors(gt.astype("float32"), head.priors(student_outs), threshold) >= 0
        pos = paddle.to_tensor(matched.astype("float32"))              # [B, P]
        n = float(max(matched.sum(), 1))
        loc = (F.smooth_l1_loss(loc_s, loc_t, reduction="none").sum(-1) * pos).sum() / n
        temp = self.temperature
        p_t = F.softmax(conf_t / temp, axis=-1)
        log_ratio = F.log_softmax(conf_t / temp, axis=-1) - F.log_softmax(conf_s / temp, -1)
        kl = (p_t * log_ratio).sum(-1)                                  # [B, P]
        weight = paddle.maximum(pos, 1. - F.softmax(conf_t, axis=-1)[:, :, 0])
        cls = (kl * weight).sum() * temp ** 2 / n
        return loc + cls
