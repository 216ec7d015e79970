"""MobileNetV2 (inverted residuals with shortcuts) with a width multiplier.

Names follow the PaddleClas scheme: ``conv1_1_weights`` for the stem, then per block
``conv{stage}_{i}_expand`` (1x1), ``_dwise`` (depthwise 3x3) and ``_linear`` (1x1
projection, no activation); BN parameters ``<conv>_bn_scale/_offset/_mean/_variance``.
The layout is the paper's (no expansion conv when t = 1, widths rounded to multiples of 8),
not PaddleClas's: its ImageNet weights load as pretrain_weights at width 1.0 except that
expansion conv and its final 1x1 conv (ppdet/engine/weights.py). A block whose input and output
shapes match adds its input back (the shortcut that slimming ties and layer pruning removes).
"""
import paddle.nn as nn

from ppdet.core.registry import BACKBONES
from ppdet.modeling.backbones.mobilenet_v1 import TappedBackbone
from ppdet.modeling.layers import ConvBNLayer

__all__ = ["MobileNetV2", "InvertedResidual"]

# (expansion t, out channels at width 1.0, repeats n, stride of the first repeat)
_STAGES = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
           (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def make_divisible(value, divisor=8):
    """Round to a multiple of ``divisor``, never more than 10% below ``value``."""
    out = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * value else out


class InvertedResidual(nn.Layer):
    def __init__(self, in_c, out_c, stride, expand, name):
        super().__init__()
        hidden = in_c * expand
        self.use_shortcut = stride == 1 and in_c == out_c
        self.expand = (ConvBNLayer(in_c, hidden, 1, act="relu6", name=f"{name}_expand")
                       if expand != 1 else None)
        self.dwise = ConvBNLayer(hidden, hidden, 3, stride=stride, groups=hidden, act="relu6",
                                 name=f"{name}_dwise")
        self.linear = ConvBNLayer(hidden, out_c, 1, act=None, name=f"{name}_linear")

    @property
    def add_bn(self):
        """The BN whose output is added to the input (no activation between)."""
        return self.linear.bn

    def forward(self, x):
        y = self.expand(x) if self.expand is not None else x
        y = self.linear(self.dwise(y))
        return x + y if self.use_shortcut else y


@BACKBONES.register
class MobileNetV2(TappedBackbone):
    """Returns the outputs of the blocks named in ``feature_maps`` (YOLOv3 uses strides
    8/16/32: ``conv4_3``, ``conv6_3`` and ``conv8_1``)."""

    def __init__(self, scale=1.0, feature_maps=("conv4_3", "conv6_3", "conv8_1")):
        super().__init__()
        self.scale = scale
        in_c = make_divisible(32 * scale)
        self.conv1 = ConvBNLayer(3, in_c, 3, stride=2, act="relu6", name="conv1_1")
        self.blocks = nn.LayerList()
        self.block_names, channels = [], {}
        for s, (t, c, n, stride) in enumerate(_STAGES):
            out_c = make_divisible(c * scale)
            for i in range(n):
                name = f"conv{s + 2}_{i + 1}"
                self.blocks.append(InvertedResidual(in_c, out_c, stride if i == 0 else 1, t,
                                                    name))
                self.block_names.append(name)
                channels[name] = in_c = out_c
        unknown = [f for f in feature_maps if f not in channels]
        if unknown:
            raise ValueError(f"MobileNetV2 has no block {unknown[0]}; blocks: "
                             f"{', '.join(self.block_names)}")
        self.feature_maps = list(feature_maps)
        self.out_channels = [channels[f] for f in feature_maps]
