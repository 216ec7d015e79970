"""DarkNet-53 (YOLOv3's backbone) with a width multiplier and the static-era names.

Layout (PaddleDetection's, both eras): a 3x3 stem (``yolo_input``, 32 channels, stride 1),
a 3x3 stride-2 downsample (``yolo_input.downsample``), then five stages of residual blocks
(``stage.{i}.{j}``: 1x1 conv halving the channels (``.0``), 3x3 conv restoring them
(``.1``), input added back), stages separated by 3x3 stride-2 downsamples
(``stage.{i}.downsample``). Every conv is followed by BN and leaky ReLU (0.1). Parameter
names are the static era's: ``stage.2.3.1.conv.weights``, ``stage.2.3.1.bn.scale`` ...

Hyperparameters follow PaddleDetection 2.x (``depth``, ``freeze_at``, ``return_idx``,
``num_stages``, ``norm_type``); ``width`` and ``stage_counts`` make the tiny test models.
"""
import paddle.nn as nn

from ppdet.core.errors import ConfigError
from ppdet.core.registry import BACKBONES
from ppdet.modeling.backbones.mobilenet_v1 import TappedBackbone
from ppdet.modeling.layers import ConvBNLayer

__all__ = ["DarkNet", "DarkBlock", "DARKNET_STAGES"]

DARKNET_STAGES = {53: [1, 2, 8, 8, 4]}
_CHANNELS = [64, 128, 256, 512, 1024]     # stage widths at width 1.0


def _leaky(in_c, out_c, k, name, stride=1):
    return ConvBNLayer(in_c, out_c, k, stride=stride, act="leaky", name=name, scheme="dotted")


class DarkBlock(nn.Layer):
    """``x + conv2(conv1(x))``: 1x1 to half the channels, 3x3 back."""
    use_shortcut = True
    branch_act = "leaky"             # between ``add_bn`` and the add

    def __init__(self, channels, name):
        super().__init__()
        self.conv1 = _leaky(channels, channels // 2, 1, f"{name}.0")
        self.conv2 = _leaky(channels // 2, channels, 3, f"{name}.1")

    @property
    def add_bn(self):
        """The BN whose output (after the activation) is added to the input."""
        return self.conv2.bn

    def forward(self, x):
        return x + self.conv2(self.conv1(x))


def freeze(layers):
    for layer in layers:
        for p in layer.parameters():
            p.stop_gradient = True


@BACKBONES.register
class DarkNet(TappedBackbone):
    """Returns the outputs of the stages in ``return_idx`` (YOLOv3: 2, 3, 4, strides
    8/16/32). ``freeze_at`` = i freezes the stem and stages 0..i (-1: nothing)."""

    def __init__(self, depth=53, freeze_at=-1, return_idx=(2, 3, 4), num_stages=5,
                 norm_type="bn", width=1.0, stage_counts=None):
        super().__init__()
        if norm_type != "bn":
            raise ConfigError(f"DarkNet.norm_type '{norm_type}' is not supported: use 'bn' "
                              f"(sync_bn is bn on one device)")
        if stage_counts is None and depth not in DARKNET_STAGES:
            raise ConfigError(f"DarkNet.depth {depth} is not supported: use 53 (or give "
                              f"stage_counts)")
        counts = list(stage_counts or DARKNET_STAGES[depth])[:num_stages]
        bad = [i for i in return_idx if not 0 <= i < len(counts)]
        if bad:
            raise ConfigError(f"DarkNet.return_idx {bad[0]} is outside the "
                              f"{len(counts)} stages (0..{len(counts) - 1})")
        self.depth, self.width, self.return_idx = depth, width, list(return_idx)
        self.stage_counts = counts
        c = lambda n: max(int(n * width) // 2 * 2, 2)
        self.conv1 = _leaky(3, c(32), 3, "yolo_input")
        self.blocks = nn.LayerList()
        self.block_names, stage_of = [], []
        self._add(_leaky(c(32), c(64), 3, "yolo_input.downsample", stride=2),
                  "yolo_input.downsample", -1, stage_of)
        for i, n in enumerate(counts):
            for j in range(n):
                self._add(DarkBlock(c(_CHANNELS[i]), f"stage.{i}.{j}"), f"stage.{i}.{j}", i,
                          stage_of)
            if i < len(counts) - 1:
                name = f"stage.{i}.downsample"
                self._add(_leaky(c(_CHANNELS[i]), c(_CHANNELS[i + 1]), 3, name, stride=2),
                          name, i, stage_of)
        self.feature_maps = [f"stage.{i}.{counts[i] - 1}" for i in return_idx]
        self.out_channels = [c(_CHANNELS[i]) for i in return_idx]
        if freeze_at >= 0:
            freeze([self.conv1] + [b for b, s in zip(self.blocks, stage_of)
                                   if s <= freeze_at and not (s == freeze_at and
                                                              not isinstance(b, DarkBlock))])

    def _add(self, layer, name, stage, stage_of):
        self.blocks.append(layer)
        self.block_names.append(name)
        stage_of.append(stage)

    def paddledet_conv_order(self):
        """Conv weight names in the order PaddleDetection 2.x creates them (its automatic
        ``conv2d_{n}.w_0`` names): stem, first downsample, every stage's blocks, then the
        downsamples between stages."""
        convs = [self.conv1.conv.weight.name]
        downs = []
        for name, block in zip(self.block_names, self.blocks):
            if isinstance(block, DarkBlock):
                convs += [block.conv1.conv.weight.name, block.conv2.conv.weight.name]
            elif isinstance(block, ConvBNLayer):
                (convs if name == "yolo_input.downsample" else downs).append(
                    block.conv.weight.name)
        return convs + downs
