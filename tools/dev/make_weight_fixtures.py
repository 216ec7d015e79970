"""Regenerate tests/fixtures/weights/ with PaddleDetection 2.x and PaddleClas 2.x themselves.

NOT run by the tests, and NOT runnable in the project's own venv: it needs the real
packages, installed in a throwaway virtualenv outside the repository, e.g.

    python3 -m venv /tmp/pdvenv
    /tmp/pdvenv/bin/pip install paddlepaddle==3.3.1 paddledet==2.6.0 numpy==1.23.5 scikit-learn
    /tmp/pdvenv/bin/pip install --no-deps paddleclas==2.6.0   # its pins clash with paddledet's
    cd /tmp && /tmp/pdvenv/bin/python /work/main/tools/dev/make_weight_fixtures.py \
        --out /work/main/tests/fixtures/weights

(run it from outside the repository: the installed ``paddledet`` package is also called
``ppdet``). Each model gets random weights (BN statistics too), is saved with
``paddle.save(model.state_dict())`` exactly as the released files are, and its raw head
outputs on a fixed input are stored next to it (``*_io.npz``) so the tests can check that
our conversion reproduces them.

Shims (the packages' own layers are used; only their sizes are changed):
- PaddleDetection's ``YOLOv3FPN`` hard-codes 512/256/128 route channels; the fixture builds
  the same sub-layers (its ``YoloDetBlock`` / ``ConvBNLayer``, same names) with
  ``--yolo_base`` channels so the file stays small. Key names and forward are the package's.
- PaddleDetection's ``MobileNet`` gives its first SSD extra block 1024 input channels
  whatever ``scale`` is; the SSD fixture builds the extra blocks with the real input width.
- PaddleClas ``MobileNetV2`` is only saved as key -> shape (x1.0 is 14 MB); the tests fill
  those keys with random values.
"""
import argparse
import json
import os
import zlib

import numpy as np
import paddle


def draw(key, shape, rng):
    """Random values for one tensor, by its kind (BN statistics, conv kernel, the rest)."""
    if key.endswith("_variance"):
        arr = rng.uniform(0.5, 1.5, shape)
    elif key.endswith("_mean"):
        arr = rng.normal(0, 0.1, shape)
    elif len(shape) == 4:
        arr = rng.normal(0, np.sqrt(2.0 / int(np.prod(shape[1:]))), shape)
    else:
        arr = rng.normal(0, 0.1, shape) + (1.0 if key.endswith(".weight") else 0.0)
    return arr.astype("float32")


def keyed_values(key, shape):
    """Deterministic values for one tensor from its key alone (the tests use the same)."""
    return draw(key, shape, np.random.RandomState(zlib.crc32(key.encode()) & 0x7FFFFFFF))


def randomise(model, seed):
    rng = np.random.RandomState(seed)
    for key, value in model.state_dict().items():
        value.set_value(draw(key, list(value.shape), rng))
    model.eval()


def small_fpn(in_channels, base):
    """YOLOv3FPN with ``base`` instead of 512 route channels (shim: size only)."""
    from ppdet.modeling.necks.yolo_fpn import ConvBNLayer, YoloDetBlock, YOLOv3FPN

    class SmallFPN(YOLOv3FPN):
        def __init__(self):
            paddle.nn.Layer.__init__(self)
            self.in_channels, self.num_blocks = in_channels, len(in_channels)
            self._out_channels, self.yolo_blocks, self.routes = [], [], []
            self.data_format = "NCHW"
            for i in range(self.num_blocks):
                ch = base // (2 ** i)
                in_c = in_channels[-i - 1] + (ch if i > 0 else 0)
                name = f"yolo_block.{i}"
                self.yolo_blocks.append(self.add_sublayer(
                    name, YoloDetBlock(in_c, channel=ch, norm_type="bn", name=name)))
                self._out_channels.append(ch * 2)
                if i < self.num_blocks - 1:
                    name = f"yolo_transition.{i}"
                    self.routes.append(self.add_sublayer(name, ConvBNLayer(
                        ch_in=ch, ch_out=ch // 2, filter_size=1, stride=1, padding=0,
                        norm_type="bn", name=name)))
    return SmallFPN()


def save(model, path):
    paddle.save(model.state_dict(), path)
    print(f"{path}: {len(model.state_dict())} tensors, {os.path.getsize(path) / 1e6:.2f} MB")


def yolov3_fixture(out, name, backbone, in_channels, base, num_classes, seeds, size):
    """A PaddleDetection 2.x YOLOv3 (the package's attribute names) from ``backbone`` (a
    callable making it), a :func:`small_fpn` and its head, randomised with ``seeds[0]``,
    saved as ``name.pdparams`` with its raw outputs on a ``size`` px input drawn with
    ``seeds[1]`` (``name_io.npz``)."""
    from ppdet.modeling.heads.yolo_head import YOLOv3Head

    class Det(paddle.nn.Layer):   # the attribute names of ppdet's YOLOv3 architecture
        def __init__(self):
            super().__init__()
            self.backbone = backbone()
            self.neck = small_fpn(in_channels, base)
            self.yolo_head = YOLOv3Head(in_channels=self.neck._out_channels,
                                        num_classes=num_classes, loss=None)

        def forward(self, x):
            return self.yolo_head(self.neck(self.backbone({"image": x})))

    paddle.seed(0)
    model = Det()
    randomise(model, seeds[0])
    x = np.random.RandomState(seeds[1]).uniform(-1, 1, (2, 3, size, size)).astype("float32")
    outs = [o.numpy() for o in model(paddle.to_tensor(x))]
    save(model, os.path.join(out, name + ".pdparams"))
    np.savez(os.path.join(out, name + "_io.npz"), image=x,
             **{f"out{i}": o for i, o in enumerate(outs)})


def yolov3(out, base, num_classes):
    from ppdet.modeling.backbones.mobilenet_v1 import MobileNet
    yolov3_fixture(out, f"det2x_yolov3_mobilenet_v1_x0_25_c{num_classes}",
                   lambda: MobileNet(scale=0.25, feature_maps=[4, 6, 13]), [64, 128, 256],
                   base, num_classes, seeds=(1, 2), size=96)


def ssd(out, num_classes):
    from ppdet.modeling.backbones.mobilenet_v1 import ExtraBlock, MobileNet
    from ppdet.modeling.heads.ssd_head import SSDHead
    from ppdet.modeling.layers import AnchorGeneratorSSD

    extra = [[32, 64], [32, 64]]

    class Det(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.backbone = MobileNet(scale=0.25, feature_maps=[11, 13, 14, 15],
                                      with_extra_blocks=False)
            # shim: MobileNet builds the first extra block for 1024 inputs at any scale
            self.backbone.with_extra_blocks, self.backbone.extra_blocks = True, []
            in_c = 256
            for i, (mid, o) in enumerate(extra):
                self.backbone.extra_blocks.append(self.backbone.add_sublayer(
                    f"conv7_{i + 1}", ExtraBlock(in_c, mid, o, name=f"conv7_{i + 1}")))
                in_c = o
            anchors = AnchorGeneratorSSD(
                steps=[0, 0, 0, 0], aspect_ratios=[[2.], [2., 3.], [2., 3.], [2., 3.]],
                min_sizes=[60., 105., 150., 195.], max_sizes=[[], 150., 195., 240.],
                offset=0.5, flip=True, clip=True, min_max_aspect_ratios_order=False)
            self.ssd_head = SSDHead(num_classes=num_classes, in_channels=[128, 256, 64, 64],
                                    anchor_generator=anchors, kernel_size=1, padding=0,
                                    loss=None)

        def forward(self, x):
            feats = self.backbone({"image": x})
            head = self.ssd_head
            return ([b(f) for b, f in zip(head.box_convs, feats)] +
                    [s(f) for s, f in zip(head.score_convs, feats)])

    paddle.seed(0)
    model = Det()
    randomise(model, 3)
    x = np.random.RandomState(4).uniform(-1, 1, (2, 3, 160, 160)).astype("float32")
    outs = [o.numpy() for o in model(paddle.to_tensor(x))]
    # the package's own priors for these maps: they fix which output channel is which prior
    feats = model.backbone({"image": paddle.to_tensor(x)})
    priors = model.ssd_head.anchor_generator(feats, paddle.to_tensor(x))
    outs += [p.numpy() for p in priors]
    name = f"det2x_ssd_mobilenet_v1_x0_25_c{num_classes}"
    save(model, os.path.join(out, name + ".pdparams"))
    np.savez(os.path.join(out, name + "_io.npz"), image=x,
             **{f"out{i}": o for i, o in enumerate(outs[:8])},
             **{f"prior{i}": p for i, p in enumerate(outs[8:])})


def _paddleclas_without_init():
    """Shim: ``paddleclas/__init__`` imports its whole CLI (prettytable, faiss, ...); the
    model files need none of it, so register the package without running it."""
    import importlib.util
    import sys
    import types
    spec = importlib.util.find_spec("paddleclas")
    pkg = types.ModuleType("paddleclas")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules.setdefault("paddleclas", pkg)
    from paddleclas.ppcls.utils import logger  # its logger must be initialised first
    logger.init_logger()


def clas(out):
    _paddleclas_without_init()
    from paddleclas.ppcls.arch.backbone.legendary_models.mobilenet_v1 import MobileNetV1_x0_25
    from paddleclas.ppcls.arch.backbone.model_zoo.mobilenet_v2 import MobileNetV2

    paddle.seed(0)
    model = MobileNetV1_x0_25(class_num=10)
    randomise(model, 5)
    x = np.random.RandomState(6).uniform(-1, 1, (2, 3, 64, 64)).astype("float32")
    feats, y = {}, model.conv(paddle.to_tensor(x))
    for i, block in enumerate(model.blocks):
        y = block(y)
        if i in (4, 10, 12):          # conv4_1, conv5_5, conv6
            feats[f"feat{i}"] = y.numpy()
    save(model, os.path.join(out, "clas2x_mobilenet_v1_x0_25.pdparams"))
    np.savez(os.path.join(out, "clas2x_mobilenet_v1_x0_25_io.npz"), image=x, **feats)

    v2 = MobileNetV2(class_num=1000)
    keys = {k: list(v.shape) for k, v in v2.state_dict().items()}
    path = os.path.join(out, "clas2x_mobilenet_v2_x1_0_keys.json")
    with open(path, "w") as f:
        json.dump(keys, f, indent=0)
    print(f"{path}: {len(keys)} keys")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--yolo_base", type=int, default=32)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    yolov3(args.out, args.yolo_base, num_classes=4)
    clas(args.out)
    ssd(args.out, num_classes=4)


if __name__ == "__main__":
    main()
