"""Weights users already have (issue 12): static-era folders and tars, the seed's URL from
the offline cache, PaddleDetection 2.x and PaddleClas 2.x files, transfer to another class
count, corrupt inputs. The 2.x fixtures were made by PaddleDetection / PaddleClas themselves
(tools/dev/make_weight_fixtures.py) with their raw outputs on a fixed input."""
import importlib.util
import io
import json
import os
import tarfile

import numpy as np
import paddle
import pytest
from paddle.base import core

from ppdet.core.config import load_config
from ppdet.engine import checkpoint as ckpt
from ppdet.engine import weights as W
from ppdet.engine.builder import build_model
from ppdet.engine.trainer import load_pretrain
from ppdet.modeling.heads.ssd_head import make_priors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures", "weights")
SHAPES_CFG = os.path.join(ROOT, "configs/shapes/yolov3_mobilenet_v1_shapes.yml")
# static-era weights come from PaddleDetection's YOLOv3-MobileNetV1: its backbone taps
CFG = os.path.join(ROOT, "tests/fixtures/weights/shapes_paddledet_taps.yml")
DET2X_CFG = os.path.join(FIX, "yolov3_det2x.yml")
DET2X = os.path.join(FIX, "det2x_yolov3_mobilenet_v1_x0_25_c4.pdparams")
SSD2X_CFG = os.path.join(FIX, "ssd_det2x.yml")
SSD2X = os.path.join(FIX, "det2x_ssd_mobilenet_v1_x0_25_c4.pdparams")
CLAS_V1 = os.path.join(FIX, "clas2x_mobilenet_v1_x0_25.pdparams")
SEED_URL = "https://paddlemodels.bj.bcebos.com/object_detection/yolov3_mobilenet_v1_voc.tar"
EVAL_SMALL = ["EvalDataset.sample_num=8"]


def _tool(rel, name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, rel))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def _user_error(main, argv, capsys):
    """Run a tool expecting a user error: exit 2, one line on stderr."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1          # progress bars may precede it
    return lines[0]


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    """A private HOME: the URL cache and the unpack cache live under it."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("PPDET_WEIGHTS_CACHE", raising=False)
    return home


def _random_model(cfg_path=CFG, opts=(), seed=0):
    paddle.seed(seed)
    model = build_model(load_config(cfg_path, list(opts)))
    rng = np.random.RandomState(seed)
    for p in model.parameters():
        if p.name.endswith(("_variance", ".var")):
            p.set_value(rng.uniform(0.5, 1.5, p.shape).astype("float32"))
        elif p.name.endswith(("_mean", ".mean")):
            p.set_value(rng.normal(0, 0.1, p.shape).astype("float32"))
    model.eval()
    return model


def _write_static(model, folder, extra=True):
    """A static-era folder: one dense-tensor file per variable, named after it."""
    os.makedirs(folder, exist_ok=True)
    for p in model.parameters():
        t = core.DenseTensor()
        t.set(p.numpy(), paddle.CPUPlace())
        core.save_dense_tensor(t, os.path.join(folder, p.name))
    if extra:   # what save_persistables also wrote
        t = core.DenseTensor()
        t.set(np.zeros([1], "float32"), paddle.CPUPlace())
        core.save_dense_tensor(t, os.path.join(folder, "conv1_weights_velocity_0"))
        core.save_dense_tensor(t, os.path.join(folder, "learning_rate_0"))
    return folder


def _make_tar(folder, tar_path):
    with tarfile.open(tar_path, "w") as tar:
        tar.add(folder, arcname=os.path.basename(tar_path)[:-len(".tar")])
    return tar_path


def _same_params(a, b):
    pa = {p.name: p.numpy() for p in a.parameters()}
    for p in b.parameters():
        np.testing.assert_array_equal(pa[p.name], p.numpy(), err_msg=p.name)


# --- dense-tensor files ------------------------------------------------------------------

def test_dense_tensor_reader_matches_paddle_and_refuses_damage(tmp_path):
    for arr in (np.random.rand(3, 4, 1, 2).astype("float32"), np.arange(7, dtype="int64"),
                np.float64(3.5).reshape([1])):
        t = core.DenseTensor()
        t.set(arr, paddle.CPUPlace())
        path = str(tmp_path / "v")
        core.save_dense_tensor(t, path)
        got = W.read_dense_tensor(path)
        assert got.dtype == arr.dtype and got.shape == arr.shape
        np.testing.assert_array_equal(got, arr)
    data = open(path, "rb").read()
    for name, blob in (("cut", data[:-3]), ("head", data[:10]), ("tail", data + b"xx"),
                       ("junk", b"\x07" * 40)):
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(W.CheckpointError, match=f"weights file .*{name}: .*'{name}'"):
            W.read_dense_tensor(str(tmp_path / name))


# --- static-era folder and tar -------------------------------------------------------------

def test_static_folder_and_tar_load_by_name_through_the_tools(tmp_path, shapes_root, capsys):
    src = _random_model()
    folder = _write_static(src, str(tmp_path / "model_final"))
    tar = _make_tar(folder, str(tmp_path / "released.tar"))
    for weights in (folder, tar):
        fresh = build_model(load_config(CFG))
        meta = ckpt.load_weights(fresh, weights)
        assert meta == {"source_format": "static"}
        _same_params(src, fresh)
    unpacked = os.listdir(os.path.join(str(tmp_path / "home"), ".cache", "ppdet", "unpacked"))
    assert len(unpacked) == 1 and not unpacked[0].startswith(".")   # unpacked once
    # through the tools: eval gives the same mAP from the folder, the tar and ours
    ours = str(tmp_path / "ours")
    ckpt.save_checkpoint(src, ours)
    evaluate = _tool("tools/eval.py", "eval_tool")
    maps = [evaluate(["-c", CFG, "-o", f"weights={w}", *EVAL_SMALL])["mAP"]
            for w in (folder, tar, ours)]
    assert maps[0] == maps[1] == maps[2]
    # sensitive.py takes the folder and the tar (--print_params lists the same parameters)
    sensitive = _tool("slim/sensitive/sensitive.py", "sensitive_tool")
    sensitive(["-c", CFG, "-o", f"weights={tar}", "--print_params"])
    listing = capsys.readouterr().out
    assert "yolo_block.0.0.0.conv.weights" in listing and "conv1_weights" in listing
    # a sensitivity run: random weights detect nothing, so it stops at the baseline, after
    # the weights loaded (a weights problem would have been reported before)
    assert maps[0] == 0
    for weights in (folder, tar):
        err = _user_error(sensitive, ["-c", CFG, "-o", f"weights={weights}", *EVAL_SMALL,
                                      "-p", "yolo_block.0.tip.conv.weights", "-r", "0.5",
                                      "--mode", "real", "-s", str(tmp_path / "s.data")],
                          capsys)
        assert "baseline" in err


def test_static_folder_missing_or_wrong_variable_is_an_error_and_loads_nothing(tmp_path):
    src = _random_model()
    folder = _write_static(src, str(tmp_path / "w"))
    os.remove(os.path.join(folder, "yolo_block.1.tip.bn.var"))
    target = build_model(load_config(CFG))
    before = {p.name: p.numpy().copy() for p in target.parameters()}
    with pytest.raises(W.CheckpointError, match="'yolo_block.1.tip.bn.var' is missing from"):
        ckpt.load_weights(target, folder)
    for p in target.parameters():        # nothing half-loaded
        np.testing.assert_array_equal(before[p.name], p.numpy())
    wider = build_model(load_config(CFG, ["num_classes=6"]))
    folder2 = _write_static(src, str(tmp_path / "w2"))
    with pytest.raises(W.CheckpointError, match="shape mismatch for 'yolo_output.0.conv"
                                                ".weights'.*\\[27, 256, 1, 1\\].*\\[33, 256"):
        ckpt.load_weights(wider, folder2)


def test_corrupt_variable_file_and_archives_are_one_line_errors(tmp_path, capsys):
    src = _random_model()
    folder = _write_static(src, str(tmp_path / "w"))
    victim = os.path.join(folder, "yolo_block.0.tip.conv.weights")
    data = open(victim, "rb").read()
    open(victim, "wb").write(data[:len(data) // 2])
    evaluate = _tool("tools/eval.py", "eval_tool2")
    err = _user_error(evaluate, ["-c", CFG, "-o", f"weights={folder}"], capsys)
    assert "yolo_block.0.tip.conv.weights" in err and "truncated" in err
    # a truncated archive: error naming it, nothing left in the cache that a later run trusts
    good = _make_tar(_write_static(src, str(tmp_path / "g")), str(tmp_path / "g.tar"))
    blob = open(good, "rb").read()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(blob[:len(blob) // 2])
    err = _user_error(evaluate, ["-c", CFG, "-o", f"weights={cut}"], capsys)
    assert str(cut) in err and "download it again" in err
    cache = os.path.join(str(tmp_path / "home"), ".cache", "ppdet", "unpacked")
    assert not os.path.isdir(cache) or os.listdir(cache) == []
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 64)
    err = _user_error(evaluate, ["-c", CFG, "-o", f"weights={tmp_path / 'junk.tar'}"], capsys)
    assert "junk.tar" in err
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("../escape")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(W.CheckpointError, match="unsafe entry '../escape'"):
        W.read_weights(str(evil))
    assert not (tmp_path / "escape").exists()


def test_killed_unpack_is_not_trusted(tmp_path):
    src = _random_model()
    tar = _make_tar(_write_static(src, str(tmp_path / "m")), str(tmp_path / "m.tar"))
    cache = os.path.join(str(tmp_path / "home"), ".cache", "ppdet", "unpacked")
    stale = os.path.join(cache, ".unpack-killed")          # what a kill -9 leaves
    os.makedirs(stale)
    open(os.path.join(stale, "conv1_weights"), "wb").write(b"\0" * 8)
    fresh = build_model(load_config(CFG))
    ckpt.load_weights(fresh, tar)
    _same_params(src, fresh)
    done = [d for d in os.listdir(cache) if not d.startswith(".")]
    assert len(done) == 1 and done[0].startswith("m-")


# --- the seed's URL, offline ---------------------------------------------------------------

def test_seed_url_resolves_from_the_paddle_cache_or_says_where_to_put_it(tmp_path, capsys):
    home = tmp_path / "home"
    sensitive = _tool("slim/sensitive/sensitive.py", "sensitive_tool2")
    err = _user_error(sensitive, ["-c", CFG, "-o", f"weights={SEED_URL}", "-p",
                                  "yolo_block.0.tip.conv.weights"], capsys)
    where = os.path.join(str(home), ".cache", "paddle", "weights")
    assert "offline" in err and f"{where}/yolov3_mobilenet_v1_voc.tar" in err
    src = _random_model()
    os.makedirs(where)
    # the unpacked folder (as PaddleDetection leaves it) ...
    _write_static(src, os.path.join(where, "yolov3_mobilenet_v1_voc"))
    fresh = build_model(load_config(CFG))
    ckpt.load_weights(fresh, SEED_URL)
    _same_params(src, fresh)
    # ... or the archive itself
    other = _random_model(seed=1)
    folder = _write_static(other, str(tmp_path / "yolov3_mobilenet_v1_voc"))
    import shutil
    shutil.rmtree(os.path.join(where, "yolov3_mobilenet_v1_voc"))
    _make_tar(folder, os.path.join(where, "yolov3_mobilenet_v1_voc.tar"))
    assert ckpt.resolve_weights(SEED_URL).endswith("yolov3_mobilenet_v1_voc.tar")
    fresh = build_model(load_config(CFG))
    ckpt.load_weights(fresh, SEED_URL)
    _same_params(other, fresh)


# --- PaddleDetection 2.x --------------------------------------------------------------------

def _raw_yolo(model, image):
    with paddle.no_grad():
        return [o.numpy() for o in model.yolo_head(model.backbone(paddle.to_tensor(image)))]


def test_det2x_yolov3_reproduces_paddledetection_outputs_and_converts(tmp_path, shapes_root,
                                                                      capsys):
    ref = np.load(DET2X.replace(".pdparams", "_io.npz"))
    model = build_model(load_config(DET2X_CFG))
    assert ckpt.load_weights(model, DET2X) == {"source_format": "det2x"}
    model.eval()
    outs = _raw_yolo(model, ref["image"])
    for i, out in enumerate(outs):
        assert out.shape == ref[f"out{i}"].shape
        assert np.abs(out - ref[f"out{i}"]).max() < 1e-5
    # the converter writes our format; eval of both gives the same mAP
    out_file = str(tmp_path / "converted.pdparams")
    convert = _tool("tools/convert_weights.py", "convert_tool")
    match = convert([DET2X, "-c", DET2X_CFG, "--output", out_file])
    table = capsys.readouterr().out
    assert len(match.loaded) == 241 and not match.missing and not match.unused
    assert "loaded   yolo_output.0.conv.weights" in table
    assert "yolo_head.yolo_output.0.weight" in table and "loaded 241" in table
    conv = build_model(load_config(DET2X_CFG))
    assert "source_format" in ckpt.load_weights(conv, out_file[:-len(".pdparams")])
    conv.eval()
    for a, b in zip(outs, _raw_yolo(conv, ref["image"])):
        np.testing.assert_array_equal(a, b)
    evaluate = _tool("tools/eval.py", "eval_tool3")
    r1 = evaluate(["-c", DET2X_CFG, "-o", f"weights={DET2X}", *EVAL_SMALL])
    r2 = evaluate(["-c", DET2X_CFG, "-o", f"weights={out_file}", *EVAL_SMALL])
    assert r1["mAP"] == r2["mAP"]
    # the converter refuses to overwrite its input and names a bad output
    err = _user_error(convert, [out_file, "-c", DET2X_CFG, "--output", out_file], capsys)
    assert "is the input" in err
    # other backbone taps would load silently and compute something else: refused
    taps = build_model(load_config(SHAPES_CFG, ["YOLOv3Head.channels=[32,16,8]"]))
    with pytest.raises(W.CheckpointError, match="conv3_2, conv4_2, conv6.*feature_maps"):
        ckpt.load_weights(taps, DET2X)


def test_det2x_ssd_reproduces_paddledetection_outputs_and_priors():
    ref = np.load(SSD2X.replace(".pdparams", "_io.npz"))
    model = build_model(load_config(SSD2X_CFG))
    ckpt.load_weights(model, SSD2X)
    model.eval()
    head = model.ssd_head
    with paddle.no_grad():
        outs = [o.numpy() for o in head(model.backbone(paddle.to_tensor(ref["image"])))]
    n = len(head.loc_convs)
    for i in range(n):
        shapes = head.prior_shapes[i]
        k = len(shapes)
        has_max = k > 1 and shapes[1][0] == shapes[1][1]
        order = [0, k - 1] + list(range(1, k - 1)) if has_max else list(range(k))
        # PaddleDetection's own priors, in our order, are our priors: the order is right
        h, w = outs[i].shape[2:]
        theirs = ref[f"prior{i}"].reshape(h * w, k, 4)[:, order].reshape(-1, 4)
        ours = W.np.asarray(__import__("ppdet.modeling.heads.ssd_head", fromlist=["x"])
                            .make_priors([(h, w)], [shapes], head.base_size))
        np.testing.assert_allclose(ours, theirs, atol=1e-5)
        # loc: same prior order; conf: background first here, last in 2.x
        loc = ref[f"out{i}"].reshape(2, k, 4, h, w)[:, order]
        assert np.abs(outs[i] - loc.reshape(outs[i].shape)).max() < 1e-5
        c = head.num_classes + 1
        conf = ref[f"out{i + n}"].reshape(2, k, c, h, w)[:, order][:, :, [c - 1] +
                                                                   list(range(c - 1))]
        assert np.abs(outs[i + n] - conf.reshape(outs[i + n].shape)).max() < 1e-5


def _paddledet_static_ssd_names(model):
    """Our key -> the name PaddleDetection 0.4/0.5 (static era) gave the same variable, derived
    the way that era derived it, independently of ppdet.engine.weights: MobileNet named each
    conv+BN after its block (conv1, conv2_1_dw / _sep .. conv6_sep, conv7_{j}_extra1 / 2);
    MultiBoxHead's fluid.layers.multi_box_head left its convs unnamed, so Paddle called them
    conv2d_{n} in creation order: one loc then one conf conv per level, n continuing the count
    of the backbone's regular convs (conv1, the 13 pointwise, 2 per extra block; depthwise
    convs are counted as depthwise_conv2d)."""
    blocks = ["conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv4_1", "conv4_2"] + \
        [f"conv5_{i}" for i in range(1, 7)] + ["conv6"]
    layers = [("backbone.conv1", "conv1")]
    for i, b in enumerate(blocks):
        layers += [(f"backbone.blocks.{i}.dw", f"{b}_dw"), (f"backbone.blocks.{i}.pw", f"{b}_sep")]
    extras = len(model.backbone.extras)
    for j in range(extras):
        layers += [(f"backbone.extras.{j}.squeeze", f"conv7_{j + 1}_extra1"),
                   (f"backbone.extras.{j}.down", f"conv7_{j + 1}_extra2")]
    out = {}
    for ours, name in layers:
        out[f"{ours}.conv.weight"] = f"{name}_weights"
        for p, s in (("weight", "scale"), ("bias", "offset"), ("_mean", "mean"),
                     ("_variance", "variance")):
            out[f"{ours}.bn.{p}"] = f"{name}_bn_{s}"
    n = 1 + len(blocks) + 2 * extras                  # regular convs before the head
    for i in range(len(model.ssd_head.loc_convs)):
        for k, convs in enumerate(("loc_convs", "conf_convs")):
            for p, s in (("weight", "w_0"), ("bias", "b_0")):
                out[f"ssd_head.{convs}.{i}.{p}"] = f"conv2d_{n + 2 * i + k}.{s}"
    return out


def test_static_era_paddledetection_ssd_folder_loads_with_the_same_outputs(tmp_path, capsys):
    """A static-era ssd_mobilenet_v1 folder (the names above, the head's channels in that
    era's prior order: min, ratios.., max; background class first) converted by the tool gives
    our SSD the source's backbone and, per prior, the loc / conf outputs that the static-era
    head computes (1x1 convs, priors from Paddle's own prior_box with
    min_max_aspect_ratios_order false, as MultiBoxHead used it)."""
    src = _random_model(SSD2X_CFG, seed=5)
    head = src.ssd_head
    spec = load_config(SSD2X_CFG)["SSDHead"]
    max_sizes = [m[0] if isinstance(m, list) and m else (m or None) for m in spec["max_sizes"]]
    names = _paddledet_static_ssd_names(src)
    own = src.state_dict()
    assert sorted(names) == sorted(own)
    assert names["ssd_head.loc_convs.0.weight"] == "conv2d_18.w_0"     # 1 + 13 + 2 * 2
    assert names["ssd_head.conf_convs.0.weight"] == "conv2d_19.w_0"
    static = {}
    for key, name in names.items():
        arr = own[key].numpy()
        m = key.startswith("ssd_head.") and int(key.split(".")[2])
        if key.startswith("ssd_head."):           # ours (min, max, ratios..) -> theirs
            k = len(head.prior_shapes[m])
            order = [0] + list(range(2, k)) + [1] if max_sizes[m] else list(range(k))
            per = arr.shape[0] // k
            arr = arr.reshape(k, per, *arr.shape[1:])[order].reshape(arr.shape)
        static[name] = arr
    folder = tmp_path / "ssd_mobilenet_v1_voc"
    folder.mkdir()
    for name, arr in static.items():
        t = core.DenseTensor()
        t.set(arr, paddle.CPUPlace())
        core.save_dense_tensor(t, str(folder / name))
    out_file = str(tmp_path / "converted.pdparams")
    convert = _tool("tools/convert_weights.py", "convert_tool")
    convert([str(folder), "-c", SSD2X_CFG, "--output", out_file])
    table = capsys.readouterr().out
    assert f"loaded {len(own)}, shape mismatch 0, missing 0, skipped 0" in table
    model = build_model(load_config(SSD2X_CFG))
    ckpt.load_weights(model, out_file)
    model.eval()
    # 0.3-0.5 training outputs: the same names in one fluid.save .pdparams
    by_names = build_model(load_config(SSD2X_CFG))
    paddle.save(static, str(tmp_path / "model_final.pdparams"))
    assert ckpt.load_weights(by_names, str(tmp_path / "model_final")) == \
        {"source_format": "names"}
    _same_params(model, by_names)
    image = paddle.to_tensor(np.random.RandomState(1).rand(2, 3, 160, 160).astype("float32"))
    with paddle.no_grad():
        feats = src.backbone(image)
        for a, b in zip(feats, model.backbone(image)):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
        outs = [o.numpy() for o in model.ssd_head(feats)]
        n = len(head.loc_convs)
        for i, feat in enumerate(feats):
            h, w = feat.shape[2:]
            theirs = []
            for part, c in (("loc", 4), ("conf", head.num_classes + 1)):
                conv = names[f"ssd_head.{part}_convs.{i}.weight"][:-len(".w_0")]
                y = paddle.nn.functional.conv2d(feat, paddle.to_tensor(static[conv + ".w_0"]),
                                                paddle.to_tensor(static[conv + ".b_0"]))
                theirs.append(y.numpy().transpose(0, 2, 3, 1).reshape(2, -1, c))
            mx = max_sizes[i]
            box, _ = paddle.vision.ops.prior_box(
                feat, image, min_sizes=[float(spec["min_sizes"][i])],
                max_sizes=[float(mx)] if mx else None,
                aspect_ratios=[float(a) for a in spec["aspect_ratios"][i]], flip=True,
                clip=True, offset=0.5,
                min_max_aspect_ratios_order=False)
            ours = [o.transpose(0, 2, 3, 1).reshape(2, h * w * len(head.prior_shapes[i]), -1)
                    for o in (outs[i], outs[i + n])]
            mine = make_priors([(h, w)], [head.prior_shapes[i]], head.base_size)
            for b in range(2):     # the same (prior, loc, conf) rows, in any order
                rows_t = np.concatenate([box.numpy().reshape(-1, 4), theirs[0][b],
                                         theirs[1][b]], 1)
                rows_o = np.concatenate([mine, ours[0][b], ours[1][b]], 1)
                rows_t = rows_t[np.lexsort(np.round(rows_t, 4).T[::-1])]
                rows_o = rows_o[np.lexsort(np.round(rows_o, 4).T[::-1])]
                np.testing.assert_allclose(rows_o, rows_t, atol=1e-5)


# --- PaddleClas backbones and transfer ----------------------------------------------------

def test_paddleclas_v1_backbone_as_pretrain_weights(tmp_path, capsys):
    ref = np.load(CLAS_V1.replace(".pdparams", "_io.npz"))
    model = build_model(load_config(SHAPES_CFG))     # its taps: the reference's feature maps
    head_before = {p.name: p.numpy().copy() for p in model.yolo_head.parameters()}
    load_pretrain(model, CLAS_V1)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    assert "PaddleClas 2.x backbone" in out[0] and "loaded 135 of 241" in out[0]
    assert "106 not in the weights start fresh (yolo_head.blocks, yolo_head.transitions, " \
           "yolo_head.outputs)" in out[0]
    assert "2 ignored: ImageNet classifier (fc)" in out[0]
    for p in model.yolo_head.parameters():
        np.testing.assert_array_equal(head_before[p.name], p.numpy())
    model.eval()
    with paddle.no_grad():
        feats = model.backbone(paddle.to_tensor(ref["image"]))
    for feat, key in zip(feats, ("feat4", "feat10", "feat12")):   # conv4_1, conv5_5, conv6
        assert np.abs(feat.numpy() - ref[key]).max() < 1e-5
    # as weights= (strict) the missing head is an error naming it
    with pytest.raises(W.CheckpointError, match="'yolo_block.0.0.0.conv.weights' is missing"):
        ckpt.load_weights(build_model(load_config(CFG)), CLAS_V1)


def test_paddleclas_v2_key_layout_maps_onto_our_mobilenet_v2(tmp_path, capsys):
    keys = json.load(open(os.path.join(FIX, "clas2x_mobilenet_v2_x1_0_keys.json")))
    rng = np.random.RandomState(0)
    state = {k: paddle.to_tensor(rng.rand(*shape).astype("float32"))
             for k, shape in keys.items()}
    path = str(tmp_path / "MobileNetV2_pretrained.pdparams")
    paddle.save(state, path)
    model = build_model(load_config(os.path.join(ROOT, "configs/yolov3_mobilenet_v2_voc.yml")))
    load_pretrain(model, path)
    line = capsys.readouterr().out.strip()
    assert "loaded 255 of" in line
    # the t=1 block's expansion conv (PaddleClas has one, the paper has none), the last
    # 1x1 conv and the classifier are PaddleClas's only
    m = W.match_weights(model, W.read_weights(path))
    unused = sorted({k.split("._")[0] for k, _ in m.unused})
    assert unused == ["conv2", "conv9", "out.bias", "out.weight"]
    assert all(k.startswith(("conv2._first_block._expand_conv", "conv9", "out."))
               for k, _ in m.unused)
    sd = model.state_dict()
    np.testing.assert_array_equal(sd["backbone.blocks.1.expand.conv.weight"].numpy(),
                                  state["conv3._first_block._expand_conv._conv.weight"]
                                  .numpy())
    np.testing.assert_array_equal(sd["backbone.blocks.2.dwise.bn._variance"].numpy(),
                                  state["conv3.conv3_2._bottleneck_conv._batch_norm."
                                        "_variance"].numpy())


def test_transfer_to_another_class_count_skips_the_class_layers(tmp_path, capsys, shapes_root):
    three = build_model(load_config(DET2X_CFG, ["num_classes=3"]))
    before = three.yolo_head.outputs[0].weight.numpy().copy()
    load_pretrain(three, DET2X)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert "loaded 235 of 241" in lines[0] and "6 class-dependent start fresh" in lines[0]
    assert lines[1] == ("class-dependent layers yolo_output.0.conv, yolo_output.1.conv, "
                        "yolo_output.2.conv start fresh: the weights have 4 classes, this "
                        "config 3")
    np.testing.assert_array_equal(before, three.yolo_head.outputs[0].weight.numpy())
    four = build_model(load_config(DET2X_CFG))
    ckpt.load_weights(four, DET2X)
    np.testing.assert_array_equal(three.backbone.conv1.conv.weight.numpy(),
                                  four.backbone.conv1.conv.weight.numpy())
    with pytest.raises(W.CheckpointError, match="shape mismatch for 'yolo_output.0.conv."
                       "weights'.*\\[27, 64, 1, 1\\], model has \\[24, 64, 1, 1\\].*4 classes, "
                       "this config 3"):
        ckpt.load_weights(build_model(load_config(DET2X_CFG, ["num_classes=3"])), DET2X)
    # end to end: one short fine-tuning run of train.py from them
    train = _tool("tools/train.py", "train_tool")
    bccd = os.path.join(ROOT, "configs/bccd/yolov3_mobilenet_v1_bccd.yml")   # 3 classes
    train(["-c", bccd, "-o", "YOLOv3Head.channels=[32,16,8]",
           "MobileNetV1.feature_maps=[conv3_2,conv4_2,conv6]", f"pretrain_weights={DET2X}",
           "epoch=1", f"save_dir={tmp_path / 'ft'}", "TrainDataset.sample_num=8",
           "TrainReader.worker_num=0", "TrainReader.batch_size=8"])
    out = capsys.readouterr().out
    assert "class-dependent layers yolo_output.0.conv" in out
    assert any(f.endswith(".pdparams") for _, _, fs in os.walk(tmp_path / "ft") for f in fs)


def test_static_era_weights_into_a_config_with_other_taps_are_refused(tmp_path, capsys):
    """conv4_1/conv5_5 have the shapes of conv3_2/conv4_2: without this check PaddleDetection
    weights would load into the shipped shapes/BCCD taps and compute something else."""
    folder = _write_static(_random_model(), str(tmp_path / "model_final"))
    evaluate = _tool("tools/eval.py", "eval_tool_taps")
    err = _user_error(evaluate, ["-c", SHAPES_CFG, "-o", f"weights={folder}"], capsys)
    assert "conv3_2, conv4_2, conv6" in err and "feature_maps" in err


def test_our_checkpoint_records_its_backbone_taps_and_refuses_other_taps(tmp_path):
    src = _random_model(SHAPES_CFG)
    ckpt.save_checkpoint(src, str(tmp_path / "m"))
    with pytest.raises(W.CheckpointError, match="conv4_1, conv5_5, conv6, this config reads "
                                                "conv3_2, conv4_2, conv6"):
        ckpt.load_weights(build_model(load_config(CFG)), str(tmp_path / "m"))
    same = build_model(load_config(SHAPES_CFG))
    ckpt.load_weights(same, str(tmp_path / "m"))
    _same_params(src, same)
