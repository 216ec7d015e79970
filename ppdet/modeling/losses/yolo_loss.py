"""YOLOv3 loss through ``paddle.vision.ops.yolo_loss`` (one call per output level)."""
import paddle
from paddle.vision.ops import yolo_loss

from ppdet.core.registry import LOSSES

__all__ = ["YOLOv3Loss"]


@LOSSES.register
class YOLOv3Loss:
    def __init__(self, ignore_thresh=0.7, label_smooth=False, scale_x_y=1.0):
        self.ignore_thresh = ignore_thresh
        self.label_smooth = label_smooth
        self.scale_x_y = scale_x_y

    def __call__(self, outs, inputs, anchors, anchor_masks, downsample_ratios, num_classes):
        """``inputs`` holds gt_bbox (normalised cx,cy,w,h, padded), gt_class, gt_score."""
        flat_anchors = [v for a in anchors for v in a]
        gt_box = inputs["gt_bbox"].astype("float32")
        gt_label = inputs["gt_class"].astype("int32")
        gt_score = inputs.get("gt_score")
        losses = {}
        total = 0.
        for i, (out, mask, ratio) in enumerate(zip(outs, anchor_masks, downsample_ratios)):
            loss = yolo_loss(out, gt_box, gt_label, flat_anchors, mask, num_classes,
                             self.ignore_thresh, ratio,
                             gt_score=None if gt_score is None else gt_score.astype("float32"),
                             use_label_smooth=self.label_smooth, scale_x_y=self.scale_x_y)
            losses[f"loss_level{i}"] = paddle.mean(loss)
            total = total + losses[f"loss_level{i}"]
        losses["loss"] = total
        return losses
