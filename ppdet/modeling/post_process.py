"""Decoding and NMS: raw head outputs -> ``bbox`` [K, 6] (class, score, x1, y1, x2, y2
in original-image pixels) and ``bbox_num`` [B]. Works in dygraph, in PIR and in legacy
static programs (export), since Paddle has no public multiclass NMS."""
import paddle
from paddle import _C_ops
from paddle.base.framework import in_dynamic_or_pir_mode
from paddle.base.layer_helper import LayerHelper
from paddle.vision.ops import yolo_box

from ppdet.core.registry import POST_PROCESS

__all__ = ["multiclass_nms", "YOLOBox", "MultiClassNMS", "BBoxPostProcess"]


def multiclass_nms(bboxes, scores, score_threshold, nms_top_k, keep_top_k,
                   nms_threshold=0.45, normalized=False, background_label=-1):
    """bboxes [B, M, 4], scores [B, C, M] -> (bbox [K, 6], bbox_num [B])."""
    if in_dynamic_or_pir_mode():
        out, _, num = _C_ops.multiclass_nms3(bboxes, scores, None, score_threshold,
                                             nms_top_k, keep_top_k, nms_threshold,
                                             normalized, 1.0, background_label)
        return out, num
    helper = LayerHelper("multiclass_nms3")
    out = helper.create_variable_for_type_inference(dtype=bboxes.dtype)
    index = helper.create_variable_for_type_inference(dtype="int32")
    num = helper.create_variable_for_type_inference(dtype="int32")
    helper.append_op(
        type="multiclass_nms3", inputs={"BBoxes": bboxes, "Scores": scores},
        attrs={"background_label": background_label, "score_threshold": score_threshold,
               "nms_top_k": nms_top_k, "nms_threshold": nms_threshold,
               "keep_top_k": keep_top_k, "nms_eta": 1.0, "normalized": normalized},
        outputs={"Out": out, "Index": index, "NmsRoisNum": num})
    return out, num


@POST_PROCESS.register
class YOLOBox:
    def __init__(self, conf_thresh=0.005, clip_bbox=True, scale_x_y=1.0):
        self.conf_thresh = conf_thresh
        self.clip_bbox = clip_bbox
        self.scale_x_y = scale_x_y

    def __call__(self, outs, origin_shape, anchors, anchor_masks, downsample_ratios,
                 num_classes):
        boxes, scores = [], []
        for out, mask, ratio in zip(outs, anchor_masks, downsample_ratios):
            level_anchors = [v for m in mask for v in anchors[m]]
            b, s = yolo_box(out, origin_shape, level_anchors, num_classes, self.conf_thresh,
                            ratio, clip_bbox=self.clip_bbox, scale_x_y=self.scale_x_y)
            boxes.append(b)
            scores.append(s)
        return paddle.concat(boxes, axis=1), paddle.concat(scores, axis=1).transpose([0, 2, 1])


@POST_PROCESS.register
class MultiClassNMS:
    def __init__(self, score_threshold=0.01, nms_top_k=1000, keep_top_k=100,
                 nms_threshold=0.45, background_label=-1):
        self.kw = dict(score_threshold=score_threshold, nms_top_k=nms_top_k,
                       keep_top_k=keep_top_k, nms_threshold=nms_threshold,
                       background_label=background_label)

    def __call__(self, bboxes, scores):
        return multiclass_nms(bboxes, scores, **self.kw)


@POST_PROCESS.register
class BBoxPostProcess:
    __inject__ = ["decode", "nms"]

    def __init__(self, decode=None, nms=None):
        self.decode = decode or YOLOBox()
        self.nms = nms or MultiClassNMS()

    def __call__(self, outs, im_shape, scale_factor, head):
        # original image size = network input size / resize scale, rounded
        origin = (im_shape / scale_factor + 0.5).astype("int32")
        boxes, scores = self.decode(outs, origin, head.anchors, head.anchor_masks,
                                    head.downsample_ratios, head.num_classes)
        return self.nms(boxes, scores)
