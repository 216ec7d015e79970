"""Regenerate the DarkNet / ResNet fixtures of tests/fixtures/weights/ with PaddleDetection 2.x
and PaddleClas 2.x themselves.

NOT run by the tests, and NOT runnable in the project's own venv: it needs the real packages,
installed in a throwaway virtualenv outside the repository (as tools/dev/make_weight_fixtures.py
says), then, from outside the repository (the installed ``paddledet`` is also ``ppdet``):

    cd /tmp && /tmp/fixvenv/bin/python /work/main/tools/dev/make_backbone_fixtures.py \\
        --out /work/main/tests/fixtures/weights

Written:
- ``det2x_yolov3_darknet_tiny_c4.pdparams`` + ``_io.npz``: PaddleDetection's YOLOv3 with its
  own ``DarkNet`` sub-layers (``ConvBNLayer``, ``DownSample``, ``Blocks``) at 1/8 width and
  stage counts [1, 2, 2, 1, 1] (shim: 2.x hard-codes the widths and counts; names, order and
  forward are the package's), its ``YoloDetBlock``s with 32/16/8 route channels, its head.
- ``det2x_yolov3_r18_tiny_c4.pdparams`` + ``_io.npz``: the same with its ``ResNet`` sub-layers
  (``ConvNormLayer`` stem, ``Blocks`` of ``BasicBlock``) at 1/8 width, depth 18.
- ``*_keys.json`` (key -> shape, no values: the full models are 40-250 MB): PaddleDetection's
  full YOLOv3-DarkNet53 (80 classes) and ResNet34, PaddleClas's DarkNet53 and ResNet34.
- ``clas2x_resnet34_io.npz`` / ``clas2x_darknet53_io.npz``: PaddleClas's full backbones filled
  by :func:`keyed_values` (the tests recompute the same values from the key names) and their
  features on a fixed 64 px input (res3d/res4f/res5c; stage 2/3/4 ends).
"""
import argparse
import json
import os

import numpy as np
import paddle
from make_weight_fixtures import (  # noqa: E402
    _paddleclas_without_init,
    keyed_values,
    yolov3_fixture,
)


def _keys(model, path):
    keys = {k: list(v.shape) for k, v in model.state_dict().items()}
    with open(path, "w") as f:
        json.dump(keys, f, indent=0)
    print(f"{path}: {len(keys)} keys")


def _tiny_darknet():
    from ppdet.modeling.backbones.darknet import Blocks, ConvBNLayer, DarkNet, DownSample

    class TinyDarkNet(DarkNet):
        """DarkNet.__init__'s sub-layers with 1/8 widths and other stage counts (shim)."""

        def __init__(self, counts=(1, 2, 2, 1, 1), w=8):
            paddle.nn.Layer.__init__(self)
            self.depth, self.freeze_at, self.return_idx = 53, -1, [2, 3, 4]
            self.num_stages, self.stages = 5, list(counts)
            self.conv0 = ConvBNLayer(ch_in=3, ch_out=32 // w, filter_size=3, stride=1,
                                     padding=1)
            self.downsample0 = DownSample(ch_in=32 // w, ch_out=64 // w)
            ch_in = [c // w for c in (64, 128, 256, 512, 1024)]
            self._out_channels, self.darknet_conv_block_list, self.downsample_list = [], [], []
            for i, stage in enumerate(self.stages):
                name = f"stage.{i}"
                self.darknet_conv_block_list.append(self.add_sublayer(
                    name, Blocks(ch_in[i], ch_in[i], stage, name=name)))
                if i in self.return_idx:
                    self._out_channels.append(ch_in[i])
            for i in range(self.num_stages - 1):
                self.downsample_list.append(self.add_sublayer(
                    f"stage.{i}.downsample", DownSample(ch_in=ch_in[i], ch_out=ch_in[i + 1])))
    return TinyDarkNet()


def _tiny_resnet(w=8):
    from ppdet.modeling.backbones.name_adapter import NameAdapter
    from ppdet.modeling.backbones.resnet import BasicBlock, Blocks, ConvNormLayer, ResNet

    class TinyResNet(ResNet):
        """ResNet.__init__'s sub-layers (depth 18, variant b) at 1/8 width (shim)."""

        def __init__(self):
            paddle.nn.Layer.__init__(self)
            self.depth, self.variant, self.return_idx = 18, "b", [1, 2, 3]
            self.num_stages, self.norm_type, self.freeze_at = 4, "bn", -1
            na = NameAdapter(self)
            self.conv1 = paddle.nn.Sequential()
            self.conv1.add_sublayer("conv1", ConvNormLayer(
                ch_in=3, ch_out=64 // w, filter_size=7, stride=2, groups=1, act="relu",
                norm_type="bn", freeze_norm=False))
            ch_in, outs = 64 // w, [c // w for c in (64, 128, 256, 512)]
            self._out_channels, self.res_layers = outs, []
            for i in range(4):
                self.res_layers.append(self.add_sublayer(f"res{i + 2}", Blocks(
                    BasicBlock, ch_in, outs[i], count=2, name_adapter=na, stage_num=i + 2,
                    freeze_norm=False)))
                ch_in = outs[i]
    return TinyResNet()


def det2x_yolov3(out, kind, in_channels, num_classes=4, base=32):
    name = f"det2x_yolov3_{'darknet' if kind == 'darknet' else 'r18'}_tiny_c{num_classes}"
    yolov3_fixture(out, name, _tiny_darknet if kind == "darknet" else _tiny_resnet,
                   in_channels, base, num_classes, seeds=(11, 12), size=64)


def det2x_full_keys(out):
    from ppdet.modeling.backbones.darknet import DarkNet
    from ppdet.modeling.backbones.resnet import ResNet
    from ppdet.modeling.heads.yolo_head import YOLOv3Head
    from ppdet.modeling.necks.yolo_fpn import YOLOv3FPN

    class Det(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.backbone = DarkNet()
            self.neck = YOLOv3FPN(in_channels=[256, 512, 1024])
            self.yolo_head = YOLOv3Head(in_channels=self.neck._out_channels, loss=None)

    with paddle.utils.unique_name.guard():        # automatic names count from 0, as in a
        det = Det()                               # fresh PaddleDetection process
    _keys(det, os.path.join(out, "det2x_yolov3_darknet53_keys.json"))
    # the automatic names in creation order: what its prune configs call conv2d_52.w_0 ...
    names = [p.name for p in det.parameters() if len(p.shape) == 4]
    with open(os.path.join(out, "det2x_yolov3_darknet53_conv_names.json"), "w") as f:
        json.dump({p.name: k for k, p in det.state_dict().items()
                   if p.name in set(names)}, f, indent=0)
    del det
    r34 = ResNet(depth=34, return_idx=[1, 2, 3], freeze_at=-1, freeze_norm=False)
    _keys(r34, os.path.join(out, "det2x_resnet34_keys.json"))


def clas_full(out):
    _paddleclas_without_init()
    from paddleclas.ppcls.arch.backbone.legendary_models.resnet import ResNet34
    from paddleclas.ppcls.arch.backbone.model_zoo.darknet import DarkNet53

    x = np.random.RandomState(13).uniform(-1, 1, (1, 3, 64, 64)).astype("float32")
    r34 = ResNet34(class_num=1000)
    _keys(r34, os.path.join(out, "clas2x_resnet34_keys.json"))
    r34.set_state_dict({k: keyed_values(k, list(v.shape)) for k, v in r34.state_dict().items()})
    r34.eval()
    y, feats = r34.max_pool(r34.stem(paddle.to_tensor(x))), {}
    for i, block in enumerate(r34.blocks):
        y = block(y)
        if i in (6, 12, 15):                    # res3d, res4f, res5c
            feats[f"feat{i}"] = y.numpy()
    np.savez(os.path.join(out, "clas2x_resnet34_io.npz"), image=x, **feats)
    del r34
    dark = DarkNet53(class_num=1000)
    _keys(dark, os.path.join(out, "clas2x_darknet53_keys.json"))
    dark.set_state_dict({k: keyed_values(k, list(v.shape))
                         for k, v in dark.state_dict().items()})
    dark.eval()
    y, feats = paddle.to_tensor(x), {}
    for name, layer in dark.named_children():
        if name in ("_pool", "_out"):
            break
        y = layer(y)
        if name in ("_basic_block_28", "_basic_block_38", "_basic_block_44"):
            feats[name] = y.numpy()
    np.savez(os.path.join(out, "clas2x_darknet53_io.npz"), image=x, **feats)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    det2x_yolov3(args.out, "darknet", [32, 64, 128])
    det2x_yolov3(args.out, "resnet", [16, 32, 64])
    det2x_full_keys(args.out)
    clas_full(args.out)


if __name__ == "__main__":
    main()
