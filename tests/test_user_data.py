"""A user's own config and data: tagged objects replace, classes are checked, COCO metric
sensitivity end to end, the sensitivities file cannot be polluted, outputs keep modes."""
import errno
import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from ppdet.core.config import ConfigError, load_config
from ppdet.core.errors import DataError, UserError, WriteError
from ppdet.engine.builder import build_dataset, build_reader

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES_CFG = os.path.join(ROOT, "configs/shapes/yolov3_mobilenet_v1_shapes.yml")
BCCD_CFG = os.path.join(ROOT, "configs/bccd/yolov3_mobilenet_v1_bccd.yml")
SHAPES_COCO = os.path.join(ROOT, "dataset/shapes/coco")
CONV = "yolo_block.0.tip.conv.weights"


def _yaml(path, text):
    path.write_text(text)
    return str(path)


# --- 1. config semantics -------------------------------------------------------------------
def test_a_tagged_dataset_given_again_replaces_the_inherited_one(tmp_path, shapes_root):
    top = _yaml(tmp_path / "mine.yml", f"""
_BASE_: ['{BCCD_CFG}']
num_classes: 4
TrainDataset: !COCODataSet
  dataset_dir: {SHAPES_COCO}
  image_dir: images
  anno_path: annotations/instances_train.json
EvalDataset: !VOCDataSet
  dataset_dir: {shapes_root}/voc
  anno_path: ImageSets/Main/val.txt
  label_list: label_list.txt
YOLOv3Loss:
  ignore_thresh: 0.6
""")
    cfg = load_config(top)
    assert cfg["TrainDataset"] == {"name": "COCODataSet", "dataset_dir": SHAPES_COCO,
                                   "image_dir": "images",
                                   "anno_path": "annotations/instances_train.json"}
    assert "class_names" not in cfg["EvalDataset"]          # BCCD's names are gone
    assert cfg["YOLOv3Loss"] == {"ignore_thresh": 0.6, "label_smooth": False,
                                 "assign": "per_level"}     # plain mappings still merge
    voc = build_dataset(cfg, "eval")
    assert voc.num_classes == 4 and "RBC" not in voc.class_names
    # -o with a tag replaces too; -o of one key still merges into the tagged object
    cfg = load_config(top, ["EvalDataset=!COCODataSet {dataset_dir: x, anno_path: y}"])
    assert cfg["EvalDataset"] == {"name": "COCODataSet", "dataset_dir": "x", "anno_path": "y"}
    cfg = load_config(top, ["EvalDataset.anno_path=ImageSets/Main/train.txt"])
    assert cfg["EvalDataset"]["label_list"] == "label_list.txt"
    with pytest.raises(ConfigError, match="EvalDataset.class_names"):
        load_config(top, ["EvalDataset=!COCODataSet {dataset_dir: x, anno_path: y, "
                          "class_names: [a]}"])


def test_later_base_with_a_tag_replaces_an_earlier_base(tmp_path):
    _yaml(tmp_path / "a.yml", "LearningRate:\n  base_lr: 0.1\n  schedulers:\n  - !Piecewise"
          "Decay {milestones: [3]}\nTrainDataset: !VOCDataSet {dataset_dir: a, anno_path: b,"
          " class_names: [x]}\n")
    _yaml(tmp_path / "b.yml", "TrainDataset: !COCODataSet {dataset_dir: c, anno_path: d}\n"
          "LearningRate: {base_lr: 0.2}\n")
    cfg = load_config(_yaml(tmp_path / "top.yml", "_BASE_: [a.yml, b.yml]\n"))
    assert cfg["TrainDataset"] == {"name": "COCODataSet", "dataset_dir": "c", "anno_path": "d"}
    assert cfg["LearningRate"]["base_lr"] == 0.2 and len(cfg["LearningRate"]["schedulers"]) == 1
    assert type(cfg["TrainDataset"]) is dict                 # plain dicts come out


# --- 2. classes ----------------------------------------------------------------------------
def _coco_with_unused_parent(tmp_path):
    with open(os.path.join(SHAPES_COCO, "annotations/instances_val.json")) as f:
        gt = json.load(f)
    gt["categories"] = [{"id": 0, "name": "shape"}] + gt["categories"]
    path = tmp_path / "with_parent.json"
    path.write_text(json.dumps(gt))
    return str(path)


def test_num_classes_is_checked_against_the_categories(tmp_path, shapes_root, capsys):
    anno = _coco_with_unused_parent(tmp_path)
    opts = [f"EvalDataset=!COCODataSet {{dataset_dir: {SHAPES_COCO}, image_dir: images, "
            f"anno_path: {anno}}}", "metric=COCO"]
    cfg = load_config(SHAPES_CFG, opts)                        # num_classes: 4
    with pytest.raises(ConfigError) as e:
        build_dataset(cfg, "eval")
    msg = str(e.value)
    assert "num_classes is 4" in msg and "5 classes" in msg and "set num_classes: 5" in msg
    assert "'shape'" in msg and "\n" not in msg
    cfg = load_config(SHAPES_CFG, opts + ["num_classes=5"])
    assert build_dataset(cfg, "eval").num_classes == 5        # unused: fine, and counted
    assert "1 of them without any box" in capsys.readouterr().out
    build_dataset(load_config(SHAPES_CFG, ["num_classes=3"]), "test")   # test mode: no check


def test_training_with_eval_reports_the_eval_set_before_training(tmp_path, shapes_root,
                                                                   capsys):
    """A class count the eval set disagrees with stops train.py --eval at once, not after
    the first snapshot's training."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("train_tool_early",
                                                  os.path.join(ROOT, "tools/train.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    anno = _coco_with_unused_parent(tmp_path)
    save = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        tool.main(["-c", SHAPES_CFG, "--eval", "-o", "epoch=1", f"save_dir={save}",
                   f"EvalDataset=!COCODataSet {{dataset_dir: {SHAPES_COCO}, image_dir: images, "
                   f"anno_path: {anno}}}"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "num_classes is 4" in err and "Traceback" not in err
    assert not save.exists() or not any(save.rglob("*.pdparams"))    # nothing trained


# --- 6. data defects and skip_bad_images ------------------------------------------------------
def test_training_skips_unreadable_images_only_when_asked(tmp_path, shapes_root, capsys):
    voc = tmp_path / "voc"
    shutil.copytree(os.path.join(shapes_root, "voc"), voc,
                    ignore=shutil.ignore_patterns("train_*.jpg", "val_000[1-9]*"))
    (voc / "JPEGImages" / "val_00003.jpg").write_bytes(b"broken")
    ids = ["val_00000", "val_00001", "val_00002", "val_00003"]
    (voc / "ImageSets/Main/few.txt").write_text("\n".join(ids) + "\n")
    for i in ids[1:3]:
        shutil.copy(os.path.join(shapes_root, "voc/JPEGImages", f"{i}.jpg"), voc / "JPEGImages")
    base = [f"TrainDataset.dataset_dir={voc}", "TrainDataset.anno_path=ImageSets/Main/few.txt",
            "TrainReader.batch_size=4", "TrainReader.drop_last=false", "worker_num=0"]
    with pytest.raises(DataError, match="val_00003.jpg.*skip_bad_images"):
        list(build_reader(load_config(SHAPES_CFG, base), "train"))
    loader = build_reader(load_config(SHAPES_CFG, base + ["TrainReader.skip_bad_images=true"]),
                          "train")
    assert "skipping 1 of 4 training images" in capsys.readouterr().err
    batch = next(iter(loader))
    assert len(batch["im_id"]) == 3


# --- 4. the sensitivities file -----------------------------------------------------------------
def test_a_baseline_of_zero_is_refused_before_anything_is_written(tmp_path):
    from ppdet.slim.sensitivity.analysis import run_sensitivity
    from ppdet.slim.sensitivity.store import SensitivityStore

    class Blind:
        def baseline(self):
            return 0.0
    store = SensitivityStore(str(tmp_path / "s.data"), {"weights": "w"})
    with pytest.raises(UserError, match="baseline mAP is 0.00"):
        run_sensitivity(Blind(), store, [CONV], [0.1], progress=False)
    assert os.listdir(tmp_path) == []
    with pytest.raises(UserError, match="not above 0"):
        store.set_baseline(-0.1)
    assert os.listdir(tmp_path) == []


def test_no_sidecar_needs_adopt_to_write_and_every_write_checks_the_fingerprint(tmp_path):
    from ppdet.slim.sensitivity.store import SensitivityStore, load_sensitivities_file
    f = tmp_path / "theirs.data"
    f.write_bytes(pickle.dumps({CONV: {0.1: 0.02}}))
    with pytest.raises(UserError, match="--adopt"):
        SensitivityStore(str(f), {"weights": "a"})
    store = SensitivityStore(str(f), {"weights": "a"}, adopt=True)
    store.set_baseline(0.4)
    store.add(CONV, 0.2, 0.05)
    assert load_sensitivities_file(str(f)) == {CONV: {0.1: 0.02, 0.2: 0.05}}
    # another process claimed the file in between: the next write is refused
    late = SensitivityStore(str(tmp_path / "new.data"), {"weights": "a"})
    other = SensitivityStore(str(tmp_path / "new.data"), {"weights": "b"})
    other.set_baseline(0.5)
    with pytest.raises(UserError, match="another weights"):
        late.add(CONV, 0.1, 0.1)
    with pytest.raises(UserError, match="another weights"):
        late.set_baseline(0.5)
    assert not os.path.exists(tmp_path / "new.data")


def test_merge_keeps_what_the_output_holds(tmp_path):
    from ppdet.slim.sensitivity.store import SensitivityStore, merge_with_sidecars
    a, out = str(tmp_path / "a.data"), str(tmp_path / "out.data")
    for path, ratio in ((a, 0.1), (out, 0.2)):
        s = SensitivityStore(path, {"weights": "w"})
        s.set_baseline(0.5)
        s.add(CONV, ratio, ratio)
    merged = merge_with_sidecars([a], out)
    assert merged == {CONV: {0.1: 0.1, 0.2: 0.2}}
    # records of unknown origin (no sidecar) never enter a fingerprinted file unasked
    plain = str(tmp_path / "plain.data")
    with open(plain, "wb") as f:
        pickle.dump({CONV: {0.5: 0.3}}, f, protocol=2)
    before = open(out, "rb").read()
    with pytest.raises(UserError, match="plain.data has no sidecar.*--adopt"):
        merge_with_sidecars([plain], out)
    assert open(out, "rb").read() == before
    assert merge_with_sidecars([plain], out, adopt=True)[CONV][0.5] == 0.3


# --- 7. outputs ------------------------------------------------------------------------------
def test_written_files_keep_the_umask_mode_and_stale_temps_go(tmp_path):
    from ppdet.slim.sensitivity.store import SensitivityStore
    from ppdet.utils.atomic import atomic_write_bytes
    old = os.umask(0o022)
    try:
        stale = tmp_path / ".x.bin.999999999.abc.tmp"        # a pid that cannot run
        stale.write_text("left by kill -9")
        atomic_write_bytes(str(tmp_path / "x.bin"), b"1")
        s = SensitivityStore(str(tmp_path / "s.data"), {"weights": "w"})
        s.set_baseline(0.5)
        s.add(CONV, 0.1, 0.0)
        for name in ("x.bin", "s.data", "s.data.meta.json"):
            assert oct(os.stat(tmp_path / name).st_mode & 0o777) == oct(0o644), name
        assert not stale.exists()
        os.chmod(tmp_path / "x.bin", 0o600)                   # an existing file keeps its own
        atomic_write_bytes(str(tmp_path / "x.bin"), b"2")
        assert os.stat(tmp_path / "x.bin").st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_a_full_disk_is_one_line_and_the_previous_file_stays(tmp_path, monkeypatch):
    from ppdet.utils import atomic
    path = tmp_path / "keep.data"
    path.write_bytes(b"previous")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(WriteError) as e:
        atomic.atomic_write_bytes(str(path), b"new contents")
    assert "no space left" in str(e.value) and "previous file is unchanged" in str(e.value)
    assert path.read_bytes() == b"previous" and os.listdir(tmp_path) == ["keep.data"]


# --- 3 and 4 end to end: COCO sensitivity, and two processes racing for one file -------------
@pytest.fixture(scope="module")
def quick(tmp_path_factory, shapes_root):
    """Weights trained for seconds (mAP small but above 0), and a copy that differs a bit."""
    from ppdet.engine.checkpoint import save_checkpoint
    from ppdet.engine.trainer import Trainer, set_seed
    out = tmp_path_factory.mktemp("quick")
    cfg = load_config(SHAPES_CFG, [
        "epoch=4", "TrainDataset.sample_num=96", "worker_num=0", "LearningRate.base_lr=0.006",
        "LearningRate.schedulers=[{name: LinearWarmup, start_factor: 0.3, steps: 10}]"])
    set_seed(0)
    trainer = Trainer(cfg, save_dir=str(out / "a"))
    trainer.train()
    param = next(p for p in trainer.model.parameters() if p.name == CONV)
    param.set_value(param * 0.999)
    save_checkpoint(trainer.model, str(out / "b" / "model_final"))
    coco = out / "coco.yml"
    coco.write_text(f"_BASE_: ['{SHAPES_CFG}']\nmetric: COCO\n"
                    f"EvalDataset: !COCODataSet\n  dataset_dir: {SHAPES_COCO}\n"
                    f"  image_dir: images\n  anno_path: annotations/instances_val.json\n")
    return {"a": str(out / "a" / "model_final"), "b": str(out / "b" / "model_final"),
            "coco": str(coco), "dir": out}


def _sensitive(argv):
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "sensitive_script", os.path.join(ROOT, "slim/sensitive/sensitive.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def test_coco_metric_sensitivity_fast_and_real_agree(quick, tmp_path, capsys):
    from ppdet.slim.prune.search import ratios_by_loss
    from ppdet.slim.sensitivity.store import load_sensitivities_file
    common = ["-c", quick["coco"], "-o", f"weights={quick['a']}", "-p", CONV,
              "-r", "0.3 0.6", "--eval_samples", "16"]
    fast, real = str(tmp_path / "fast.data"), str(tmp_path / "real.data")
    _sensitive(common + ["-s", fast])
    out = capsys.readouterr().out
    assert "loss on AP(0.50:0.95)" in out and "baseline AP(0.50:0.95)" in out
    _sensitive(common + ["-s", real, "--mode", "real"])
    a, b = load_sensitivities_file(fast), load_sensitivities_file(real)
    assert set(a[CONV]) == {0.3, 0.6}
    np.testing.assert_allclose([a[CONV][r] for r in (0.3, 0.6)],
                               [b[CONV][r] for r in (0.3, 0.6)], atol=1e-4)
    meta = json.load(open(fast + ".meta.json"))
    assert meta["fingerprint"]["metric"] == "COCO" and meta["baseline"] > 0
    assert ratios_by_loss(a, 10.0)[CONV] > 0                 # pruning reads it as any file
    # the same file under the VOC metric is refused, and left as it was
    before = open(fast, "rb").read()
    with pytest.raises(SystemExit):
        _sensitive(["-c", SHAPES_CFG, "-o", f"weights={quick['a']}", "-p", CONV,
                    "-r", "0.3", "--eval_samples", "16", "-s", fast])
    assert "another" in capsys.readouterr().err and open(fast, "rb").read() == before


def test_two_processes_with_different_weights_cannot_share_one_file(quick, tmp_path):
    from ppdet.slim.sensitivity.store import load_sensitivities_file
    path = str(tmp_path / "shared.data")
    procs = [subprocess.Popen(
        [sys.executable, "slim/sensitive/sensitive.py", "-c", SHAPES_CFG, "-o",
         f"weights={quick[k]}", "-p", CONV, "-r", "0.2 0.4 0.6", "--eval_samples", "12",
         "-s", path], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for k in ("a", "b")]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    codes = sorted(r[0] for r in results)
    assert codes == [0, 2], results
    loser = next(r for r in results if r[0] == 2)
    # paddle's own log lines (from C++) and a progress bar share stderr; ours is one line
    err = [ln for ln in loser[2].replace("\r", "\n").split("\n") if ln.startswith("error")]
    assert len(err) == 1 and "another weights" in err[0] and "shared.data" in err[0], loser[2]
    assert "Traceback" not in loser[2]
    winner = "a" if results[0][0] == 0 else "b"
    import hashlib
    want = hashlib.sha256(open(quick[winner] + ".pdparams", "rb").read()).hexdigest()
    meta = json.load(open(path + ".meta.json"))
    assert meta["fingerprint"]["weights"] == want
    assert set(load_sensitivities_file(path)[CONV]) == {0.2, 0.4, 0.6}


def test_readme_shows_the_dataset_swap():
    """The README's data page (docs/data.md) shows a config that swaps the dataset."""
    text = open(os.path.join(ROOT, "docs", "data.md")).read()
    assert "inherit a config, swap the dataset" in text.lower()
    block = text[text.lower().index("inherit a config, swap the dataset"):]
    assert "!COCODataSet" in block and "AP(0.50:0.95)" in text
    example = block.split("```yaml", 1)[1].split("```", 1)[0]
    assert "!COCODataSet" in yaml.load(example, Loader=_TagKeeper)["TrainDataset"]["name"]


class _TagKeeper(yaml.SafeLoader):
    pass


_TagKeeper.add_multi_constructor(
    "!", lambda loader, tag, node: {"name": "!" + tag, **loader.construct_mapping(node)})
