"""Shared fixtures. A tiny YOLOv3 is trained once per session on the shapes set (minutes).

Set PPDET_TEST_WEIGHTS=path/to/model (no suffix) to reuse weights trained elsewhere.
The weights are cached under output/test_cache/<key>, keyed by the model source and
training recipe, so local re-runs skip training.
"""
import fcntl
import hashlib
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = os.path.join(ROOT, "configs/shapes/yolov3_mobilenet_v1_shapes.yml")
# short recipe: enough for a clearly non-zero mAP, which is all the tests need
RECIPE = ["epoch=6", "snapshot_epoch=6",
          "LearningRate.schedulers=[{name: PiecewiseDecay, milestones: [5]}, "
          "{name: LinearWarmup, start_factor: 0.1, steps: 100}]"]


def _key():
    h = hashlib.sha256(" ".join(RECIPE).encode())
    for sub in ("ppdet/modeling", "ppdet/data", "ppdet/engine"):
        for dirpath, _, files in sorted(os.walk(os.path.join(ROOT, sub))):
            for f in sorted(files):
                if f.endswith(".py"):
                    with open(os.path.join(dirpath, f), "rb") as fh:
                        h.update(fh.read())
    with open(CFG, "rb") as fh:
        h.update(fh.read())
    return h.hexdigest()[:12]


def trained_weights():
    if os.environ.get("PPDET_TEST_WEIGHTS"):
        return os.environ["PPDET_TEST_WEIGHTS"]
    from ppdet.core.config import load_config
    from ppdet.data.shapes import ensure_shapes
    from ppdet.engine.trainer import Trainer, set_seed
    out = os.path.join(ROOT, "output", "test_cache", _key())
    final = os.path.join(out, "model_final")
    os.makedirs(out, exist_ok=True)
    # pytest-xdist workers ask at once: one trains, the others wait for its weights
    with open(out + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.isfile(final + ".pdparams"):
            ensure_shapes()
            cfg = load_config(CFG, RECIPE)
            set_seed(0)
            Trainer(cfg, save_dir=out).train()
    return final


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def shapes_root():
    from ppdet.data.shapes import ensure_shapes
    return str(ensure_shapes())


@pytest.fixture(scope="session")
def trained(shapes_root):
    """Path (no suffix) of tiny YOLOv3 weights trained on the shapes set."""
    return trained_weights()
