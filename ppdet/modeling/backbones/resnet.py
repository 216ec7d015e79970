"""ResNet-18/34 (basic blocks) for YOLOv3, with a width multiplier and the static-era names.

Layout (variant ``b``, as PaddleDetection's YOLOv3-ResNet34 in both eras): a 7x7 stride-2
``conv1`` and a 3x3 stride-2 max pool, then stages ``res2`` .. ``res5`` of basic blocks
``res{s}{a,b,..}``: 3x3 ``_branch2a`` (stride 2 in the first block of res3..res5, ReLU),
3x3 ``_branch2b`` (no activation), added to the input, then ReLU. The first block of every
stage has a 1x1 projection ``_branch1`` on its shortcut (res2a too, as both eras have).
Names: ``res3b_branch2a_weights``, BN ``bn3b_branch2a_scale/_offset/_mean/_variance``,
``conv1_weights`` / ``bn_conv1_*`` (the names of PaddleClas's static ImageNet weights).

Hyperparameters follow PaddleDetection 2.x (``depth``, ``variant``, ``return_idx``,
``freeze_at``, ``num_stages``, ``norm_type``); ``width`` and ``stage_counts`` make the tiny
test models.
"""
import paddle.nn as nn
import paddle.nn.functional as F

from ppdet.core.errors import ConfigError
from ppdet.core.registry import BACKBONES
from ppdet.modeling.backbones.darknet import freeze
from ppdet.modeling.backbones.mobilenet_v1 import TappedBackbone
from ppdet.modeling.layers import ConvBNLayer

__all__ = ["ResNet", "BasicBlock", "RESNET_STAGES"]

RESNET_STAGES = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3]}
_CHANNELS = [64, 128, 256, 512]


def _conv(in_c, out_c, k, name, stride=1, act="relu"):
    return ConvBNLayer(in_c, out_c, k, stride=stride, act=act, name=name, scheme="resnet")


class BasicBlock(nn.Layer):
    """``relu(short(x) + branch2b(branch2a(x)))``; ``short`` is the input itself unless the
    block has a projection (``use_shortcut`` then False: it cannot be removed)."""

    def __init__(self, in_c, out_c, stride, project, name):
        super().__init__()
        # created in PaddleDetection 2.x's order (projection first): its conv2d_{n} names
        self.short = _conv(in_c, out_c, 1, f"{name}_branch1", stride, act=None) \
            if project else None
        self.branch2a = _conv(in_c, out_c, 3, f"{name}_branch2a", stride)
        self.branch2b = _conv(out_c, out_c, 3, f"{name}_branch2b", act=None)
        self.use_shortcut = not project
        self.add_act = "relu"             # after the add (FLOPs counts it)

    @property
    def add_bn(self):
        return self.branch2b.bn

    def forward(self, x):
        short = x if self.short is None else self.short(x)
        return F.relu(short + self.branch2b(self.branch2a(x)))   # add_act


class Stem(nn.Layer):
    def __init__(self, out_c):
        super().__init__()
        self.conv = _conv(3, out_c, 7, "conv1", stride=2)
        self.pool = nn.MaxPool2D(3, stride=2, padding=1)

    def forward(self, x):
        return self.pool(self.conv(x))


@BACKBONES.register
class ResNet(TappedBackbone):
    """Returns the outputs of the stages in ``return_idx`` (0 = res2; YOLOv3: 1, 2, 3,
    strides 8/16/32). ``freeze_at`` = i freezes the stem and stages 0..i (-1: nothing)."""

    def __init__(self, depth=34, variant="b", return_idx=(1, 2, 3), freeze_at=-1,
                 num_stages=4, norm_type="bn", width=1.0, stage_counts=None):
        super().__init__()
        if stage_counts is None and depth not in RESNET_STAGES:
            raise ConfigError(f"ResNet.depth {depth} is not supported: basic-block depths "
                              f"are {sorted(RESNET_STAGES)} (or give stage_counts)")
        if variant != "b":
            raise ConfigError(f"ResNet.variant '{variant}' is not supported: use 'b' (what "
                              f"YOLOv3-ResNet34 uses)")
        if norm_type != "bn":
            raise ConfigError(f"ResNet.norm_type '{norm_type}' is not supported: use 'bn'")
        counts = list(stage_counts or RESNET_STAGES[depth])[:num_stages]
        bad = [i for i in return_idx if not 0 <= i < len(counts)]
        if bad:
            raise ConfigError(f"ResNet.return_idx {bad[0]} is outside the {len(counts)} "
                              f"stages (0..{len(counts) - 1})")
        self.depth, self.variant, self.width = depth, variant, width
        self.return_idx, self.stage_counts = list(return_idx), counts
        c = lambda n: max(int(n * width), 1)
        self.conv1 = Stem(c(64))
        self.blocks = nn.LayerList()
        self.block_names = []
        in_c, stage_of = c(64), []
        for s, n in enumerate(counts):
            for j in range(n):
                name = f"res{s + 2}{chr(ord('a') + j)}"
                self.blocks.append(BasicBlock(in_c, c(_CHANNELS[s]), 2 if j == 0 and s else 1,
                                              j == 0, name))
                self.block_names.append(name)
                stage_of.append(s)
                in_c = c(_CHANNELS[s])
        self.feature_maps = [f"res{i + 2}{chr(ord('a') + counts[i] - 1)}" for i in return_idx]
        self.out_channels = [c(_CHANNELS[i]) for i in return_idx]
        if freeze_at >= 0:
            freeze([self.conv1] + [b for b, s in zip(self.blocks, stage_of) if s <= freeze_at])

    def paddledet_conv_order(self):
        """Conv weight names in PaddleDetection 2.x's creation order (its ``conv2d_{n}``)."""
        out = [self.conv1.conv.conv.weight.name]
        for block in self.blocks:
            if isinstance(block, BasicBlock):
                out += [m.conv.weight.name for m in (block.short, block.branch2a,
                                                     block.branch2b) if m is not None]
        return out
