"""Helpers several test files share: tiny models with random BN, the outputs pruning tests
compare, the masked-evaluation set-up, and the one-line-error check of the bad-input tables.
"""
import hashlib
import importlib.util
import os
import re
import subprocess
import sys

import numpy as np
import paddle

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES_CFG = os.path.join(ROOT, "configs/shapes/yolov3_mobilenet_v1_shapes.yml")


def small_train(sample_num):
    """Overrides for a fast training of the shapes YOLOv3: ``sample_num`` images, batches
    of 8 at 96-128 px, no loader workers, a snapshot every epoch."""
    return [f"TrainDataset.sample_num={sample_num}", "TrainReader.batch_size=8",
            "TrainReader.worker_num=0",
            "TrainReader.batch_transforms=[{BatchRandomResize: {target_size: [96, 128]}}, "
            "{NormalizeBox: {}}, {PadBox: {num_max_boxes: 20}}, {BboxXYXY2XYWH: {}}, "
            "{NormalizeImage: {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}}, "
            "{Permute: {}}]", "snapshot_epoch=1"]


def moderate_bn(rng, n):
    """BN scales near 1 and small shifts: masking errors show, nothing is near zero."""
    return (rng.uniform(0.5, 1.5, n), rng.uniform(-0.5, 0.5, n), rng.uniform(-0.2, 0.2, n),
            rng.uniform(0.5, 1.5, n))


def slimming_bn(rng, n):
    """Scales from 0.01 to 1 and wide offsets: every folded offset and mean matters."""
    return (rng.uniform(0.01, 1, n), rng.randn(n) * 0.5, rng.randn(n) * 0.1,
            rng.uniform(0.5, 2, n))


def random_bn_model(config, seed=0, draw=moderate_bn):
    """The config's model (relative to the repository) in eval mode, every BN's scale,
    offset, mean and variance drawn by ``draw(rng, n)`` from one seed."""
    from ppdet.core.config import load_config
    from ppdet.engine.builder import build_model
    paddle.seed(seed)
    rng = np.random.RandomState(seed)
    model = build_model(load_config(os.path.join(ROOT, config)))
    for layer in model.sublayers():
        if isinstance(layer, paddle.nn.BatchNorm):
            w, b, mean, var = draw(rng, layer.weight.shape[0])
            for param, value in ((layer.weight, w), (layer.bias, b), (layer._mean, mean),
                                 (layer._variance, var)):
                param.set_value(np.asarray(value).astype("float32"))
    model.eval()
    return model


def head_outputs(model, x):
    """The raw head outputs as numpy arrays, no gradients."""
    with paddle.no_grad():
        return [o.numpy() for o in model.head_outputs(x)]


def masked_setup(config, weights, max_samples):
    """``(cfg, model, cache, metric, pruner)``: trained weights, the eval set cached (the
    first ``max_samples`` images), the config's metric and a pruner on the model."""
    from ppdet.core.config import load_config
    from ppdet.engine.builder import build_dataset, build_metric_for, build_model
    from ppdet.engine.checkpoint import load_weights
    from ppdet.slim.prune.pruner import FilterPruner
    from ppdet.slim.sensitivity.cache import EvalCache
    cfg = load_config(os.path.join(ROOT, config))
    model = build_model(cfg)
    load_weights(model, weights)
    cache = EvalCache(build_dataset(cfg, "eval"), cfg["EvalReader"]["sample_transforms"],
                      max_samples=max_samples, progress=False)
    return cfg, model, cache, build_metric_for(cfg, cache.dataset), FilterPruner(model)


_SCRIPTS = {}


def script(rel):
    """A script's module, imported from its file once."""
    if rel not in _SCRIPTS:
        name = "script_" + rel.replace("/", "_").replace(".py", "")
        spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, rel))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _SCRIPTS[rel] = module
    return _SCRIPTS[rel]


def snapshot(root):
    """``{path: sha256}`` of every file under ``root``."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            path = os.path.join(dirpath, f)
            with open(path, "rb") as fh:
                out[path] = hashlib.sha256(fh.read()).hexdigest()
    return out


def assert_one_error_line(err, words=()):
    """``err`` is what a terminal shows as one ``error:`` line (progress bars redraw with
    \\r, and a closed one is cleared), no traceback, holding every one of ``words``."""
    lines = [ln.split("\r")[-1] for ln in err.split("\n")]
    lines = [ln for ln in lines if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error:") and "Traceback" not in err, err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def assert_unchanged(before, after):
    """Every file of the ``before`` snapshot byte-identical, and no new file but locks."""
    assert {p: h for p, h in after.items() if p in before} == before
    new = [p for p in after if p not in before and not p.endswith(".lock")]
    assert not new, new


def assert_same_checkpoint(path_a, path_b):
    """Two ``.pdparams`` hold the same tensors (float tolerance), the metadata aside;
    returns both loaded, for the caller's checks of the metadata."""
    from ppdet.engine import checkpoint as ckpt
    a, b = paddle.load(str(path_a)), paddle.load(str(path_b))
    assert a.keys() == b.keys()
    for key in a:
        if key != ckpt.META_KEY:
            np.testing.assert_allclose(np.asarray(a[key]), np.asarray(b[key]), rtol=1e-5,
                                       atol=1e-6, err_msg=key)
    return a, b


def launch_ddp_checksum(tmp_path, opts, env=None, config=SHAPES_CFG):
    """tests/scripts/ddp_checksum.py on 2 CPU processes through paddle.distributed.launch.
    Returns the workers' logs and ``{rank: (checksum, steps)}``; fails with every log's
    tail when the launch fails."""
    env = dict(os.environ, DDP_SAVE=str(tmp_path / "out"), **(env or {}))
    r = subprocess.run([sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node",
                        "2", "--log_dir", str(tmp_path / "log"),
                        os.path.join(ROOT, "tests/scripts/ddp_checksum.py"), config, *opts,
                        "save_dir=" + str(tmp_path / "out")],
                       cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    logs = "".join(open(tmp_path / "log" / f).read() for f in sorted(os.listdir(tmp_path / "log"))
                   if f.startswith("workerlog"))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:] + logs[-2000:]
    found = {rank: (checksum, steps) for rank, checksum, steps in
             re.findall(r"rank (\d)/2 checksum ([\d.]+) steps (\d+)", logs)}
    assert set(found) == {"0", "1"}, logs[-2000:]
    return logs, found
