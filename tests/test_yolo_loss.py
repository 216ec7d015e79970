"""YOLOv3Loss anchor assignment: which anchors learn an object's box."""
import numpy as np
import paddle
import pytest

from ppdet.core.config import ConfigError
from ppdet.modeling.losses.yolo_loss import YOLOv3Loss

ANCHORS = [[10, 10], [16, 16], [22, 14], [14, 22], [28, 28], [40, 26],
           [26, 40], [48, 48], [72, 72]]
MASKS = [[6, 7, 8], [3, 4, 5], [0, 1, 2]]
STRIDES = [32, 16, 8]
NUM_CLASSES = 4
SIZE = 160


def box_gradients(assign):
    """Gradient of each level's loss on the tx channel of every anchor, at the cell holding
    one 16x16 px object centred in a 160 px image: non-zero only where the anchor is a
    positive (tx has no loss otherwise)."""
    paddle.seed(0)
    outs = [paddle.randn([1, 3 * (5 + NUM_CLASSES), SIZE // s, SIZE // s]) * 0.1
            for s in STRIDES]
    for o in outs:
        o.stop_gradient = False
    inputs = {"gt_bbox": paddle.to_tensor([[[0.53, 0.53, 0.1, 0.1]]], "float32"),
              "gt_class": paddle.to_tensor([[2]], "int32")}
    losses = YOLOv3Loss(assign=assign)(outs, inputs, ANCHORS, MASKS, STRIDES, NUM_CLASSES)
    grads = paddle.grad([losses[f"loss_level{i}"] for i in range(3)], outs)
    result = []
    for g, stride in zip(grads, STRIDES):
        cell = int(0.53 * SIZE // stride)
        per_anchor = g.numpy()[0].reshape(3, 5 + NUM_CLASSES, SIZE // stride, SIZE // stride)
        result.append(np.abs(per_anchor[:, 0, cell, cell]) > 0)
    return result


def test_best_assign_trains_one_anchor_of_all_nine():
    positives = box_gradients("best")
    # a 16x16 box fits [16, 16] (anchor 1, in the stride-8 level) best of all nine
    assert [p.tolist() for p in positives] == [[False] * 3, [False] * 3, [False, True, False]]


def test_per_level_assign_trains_the_best_anchor_of_every_level():
    positives = box_gradients("per_level")
    # shape IoU picks 26x40 (0.25) at stride 32, 14x22 (0.66) at stride 16, 16x16 at 8
    assert [p.tolist() for p in positives] == [[True, False, False], [True, False, False],
                                               [False, True, False]]


def test_unknown_assign_mode_is_refused():
    with pytest.raises(ConfigError, match="assign must be one of best, per_level"):
        YOLOv3Loss(assign="all")
