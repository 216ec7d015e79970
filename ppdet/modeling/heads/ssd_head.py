"""SSD multi-box head: per feature map a loc conv (priors x 4) and a conf conv
(priors x (num_classes + 1), class 0 = background), plus the prior boxes.

Priors are a numpy constant computed once per set of feature-map sizes, in coordinates
normalised to the input: centres on the cell grid ((j + offset) / W), sizes in pixels of a
``base_size`` input (the fluid ``prior_box`` with its default steps, for a square input of
``base_size``). Static graphs (export) know the map sizes, so the constant traces too.
Prior order is (row, column, prior) per map, maps in order: the order of ``flatten``.
"""
import numpy as np
import paddle
import paddle.nn as nn
from paddle import ParamAttr
from paddle.nn.initializer import Constant, Normal

from ppdet.core.registry import HEADS
from ppdet.modeling.backbones.mobilenet_v1_ssd import fluid_name
from ppdet.modeling.losses.distill_loss import DistillSSDLoss

__all__ = ["SSDHead", "prior_shapes", "make_priors"]


def prior_shapes(min_size, max_size, aspect_ratios, flip):
    """(w, h) in pixels of the priors at one location: the square min-size box, the square
    sqrt(min * max) box when there is a max size, then one box per extra aspect ratio."""
    ratios = []
    for ar in aspect_ratios:
        for r in ((ar, 1. / ar) if flip else (ar,)):
            if abs(r - 1.) > 1e-6 and all(abs(r - q) > 1e-6 for q in ratios):
                ratios.append(r)
    shapes = [(min_size, min_size)]
    if max_size:
        s = float(np.sqrt(min_size * max_size))
        shapes.append((s, s))
    shapes += [(min_size * np.sqrt(r), min_size / np.sqrt(r)) for r in ratios]
    return shapes


def make_priors(feat_sizes, shapes_per_map, base_size, offset=0.5, clip=True):
    """[P, 4] float32 priors (x1, y1, x2, y2), normalised; ``feat_sizes`` [(h, w), ...]."""
    out = []
    for (fh, fw), shapes in zip(feat_sizes, shapes_per_map):
        cy, cx = np.meshgrid((np.arange(fh) + offset) / fh, (np.arange(fw) + offset) / fw,
                             indexing="ij")
        wh = np.array(shapes, np.float64) / base_size               # [A, 2]
        centre = np.stack([cx, cy], -1).reshape(-1, 1, 2)          # [H*W, 1, 2]
        boxes = np.concatenate([centre - wh / 2, centre + wh / 2], -1)
        out.append(boxes.reshape(-1, 4))
    priors = np.concatenate(out).astype("float32")
    return np.clip(priors, 0., 1.) if clip else priors


def _max_size(value):
    """A max size is a number, or [] (none) / [number] as the static-era configs wrote it."""
    if isinstance(value, (list, tuple)):
        return float(value[0]) if value else 0.
    return float(value or 0.)


@HEADS.register
class SSDHead(nn.Layer):
    __inject__ = ["loss"]
    distill_loss = DistillSSDLoss         # what a teacher of this head teaches with

    def __init__(self, num_classes=20, in_channels=(512, 1024, 512, 256, 256, 128),
                 min_sizes=(60, 105, 150, 195, 240, 285),
                 max_sizes=((), 150, 195, 240, 285, 300),
                 aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2, 3), (2, 3)),
                 base_size=300, flip=True, clip=True, offset=0.5,
                 variances=(0.1, 0.1, 0.2, 0.2), kernel_size=3, loss=None):
        super().__init__()
        n = len(in_channels)
        if not len(min_sizes) == len(max_sizes) == len(aspect_ratios) == n:
            raise ValueError(f"SSDHead: in_channels, min_sizes, max_sizes and aspect_ratios "
                             f"need one entry per feature map ({n})")
        self.num_classes = num_classes
        self.base_size = float(base_size)
        self.offset, self.clip = offset, clip
        self.variances = [float(v) for v in variances]
        self.loss = loss
        self.prior_shapes = [prior_shapes(float(lo), _max_size(hi), ar, flip)
                             for lo, hi, ar in zip(min_sizes, max_sizes, aspect_ratios)]
        self.num_priors = [len(s) for s in self.prior_shapes]
        self._priors = {}

        def conv(in_c, out_c):
            name = fluid_name("conv2d")
            return nn.Conv2D(in_c, out_c, kernel_size, padding=(kernel_size - 1) // 2,
                             weight_attr=ParamAttr(name=f"{name}.w_0",
                                                   initializer=Normal(0., 0.01)),
                             bias_attr=ParamAttr(name=f"{name}.b_0", initializer=Constant(0.)))

        # loc convs are numbered first, then conf convs, so the listing stays in order
        self.loc_convs = nn.LayerList([conv(c, a * 4) for c, a in
                                       zip(in_channels, self.num_priors)])
        self.conf_convs = nn.LayerList([conv(c, a * (num_classes + 1)) for c, a in
                                        zip(in_channels, self.num_priors)])

    def forward(self, feats):
        """Raw maps: the loc maps of every level, then the conf maps."""
        return ([conv(f) for conv, f in zip(self.loc_convs, feats)] +
                [conv(f) for conv, f in zip(self.conf_convs, feats)])

    def flatten(self, outs):
        """Raw maps -> loc [B, P, 4] and conf logits [B, P, num_classes + 1]."""
        n = len(self.loc_convs)

        def cat(maps, k):
            return paddle.concat([paddle.reshape(m.transpose([0, 2, 3, 1]), [0, -1, k])
                                  for m in maps], axis=1)

        return cat(outs[:n], 4), cat(outs[n:], self.num_classes + 1)

    def priors(self, outs):
        """Numpy priors [P, 4] for the map sizes of ``outs`` (cached per size)."""
        sizes = tuple((int(m.shape[2]), int(m.shape[3])) for m in outs[:len(self.loc_convs)])
        if sizes not in self._priors:
            self._priors[sizes] = make_priors(sizes, self.prior_shapes, self.base_size,
                                              self.offset, self.clip)
        return self._priors[sizes]

    def get_loss(self, outs, inputs):
        loc, conf = self.flatten(outs)
        return self.loss(loc, conf, self.priors(outs), self.variances, inputs["gt_bbox"],
                         inputs["gt_class"])
