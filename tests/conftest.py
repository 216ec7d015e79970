"""Shared fixtures. A tiny YOLOv3 is trained once per session on the shapes set (minutes).

Set PPDET_TEST_WEIGHTS=path/to/model (no suffix) to reuse weights trained elsewhere.
The weights are cached under output/test_cache/<key>, keyed by the model source and
training recipe, so local re-runs skip training. The suite runs on every core (pytest-xdist,
pyproject.toml); the training starts in the background as soon as the tests are collected.
"""
import fcntl
import hashlib
import os
import subprocess
import sys

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


def _final():
    return os.path.join(ROOT, "output", "test_cache", _key(), "model_final")


def trained_weights():
    if os.environ.get("PPDET_TEST_WEIGHTS"):
        return os.environ["PPDET_TEST_WEIGHTS"]
    from ppdet.core.config import load_config
    from ppdet.data.shapes import ensure_shapes
    from ppdet.engine.trainer import Trainer, set_seed
    final = _final()
    out = os.path.dirname(final)
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


def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (pyproject.toml): a worker per core, at most 4. Each worker is a Paddle
    process of about 1 GB, and most tests are single-threaded and short."""
    return max(1, min(os.cpu_count() or 1, 4))


_TRAINER = []


@pytest.hookimpl(trylast=True)          # after -k / -m deselection: train only when needed
def pytest_collection_modifyitems(config, items):
    """Tests that need the trained weights run last, and one process (the first xdist
    worker) starts training them in the background at once: the workers run every other
    test meanwhile instead of waiting for the weights. Within each part the tests marked
    ``long`` go first, so that no worker is left alone with a long one at the end."""
    needs = lambda item: "trained" in getattr(item, "fixturenames", ())
    items.sort(key=lambda item: (needs(item), item.get_closest_marker("long") is None))
    if (os.environ.get("PYTEST_XDIST_WORKER", "gw0") == "gw0" and any(map(needs, items))
            and not config.option.collectonly
            and not os.environ.get("PPDET_TEST_WEIGHTS")
            and not os.path.isfile(_final() + ".pdparams")):
        os.makedirs(os.path.dirname(_final()), exist_ok=True)
        with open(_final() + ".log", "w") as log:    # the fixture trains itself if this fails
            _TRAINER.append(subprocess.Popen([sys.executable, __file__], cwd=ROOT,
                                             stdout=log, stderr=subprocess.STDOUT))


def pytest_sessionfinish(session):
    for proc in _TRAINER:                          # never left running after the session
        proc.wait()


@pytest.fixture(scope="session")
def shapes_root():
    from ppdet.data.shapes import ensure_shapes
    return str(ensure_shapes())


@pytest.fixture(scope="session")
def trained(shapes_root):
    """Path (no suffix) of tiny YOLOv3 weights trained on the shapes set."""
    return trained_weights()


if __name__ == "__main__":               # the background training started above
    sys.path.insert(0, ROOT)
    print(trained_weights())
