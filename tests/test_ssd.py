"""MobileNetV1-SSD: seed-001 parameter names, matching, training, eval, export, pruning."""
import os
import re

import numpy as np
import paddle
import pytest

from ppdet.core.config import load_config
from ppdet.engine.builder import build_model, build_reader
from ppdet.engine.evaluate import to_tensors
from ppdet.modeling.layers import ConvBNLayer
from ppdet.modeling.losses.ssd_loss import SSDLoss, encode_boxes, match_priors
from ppdet.modeling.ssd_post_process import decode_boxes
from ppdet.slim.prune.params import conv_table, select_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOC_CFG = os.path.join(ROOT, "configs/ssd/ssd_mobilenet_v1_voc.yml")
SHAPES_CFG = os.path.join(ROOT, "configs/shapes/ssd_mobilenet_v1_shapes.yml")
SEED_REGEX = "conv2d_[1-9].w_0|conv2d_1[0-2].w_0"

# the parameter listing of shared/seeds/001 (fluid MobileNet-SSD, in definition order)
SEED_001 = [
    ("conv2d_0.w_0", (32, 3, 3, 3)), ("depthwise_conv2d_0.w_0", (32, 1, 3, 3)),
    ("conv2d_1.w_0", (64, 32, 1, 1)), ("depthwise_conv2d_1.w_0", (64, 1, 3, 3)),
    ("conv2d_2.w_0", (128, 64, 1, 1)), ("depthwise_conv2d_2.w_0", (128, 1, 3, 3)),
    ("conv2d_3.w_0", (128, 128, 1, 1)), ("depthwise_conv2d_3.w_0", (128, 1, 3, 3)),
    ("conv2d_4.w_0", (256, 128, 1, 1)), ("depthwise_conv2d_4.w_0", (256, 1, 3, 3)),
    ("conv2d_5.w_0", (256, 256, 1, 1)), ("depthwise_conv2d_5.w_0", (256, 1, 3, 3)),
    ("conv2d_6.w_0", (512, 256, 1, 1)), ("depthwise_conv2d_6.w_0", (512, 1, 3, 3)),
    ("conv2d_7.w_0", (512, 512, 1, 1)), ("depthwise_conv2d_7.w_0", (512, 1, 3, 3)),
    ("conv2d_8.w_0", (512, 512, 1, 1)), ("depthwise_conv2d_8.w_0", (512, 1, 3, 3)),
    ("conv2d_9.w_0", (512, 512, 1, 1)), ("depthwise_conv2d_9.w_0", (512, 1, 3, 3)),
    ("conv2d_10.w_0", (512, 512, 1, 1)), ("depthwise_conv2d_10.w_0", (512, 1, 3, 3)),
    ("conv2d_11.w_0", (512, 512, 1, 1)), ("depthwise_conv2d_11.w_0", (512, 1, 3, 3)),
    ("conv2d_12.w_0", (1024, 512, 1, 1)), ("depthwise_conv2d_12.w_0", (1024, 1, 3, 3)),
]


def _conv_weights(model):
    return [(p.name, tuple(p.shape)) for p in model.parameters()
            if re.fullmatch(r"(depthwise_)?conv2d_\d+\.w_0", p.name)]


def test_voc_model_has_the_seed_parameter_names():
    model = build_model(load_config(VOC_CFG))
    convs = _conv_weights(model)
    assert convs[:len(SEED_001)] == SEED_001
    rx = re.compile(SEED_REGEX)
    assert [n for n, _ in convs if rx.fullmatch(n)] == [f"conv2d_{i}.w_0" for i in range(1, 13)]
    assert select_params(model, SEED_REGEX) == [f"conv2d_{i}.w_0" for i in range(1, 13)]
    # 14 backbone + 8 extra convs, then 6 loc and 6 conf convs (with biases)
    assert [n for n, _ in convs if not n.startswith("depthwise")] == \
        [f"conv2d_{i}.w_0" for i in range(34)]
    names = {p.name for p in model.parameters()}
    assert {"batch_norm_0.w_0", "batch_norm_0.b_0", "batch_norm_0.w_1", "batch_norm_0.w_2",
            "batch_norm_34.w_2", "conv2d_22.b_0", "conv2d_33.b_0"} <= names
    assert "batch_norm_35.w_0" not in names
    # every conv + BN is a ConvBNLayer (the masked sensitivity evaluator relies on it)
    assert sum(isinstance(m, ConvBNLayer) for m in model.sublayers()) == 14 + 13 + 8
    head = {c.name: c.prunable for c in conv_table(model) if c.name >= "conv2d_22"}
    assert not any(head[f"conv2d_{i}.w_0"] for i in range(22, 34))
    assert model.ssd_head.num_priors == [3, 6, 6, 6, 6, 6]


def test_matching_and_encoding_by_hand():
    priors = np.array([[0.1, 0.1, 0.3, 0.3],     # equals GT 0
                       [0.12, 0.1, 0.32, 0.3],   # IoU 0.82 with GT 0
                       [0.6, 0.6, 0.9, 0.9],     # best (IoU 0.36) for GT 1: forced
                       [0.0, 0.7, 0.1, 0.8]],    # background
                      np.float32)
    gt = np.array([[[0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.8, 0.8], [0, 0, 0, 0]]], np.float32)
    cls = np.array([[2, 0, 0]])
    assert match_priors(gt, priors).tolist() == [[0, 0, 1, -1]]
    variances = [0.1, 0.1, 0.2, 0.2]
    labels, loc_t, pos, negatives = SSDLoss().targets(gt, cls, priors, variances)
    assert labels.tolist() == [[3, 3, 1, 0]]           # class + 1; 0 = background
    assert negatives.tolist() == [[False, False, False, True]]
    assert pos.tolist() == [[True, True, True, False]]
    np.testing.assert_allclose(loc_t[0, 0], 0, atol=1e-5)
    assert loc_t[0, 1, 0] < 0 and abs(loc_t[0, 1, 1]) < 1e-5
    # decoding inverts encoding
    back = decode_boxes(paddle.to_tensor(loc_t[:, 1:3]), paddle.to_tensor(priors[1:3]),
                        variances).numpy()
    np.testing.assert_allclose(back[0], gt[0, [0, 1]], atol=1e-5)
    np.testing.assert_allclose(encode_boxes(gt[0, :1], priors[:1], variances), 0, atol=1e-6)


def test_priors_half_on_an_object_are_not_mined_as_negatives():
    priors = np.array([[0.1, 0.1, 0.3, 0.3],     # the GT itself
                       [0.19, 0.1, 0.39, 0.3],   # IoU 0.38: neither object nor background
                       [0.6, 0.6, 0.9, 0.9]],    # far away: a negative
                      np.float32)
    gt = np.array([[[0.1, 0.1, 0.3, 0.3]]], np.float32)
    _, _, pos, negatives = SSDLoss(neg_overlap=0.3).targets(gt, np.array([[1]]), priors,
                                                            [0.1, 0.1, 0.2, 0.2])
    assert pos.tolist() == [[True, False, False]]
    assert negatives.tolist() == [[False, False, True]]
    _, _, _, negatives = SSDLoss().targets(gt, np.array([[1]]), priors, [0.1, 0.1, 0.2, 0.2])
    assert negatives.tolist() == [[False, True, True]]


def test_loss_is_zero_for_perfect_predictions_and_mines_3_to_1():
    rng = np.random.RandomState(0)
    priors = np.sort(rng.uniform(0, 1, (40, 2, 2)), axis=1).reshape(40, 4)  # x1 y1 x2 y2
    gt = priors[None, [5, 17]].astype(np.float32)
    loss = SSDLoss()
    labels, loc_t, pos, _ = loss.targets(gt, np.array([[0, 1]]), priors, [0.1, 0.1, 0.2, 0.2])
    conf = np.full((1, 40, 3), -20., np.float32)
    conf[0, np.arange(40), labels[0]] = 20.
    out = loss(paddle.to_tensor(loc_t), paddle.to_tensor(conf), priors, [0.1, 0.1, 0.2, 0.2],
               paddle.to_tensor(gt), paddle.to_tensor(np.array([[0, 1]])))
    assert float(out["loss"]) < 1e-4
    # one wrong background prior: its loss counts (it is among the hardest negatives)
    conf2 = conf.copy()
    neg = int(np.nonzero(~pos[0])[0][0])
    conf2[0, neg, 1], conf2[0, neg, 0] = 20., -20.
    out2 = loss(paddle.to_tensor(loc_t), paddle.to_tensor(conf2), priors, [0.1, 0.1, 0.2, 0.2],
                paddle.to_tensor(gt), paddle.to_tensor(np.array([[0, 1]])))
    assert float(out2["loss_conf"]) == pytest.approx(40. / pos.sum(), rel=1e-3)


@pytest.fixture(scope="module")
def tiny(shapes_root):
    """Tiny SSD, one real batch of 8, and the losses of 30 Adam steps on that batch."""
    cfg = load_config(SHAPES_CFG, ["TrainDataset.sample_num=8", "worker_num=0"])
    paddle.seed(0)
    model = build_model(cfg)
    batch = next(iter(build_reader(cfg, "train")))
    inputs = to_tensors(batch)
    opt = paddle.optimizer.Adam(0.003, parameters=model.parameters())
    model.train()
    losses = []
    for _ in range(30):
        out = model(inputs)
        out["loss"].backward()
        opt.step()
        opt.clear_grad()
        losses.append({k: float(v) for k, v in out.items()})
    model.eval()
    return cfg, model, batch, losses


def test_train_loss_decreases_on_one_batch(tiny):
    _, _, batch, losses = tiny
    assert batch["image"].shape == (8, 3, 192, 192)
    total = [x["loss"] for x in losses]
    assert all(np.isfinite(total)) and set(losses[0]) == {"loss", "loss_loc", "loss_conf"}
    assert np.mean(total[-3:]) < 0.5 * total[0]


def test_eval_boxes_in_original_image(tiny):
    _, model, batch, _ = tiny
    with paddle.no_grad():
        out = model(to_tensors({k: batch[k] for k in ("image", "im_shape", "scale_factor")}))
    bbox, num = out["bbox"].numpy(), out["bbox_num"].numpy()
    assert bbox.ndim == 2 and bbox.shape[1] == 6 and num.shape == (8,)
    assert num.sum() == len(bbox) > 0
    hw = batch["im_shape"] / batch["scale_factor"]
    assert (bbox[:, 0] >= 0).all() and (bbox[:, 0] < 4).all()
    assert ((bbox[:, 1] > 0) & (bbox[:, 1] <= 1)).all()
    rows = np.repeat(np.arange(8), num)
    assert (bbox[:, 2:] >= 0).all()
    assert (bbox[:, [2, 4]] <= hw[rows, 1:2] + 1e-3).all()
    assert (bbox[:, [3, 5]] <= hw[rows, 0:1] + 1e-3).all()
    assert (bbox[:, 4] >= bbox[:, 2]).all() and (bbox[:, 5] >= bbox[:, 3]).all()


def test_export_matches_dygraph(tiny, tmp_path):
    from ppdet.engine.export import Predictor, export_model
    cfg, model, batch, _ = tiny
    export_model(model, cfg, str(tmp_path), ["circle", "rectangle", "triangle", "cross"])
    x, shape = batch["image"][:1], batch["im_shape"][:1]
    scale = np.array([[0.5, 0.8]], np.float32)     # as if the original were 384 x 240
    got, got_num = Predictor(str(tmp_path)).run(x, shape, scale)
    with paddle.no_grad():
        ref = model({"image": paddle.to_tensor(x), "im_shape": paddle.to_tensor(shape),
                     "scale_factor": paddle.to_tensor(scale)})
    ref, ref_num = ref["bbox"].numpy(), ref["bbox_num"].numpy()
    assert got_num.tolist() == ref_num.tolist() and len(ref) > 0
    top = ref[:, 1] > 0.05     # near-ties among the lowest scores may swap order
    assert top.any()
    np.testing.assert_array_equal(got[top, 0], ref[top, 0])
    np.testing.assert_allclose(got[top, 1:], ref[top, 1:], rtol=1e-3, atol=1e-3 * 384)
    # boxes are in original-image pixels: the same detections at scale 1, stretched
    with paddle.no_grad():
        unit = model({"image": paddle.to_tensor(x), "im_shape": paddle.to_tensor(shape),
                      "scale_factor": paddle.ones([1, 2])})["bbox"].numpy()
    assert len(unit) == len(ref)
    for row in ref[top]:      # rows of equal score may come in another order: match them
        same = unit[(unit[:, 0] == row[0]) & (np.abs(unit[:, 1] - row[1]) < 1e-6)]
        assert len(same) >= 1
        err = np.abs(same[:, 2:] * [1.25, 2, 1.25, 2] - row[2:]).max(axis=1)
        assert err.min() <= 1e-3 + 1e-4 * np.abs(row[2:]).max()


def test_prune_backbone_pointwise_conv():
    from ppdet.slim.prune.pruner import FilterPruner
    paddle.seed(1)
    model = build_model(load_config(SHAPES_CFG))
    model.eval()
    x = paddle.to_tensor(np.random.RandomState(0).randn(1, 3, 192, 192).astype("float32"))
    with paddle.no_grad():
        before = [o.numpy() for o in model.head_outputs(x)]
    shapes = lambda: {p.name: list(p.shape) for p in model.parameters()}
    old = shapes()
    pruner = FilterPruner(model)
    assert pruner.prune({"conv2d_3.w_0": 0.5}) == {"conv2d_3.w_0": 16}
    new = shapes()
    assert new["conv2d_3.w_0"] == [16, 32, 1, 1] and old["conv2d_3.w_0"] == [32, 32, 1, 1]
    assert new["batch_norm_6.w_0"] == [16]                      # its BN
    assert new["depthwise_conv2d_3.w_0"] == [16, 1, 3, 3]       # the following depthwise
    assert new["conv2d_4.w_0"] == [64, 16, 1, 1]                # the next pointwise input
    changed = {n for n in old if old[n] != new[n]}
    assert changed == {"conv2d_3.w_0", "depthwise_conv2d_3.w_0", "conv2d_4.w_0"} | {
        f"batch_norm_{k}.{s}" for k in (6, 7) for s in ("w_0", "b_0", "w_1", "w_2")}
    with paddle.no_grad():
        after = [o.numpy() for o in model.head_outputs(x)]
    assert [a.shape for a in after] == [b.shape for b in before]
    assert max(np.abs(a - b).max() for a, b in zip(after, before)) > 1e-3
    # a conv feeding the heads: the loc and conf convs lose those input channels
    pruner.restore()
    pruner.prune({"conv2d_13.w_0": 0.5})
    new = shapes()
    # conv6 is the third map of the tiny config: its loc conv is conv2d_18, conf conv2d_22
    assert new["conv2d_14.w_0"][1] == 128 and new["conv2d_18.w_0"][1] == 128 \
        and new["conv2d_22.w_0"][1] == 128 and new["conv2d_17.w_0"][1] == 128


def test_tiny_prior_layout_gives_every_shape_a_real_match(shapes_root):
    """The tiny config's priors must fit the shapes (16-96 px): with a stride-16 first map
    40% of them had no prior at the matching IoU and SSD barely learned (bench/HISTORY.md,
    "MobileNetV1-SSD")."""
    from ppdet.engine.builder import build_dataset
    from ppdet.modeling.losses.ssd_loss import iou_matrix
    cfg = load_config(SHAPES_CFG)
    model = build_model(cfg)
    model.eval()
    with paddle.no_grad():
        priors = model.ssd_head.priors(model.head_outputs(paddle.zeros([1, 3, 192, 192])))
    threshold = cfg["SSDLoss"]["overlap_threshold"]
    boxes = np.concatenate([r["gt_bbox"] / [r["w"], r["h"], r["w"], r["h"]]
                            for r in build_dataset(cfg, "train")]).astype("float32")
    iou = iou_matrix(boxes, priors)                      # [objects, priors]
    assert (iou.max(1) >= threshold).mean() >= 0.95      # few forced matches
    assert (iou >= threshold).sum(1).mean() >= 3        # several positives per object
