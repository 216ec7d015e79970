"""YOLOv3 head: detection blocks, transition + 2x upsample + concat routes, outputs.

For level i (0 = stride 32): ``yolo_block.i`` is 1x1 (0.0) -> 3x3 (0.1) -> 1x1 (1.0)
-> 3x3 (1.1) -> 1x1 (2, the route) -> 3x3 (tip) -> ``yolo_output.i`` (1x1 with bias).
For i < 2 the route goes through ``yolo_transition.i`` (1x1), is upsampled 2x and
concatenated in front of the next backbone feature map.
"""
import numpy as np
import paddle
import paddle.nn as nn
from paddle import ParamAttr
from paddle.nn.initializer import Assign, Normal

from ppdet.core.registry import HEADS
from ppdet.modeling.layers import ConvBNLayer, Upsample2x
from ppdet.modeling.losses.distill_loss import DistillYOLOv3Loss

__all__ = ["YOLOv3Head"]


class YoloDetBlock(nn.Layer):
    def __init__(self, in_c, ch, name):
        super().__init__()
        spec = [("0.0", in_c, ch, 1), ("0.1", ch, ch * 2, 3), ("1.0", ch * 2, ch, 1),
                ("1.1", ch, ch * 2, 3), ("2", ch * 2, ch, 1)]
        self.convs = nn.LayerList([
            ConvBNLayer(i, o, k, act="leaky", name=f"{name}.{tag}", scheme="dotted")
            for tag, i, o, k in spec])
        self.tip = ConvBNLayer(ch, ch * 2, 3, act="leaky", name=f"{name}.tip",
                               scheme="dotted")

    def forward(self, x):
        for conv in self.convs:
            x = conv(x)
        return x, self.tip(x)


@HEADS.register
class YOLOv3Head(nn.Layer):
    """``channels``: route channels per level (512, 256, 128 in the standard model)."""
    __inject__ = ["loss"]
    distill_loss = DistillYOLOv3Loss      # what a teacher of this head teaches with

    def __init__(self, in_channels=(256, 512, 1024), channels=(512, 256, 128),
                 anchors=((10, 13), (16, 30), (33, 23), (30, 61), (62, 45), (59, 119),
                          (116, 90), (156, 198), (373, 326)),
                 anchor_masks=((6, 7, 8), (3, 4, 5), (0, 1, 2)), num_classes=80,
                 loss=None, downsample_ratios=(32, 16, 8)):
        super().__init__()
        self.anchors = [list(map(int, a)) for a in anchors]
        self.anchor_masks = [list(map(int, m)) for m in anchor_masks]
        self.num_classes = num_classes
        self.downsample_ratios = list(downsample_ratios)
        self.loss = loss
        # backbone features come shallow -> deep; the head walks deep -> shallow
        feats_c = list(in_channels)[::-1]
        self.blocks = nn.LayerList()
        self.transitions = nn.LayerList()
        self.outputs = nn.LayerList()
        self.upsample = Upsample2x()
        route_c = 0
        for i, ch in enumerate(channels):
            self.blocks.append(YoloDetBlock(feats_c[i] + route_c, ch, f"yolo_block.{i}"))
            out_c = len(self.anchor_masks[i]) * (5 + num_classes)
            conv = nn.Conv2D(ch * 2, out_c, 1,
                             weight_attr=ParamAttr(name=f"yolo_output.{i}.conv.weights",
                                                   initializer=Normal(0., 0.01)),
                             bias_attr=ParamAttr(name=f"yolo_output.{i}.conv.bias",
                                                 initializer=Assign(self._prior_bias(out_c))))
            self.outputs.append(conv)
            if i < len(channels) - 1:
                self.transitions.append(ConvBNLayer(ch, ch // 2, 1, act="leaky",
                                                    name=f"yolo_transition.{i}",
                                                    scheme="dotted"))
                route_c = ch // 2

    def _prior_bias(self, out_c):
        """Start objectness and class logits at a low prior (p ~ 0.01): with zeros every
        cell claims an object at p = 0.5 and the first steps only unlearn that."""
        bias = np.zeros(out_c, "float32")
        per_anchor = 5 + self.num_classes
        for a in range(out_c // per_anchor):
            bias[a * per_anchor + 4:(a + 1) * per_anchor] = -4.6
        return bias

    def forward(self, feats):
        """Raw output maps, deepest level first."""
        outs, route = [], None
        for i, feat in enumerate(feats[::-1]):
            if route is not None:
                feat = paddle.concat([route, feat], axis=1)
            route, tip = self.blocks[i](feat)
            outs.append(self.outputs[i](tip))
            if i < len(self.transitions):
                route = self.upsample(self.transitions[i](route))
        return outs

    def get_loss(self, outs, inputs):
        return self.loss(outs, inputs, self.anchors, self.anchor_masks,
                         self.downsample_ratios, self.num_classes)
