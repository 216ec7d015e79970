"""Conv + BatchNorm + activation with explicit, stable parameter names.

Pruning tools key parameters by ``param.name``; automatic names depend on creation
order in the process, so every parameter here is named from the layer's name.
Two naming schemes are used by the static-era models users know:
``'underscore'``: ``conv2_1_sep_weights``, ``conv2_1_sep_bn_scale`` ... (MobileNetV1)
``'dotted'``: ``yolo_block.0.0.0.conv.weights``, ``yolo_block.0.0.0.bn.scale`` ... (YOLOv3,
DarkNet: ``stage.2.0.1.conv.weights``)
``'resnet'``: ``res2a_branch2a_weights``, ``bn2a_branch2a_scale`` ... ``conv1_weights``,
``bn_conv1_scale`` (the static-era / PaddleClas ResNet)
"""

import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddle import ParamAttr
from paddle.nn.initializer import Constant, KaimingNormal

__all__ = ["ConvBNLayer", "Upsample2x", "param_names"]


def param_names(name, scheme):
    if scheme == "underscore":
        return dict(weight=f"{name}_weights", scale=f"{name}_bn_scale",
                    offset=f"{name}_bn_offset", mean=f"{name}_bn_mean",
                    var=f"{name}_bn_variance")
    if scheme == "dotted":
        return dict(weight=f"{name}.conv.weights", scale=f"{name}.bn.scale",
                    offset=f"{name}.bn.offset", mean=f"{name}.bn.mean",
                    var=f"{name}.bn.var")
    if scheme == "resnet":
        bn = "bn_conv1" if name == "conv1" else "bn" + name[3:]
        return dict(weight=f"{name}_weights", scale=f"{bn}_scale", offset=f"{bn}_offset",
                    mean=f"{bn}_mean", var=f"{bn}_variance")
    raise ValueError(f"unknown naming scheme {scheme}")


class ConvBNLayer(nn.Layer):
    """Conv2D (no bias) -> BatchNorm -> activation ('relu', 'relu6', 'leaky', or None)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, groups=1,
                 act="relu", name="conv", scheme="underscore", padding=None):
        super().__init__()
        names = param_names(name, scheme)
        self.name = name
        self.act = act
        self.conv = nn.Conv2D(
            in_channels, out_channels, kernel_size, stride=stride,
            padding=(kernel_size - 1) // 2 if padding is None else padding, groups=groups,
            weight_attr=ParamAttr(name=names["weight"], initializer=KaimingNormal()),
            bias_attr=False)
        self.bn = nn.BatchNorm(
            out_channels, param_attr=ParamAttr(name=names["scale"], initializer=Constant(1.)),
            bias_attr=ParamAttr(name=names["offset"], initializer=Constant(0.)),
            moving_mean_name=names["mean"], moving_variance_name=names["var"])

    def forward(self, x):
        x = self.bn(self.conv(x))
        if self.act == "relu":
            x = F.relu(x)
        elif self.act == "relu6":
            x = F.relu6(x)
        elif self.act == "leaky":
            x = F.leaky_relu(x, 0.1)
        return x


class Upsample2x(nn.Layer):
    """Nearest 2x upsampling.

    ``interpolate`` is what the graph pruner knows how to walk through, and what export
    uses; ``repeat`` computes the same values with ops that a program compiled with oneDNN
    can run (its interpolate kernel rejects the scale attribute).
    """

    def __init__(self):
        super().__init__()
        self.mode = "interpolate"

    def forward(self, x):
        if self.mode == "repeat":
            return paddle.repeat_interleave(paddle.repeat_interleave(x, 2, axis=2), 2, axis=3)
        return F.interpolate(x, scale_factor=2., mode="nearest")


