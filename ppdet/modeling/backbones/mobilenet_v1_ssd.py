"""MobileNetV1 + SSD extra layers with the fluid-era automatic parameter names.

The fluid MobileNet-SSD demo (seed 001) left every name to Paddle's name generator:
``conv2d_{n}.w_0`` for regular convs, ``depthwise_conv2d_{n}.w_0`` for depthwise ones and
``batch_norm_{k}.w_0/.b_0/.w_1/.w_2`` (scale, offset, mean, variance), each kind numbered in
creation order. ``fluid_name`` reproduces that numbering with counters of Paddle's
``unique_name`` generator: ``build_model`` runs under a fresh ``unique_name.guard()``, so
every model numbers from 0 and the SSD head (built after the backbone) continues the count.
"""
import paddle.nn as nn
from paddle import ParamAttr
from paddle.nn.initializer import Constant, KaimingNormal
from paddle.utils import unique_name

from ppdet.core.registry import BACKBONES
from ppdet.modeling.backbones.mobilenet_v1 import _BLOCKS
from ppdet.modeling.layers import ConvBNLayer

__all__ = ["MobileNetV1SSD", "FluidConvBN", "fluid_name"]


def fluid_name(kind):
    """Next ``{kind}_{n}`` (kind: conv2d, depthwise_conv2d, batch_norm). The counter key is
    private so that layers' own full names (which use ``conv2d`` too) do not advance it."""
    return f"{kind}_{unique_name.generate(f'__fluid_param_{kind}').rsplit('_', 1)[1]}"


class FluidConvBN(ConvBNLayer):
    """A ``ConvBNLayer`` (same forward) with fluid-style names.

    ``ConvBNLayer.__init__`` only knows the static-era name schemes, so the same sublayers
    (``conv``, ``bn``) are built here instead of calling it.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, groups=1, act="relu"):
        nn.Layer.__init__(self)
        kind = "depthwise_conv2d" if groups > 1 and groups == in_channels else "conv2d"
        conv_name, bn_name = fluid_name(kind), fluid_name("batch_norm")
        self.name = conv_name
        self.act = act
        self.conv = nn.Conv2D(
            in_channels, out_channels, kernel_size, stride=stride,
            padding=(kernel_size - 1) // 2, groups=groups,
            weight_attr=ParamAttr(name=f"{conv_name}.w_0", initializer=KaimingNormal()),
            bias_attr=False)
        self.bn = nn.BatchNorm(
            out_channels,
            param_attr=ParamAttr(name=f"{bn_name}.w_0", initializer=Constant(1.)),
            bias_attr=ParamAttr(name=f"{bn_name}.b_0", initializer=Constant(0.)),
            moving_mean_name=f"{bn_name}.w_1", moving_variance_name=f"{bn_name}.w_2")


class _Separable(nn.Layer):
    def __init__(self, in_c, out_c, stride):
        super().__init__()
        self.dw = FluidConvBN(in_c, in_c, 3, stride=stride, groups=in_c)
        self.pw = FluidConvBN(in_c, out_c, 1)

    def forward(self, x):
        return self.pw(self.dw(x))


class _ExtraBlock(nn.Layer):
    """1x1 conv (squeeze) then 3x3 stride-2 conv: halves the map for the next SSD level."""

    def __init__(self, in_c, mid_c, out_c, act="relu"):
        super().__init__()
        self.squeeze = FluidConvBN(in_c, mid_c, 1, act=act)
        self.down = FluidConvBN(mid_c, out_c, 3, stride=2, act=act)

    def forward(self, x):
        return self.down(self.squeeze(x))


@BACKBONES.register
class MobileNetV1SSD(nn.Layer):
    """Returns the maps after the blocks in ``feature_maps`` (default conv5_5, stride 16,
    and conv6, stride 32, as the fluid demo), then one per extra block.

    ``extra_block_filters``: [1x1 filters, 3x3 filters] per extra block, used as given
    (not multiplied by ``scale``: write scaled values in a config for a narrow model).
    Small objects want a stride-8 map too: ``feature_maps: [conv4_1, conv5_5, conv6]``.
    ``extra_act``: the extra blocks' activation; PaddleDetection's MobileNet-SSD (static era
    and 2.x) uses ``relu6`` there, so set it to run PaddleDetection's weights exactly.
    """

    def __init__(self, scale=1.0, extra_block_filters=((256, 512), (128, 256), (128, 256),
                                                        (64, 128)),
                 feature_maps=("conv5_5", "conv6"), extra_act="relu"):
        super().__init__()
        c = lambda n: max(int(n * scale), 1)
        self.conv1 = FluidConvBN(3, c(32), 3, stride=2)
        self.blocks = nn.LayerList()
        in_c = c(32)
        self.out_channels = []
        self._taps = set()
        names = [name for name, _, _ in _BLOCKS]
        unknown = [f for f in feature_maps if f not in names]
        if unknown:
            raise ValueError(f"MobileNetV1SSD has no block {unknown[0]}; blocks: "
                             f"{', '.join(names)}")
        for i, (name, out, stride) in enumerate(_BLOCKS):
            self.blocks.append(_Separable(in_c, c(out), stride))
            in_c = c(out)
            if name in feature_maps:
                self._taps.add(i)
                self.out_channels.append(in_c)
        self.extras = nn.LayerList()
        for mid, out in extra_block_filters:
            self.extras.append(_ExtraBlock(in_c, int(mid), int(out), act=extra_act))
            in_c = int(out)
            self.out_channels.append(in_c)

    def forward(self, x):
        x = self.conv1(x)
        feats = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self._taps:
                feats.append(x)
        for block in self.extras:
            x = block(x)
            feats.append(x)
        return feats
