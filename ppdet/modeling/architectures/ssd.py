"""SSD detector: backbone (with extra layers) -> multi-box head -> (loss | decode + NMS)."""
import paddle.nn as nn

from ppdet.core.registry import ARCHITECTURES

# the SSD parts register on import; ppdet.modeling imports only this module for them
from ppdet.modeling.heads.ssd_head import SSDHead  # noqa: F401
from ppdet.modeling.losses.ssd_loss import SSDLoss  # noqa: F401
from ppdet.modeling.ssd_post_process import SSDPostProcess  # noqa: F401

__all__ = ["SSD"]


@ARCHITECTURES.register
class SSD(nn.Layer):
    __inject__ = ["backbone", "ssd_head", "post_process"]

    def __init__(self, backbone, ssd_head, post_process=None):
        super().__init__()
        self.backbone = backbone
        self.ssd_head = ssd_head
        self.post_process = post_process

    def head_outputs(self, image):
        """Raw loc and conf maps; the graph pruners trace this (no post-processing)."""
        return self.ssd_head(self.backbone(image))

    def forward(self, inputs):
        outs = self.head_outputs(inputs["image"])
        if self.training:
            return self.ssd_head.get_loss(outs, inputs)
        return self.predict_from_outputs(outs, inputs["im_shape"], inputs["scale_factor"])

    def predict_from_outputs(self, outs, im_shape, scale_factor):
        bbox, bbox_num = self.post_process(outs, im_shape, scale_factor, self.ssd_head)
        return {"bbox": bbox, "bbox_num": bbox_num}
