"""YOLOv3 detector: backbone -> head -> (loss | decode + NMS)."""
import paddle.nn as nn

from ppdet.core.registry import ARCHITECTURES

__all__ = ["YOLOv3"]


@ARCHITECTURES.register
class YOLOv3(nn.Layer):
    __inject__ = ["backbone", "yolo_head", "post_process"]

    def __init__(self, backbone, yolo_head, post_process=None):
        super().__init__()
        self.backbone = backbone
        self.yolo_head = yolo_head
        self.post_process = post_process

    def head_outputs(self, image):
        """Raw output maps; the graph pruners trace this (no post-processing)."""
        return self.yolo_head(self.backbone(image))

    def forward(self, inputs):
        outs = self.head_outputs(inputs["image"])
        if self.training:
            return self.yolo_head.get_loss(outs, inputs)
        return self.predict_from_outputs(outs, inputs["im_shape"], inputs["scale_factor"])

    def predict_from_outputs(self, outs, im_shape, scale_factor):
        bbox, bbox_num = self.post_process(outs, im_shape, scale_factor, self.yolo_head)
        return {"bbox": bbox, "bbox_num": bbox_num}
