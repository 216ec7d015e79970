"""MobileNetV1 with a width multiplier and the static-era parameter names.

Names: ``conv1_weights``, then for each block ``conv{s}_{i}_dw_weights`` (depthwise
3x3) and ``conv{s}_{i}_sep_weights`` (pointwise 1x1), ``conv6_*`` last; BN parameters
``<conv>_bn_scale/_offset/_mean/_variance``.
"""
import paddle.nn as nn

from ppdet.core.registry import BACKBONES
from ppdet.modeling.layers import ConvBNLayer

__all__ = ["MobileNetV1", "TappedBackbone"]

# (name, out_channels at width 1.0, stride of the depthwise conv)
_BLOCKS = [("conv2_1", 64, 1), ("conv2_2", 128, 2), ("conv3_1", 128, 1),
           ("conv3_2", 256, 2), ("conv4_1", 256, 1), ("conv4_2", 512, 2),
           ("conv5_1", 512, 1), ("conv5_2", 512, 1), ("conv5_3", 512, 1),
           ("conv5_4", 512, 1), ("conv5_5", 512, 1), ("conv5_6", 1024, 2),
           ("conv6", 1024, 1)]


class DepthwiseSeparable(nn.Layer):
    def __init__(self, in_c, out_c, stride, name):
        super().__init__()
        self.dw = ConvBNLayer(in_c, in_c, 3, stride=stride, groups=in_c,
                              name=f"{name}_dw")
        self.sep = ConvBNLayer(in_c, out_c, 1, name=f"{name}_sep")

    def forward(self, x):
        return self.sep(self.dw(x))


class TappedBackbone(nn.Layer):
    """Stem, then blocks in order; returns the outputs of the blocks in ``feature_maps``.
    Subclasses set ``conv1``, ``blocks``, ``block_names`` and ``feature_maps``."""

    def forward(self, x):
        x = self.conv1(x)
        feats = []
        for name, block in zip(self.block_names, self.blocks):
            x = block(x)
            if name in self.feature_maps:
                feats.append(x)
        return feats


@BACKBONES.register
class MobileNetV1(TappedBackbone):
    """Returns the feature maps after the blocks named in ``feature_maps``.

    YOLOv3 uses strides 8/16/32: ``conv4_1``, ``conv5_5`` and ``conv6``.
    """

    def __init__(self, scale=1.0, feature_maps=("conv4_1", "conv5_5", "conv6")):
        super().__init__()
        self.scale = scale
        c = lambda n: max(int(n * scale), 1)
        self.conv1 = ConvBNLayer(3, c(32), 3, stride=2, name="conv1")
        self.blocks = nn.LayerList()
        self.block_names = []
        in_c = c(32)
        for name, out, stride in _BLOCKS:
            self.blocks.append(DepthwiseSeparable(in_c, c(out), stride, name))
            self.block_names.append(name)
            in_c = c(out)
        unknown = [f for f in feature_maps if f not in self.block_names]
        if unknown:
            raise ValueError(f"MobileNetV1 has no block {unknown[0]}; blocks: "
                             f"{', '.join(self.block_names)}")
        self.feature_maps = list(feature_maps)
        self.out_channels = [c(dict((n, o) for n, o, _ in _BLOCKS)[f]) for f in feature_maps]

    def paddledet_conv_order(self):
        """Conv weight names in PaddleDetection 2.x's creation order (its ``conv2d_{n}``
        names): the network order, depthwise before pointwise."""
        return [self.conv1.conv.weight.name] + [
            m.conv.weight.name for b in self.blocks if isinstance(b, DepthwiseSeparable)
            for m in (b.dw, b.sep)]
