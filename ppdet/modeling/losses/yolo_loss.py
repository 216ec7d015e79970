"""YOLOv3 loss through ``paddle.vision.ops.yolo_loss`` (one call per output level)."""
import paddle
from paddle.vision.ops import yolo_loss

from ppdet.core.errors import ConfigError
from ppdet.core.registry import LOSSES

__all__ = ["YOLOv3Loss"]

ASSIGN_MODES = ("best", "per_level")


@LOSSES.register
class YOLOv3Loss:
    """``assign`` picks which anchors learn an object:

    - ``best`` (YOLOv3): only the best-shaped of all anchors, so one output level;
    - ``per_level``: the best-shaped anchor of every level, so each object trains one
      anchor per level. A small from-scratch model learns about 2.5x faster with it
      (three positives per object instead of one; measured in bench/HISTORY.md,
      "Training and inference"), while
      NMS merges the extra detections.
    """

    def __init__(self, ignore_thresh=0.7, label_smooth=False, scale_x_y=1.0, assign="best"):
        if assign not in ASSIGN_MODES:
            raise ConfigError(f"YOLOv3Loss.assign must be one of {', '.join(ASSIGN_MODES)}, "
                              f"got {assign!r}")
        self.ignore_thresh = ignore_thresh
        self.label_smooth = label_smooth
        self.scale_x_y = scale_x_y
        self.assign = assign

    def __call__(self, outs, inputs, anchors, anchor_masks, downsample_ratios, num_classes):
        """``inputs`` holds gt_bbox (normalised cx,cy,w,h, padded), gt_class, gt_score."""
        gt_box = inputs["gt_bbox"].astype("float32")
        gt_label = inputs["gt_class"].astype("int32")
        gt_score = inputs.get("gt_score")
        if gt_score is not None:
            gt_score = gt_score.astype("float32")
        losses = {}
        total = 0.
        for i, (out, mask, ratio) in enumerate(zip(outs, anchor_masks, downsample_ratios)):
            if self.assign == "per_level":
                # the op gives an object to its best anchor among those passed: pass only
                # this level's anchors and every object has one here
                level_anchors = [v for m in mask for v in anchors[m]]
                level_mask = list(range(len(mask)))
            else:
                level_anchors = [v for a in anchors for v in a]
                level_mask = list(mask)
            loss = yolo_loss(out, gt_box, gt_label, level_anchors, level_mask, num_classes,
                             self.ignore_thresh, ratio, gt_score=gt_score,
                             use_label_smooth=self.label_smooth, scale_x_y=self.scale_x_y)
            losses[f"loss_level{i}"] = paddle.mean(loss)
            total = total + losses[f"loss_level{i}"]
        losses["loss"] = total
        return losses
