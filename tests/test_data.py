"""Data layer: shapes generator, VOC/COCO readers, transforms and the batch loader."""
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from ppdet.core.registry import DATASETS, TRANSFORMS
from ppdet.data import COCODataSet, Compose, VOCDataSet, build_loader, ensure_shapes, make_shapes
from ppdet.data import shapes as shapes_mod
from ppdet.data.shapes import CLASS_NAMES, IMAGE_SIZE

BCCD = Path(__file__).resolve().parents[1].parent / "shared/datasets/bccd"


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    return make_shapes(tmp_path_factory.mktemp("shapes"), seed=0, n_train=6, n_val=3)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_shapes_deterministic(shapes_root, tmp_path):
    again = _files(make_shapes(tmp_path / "a", seed=0, n_train=6, n_val=3))
    first = _files(shapes_root)
    assert again.keys() == first.keys() and again == first
    other = _files(make_shapes(tmp_path / "b", seed=1, n_train=6, n_val=3))
    assert other["voc/JPEGImages/train_00000.jpg"] != first["voc/JPEGImages/train_00000.jpg"]
    for name in ["voc/label_list.txt", "voc/train_list.txt", "voc/val_list.txt",
                 "voc/ImageSets/Main/train.txt", "voc/ImageSets/Main/val.txt",
                 "coco/annotations/instances_train.json", "coco/annotations/instances_val.json",
                 "coco/images/val_00002.jpg", "voc/Annotations/train_00005.xml"]:
        assert name in first, name
    assert first["voc/label_list.txt"].decode().split() == list(CLASS_NAMES)
    im = cv2.imread(str(shapes_root / "voc/JPEGImages/train_00000.jpg"))
    assert im.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)


def test_shapes_voc_and_coco_layouts_agree(shapes_root):
    for split, n in (("train", 6), ("val", 3)):
        gt = json.loads((shapes_root / f"coco/annotations/instances_{split}.json").read_text())
        assert [c["id"] for c in gt["categories"]] == [1, 2, 3, 4]
        cat = {c["id"]: c["name"] for c in gt["categories"]}
        assert len(gt["images"]) == n
        for im in gt["images"]:
            xml = ET.parse(shapes_root / "voc/Annotations" /
                           im["file_name"].replace(".jpg", ".xml")).getroot()
            assert int(xml.findtext("size/width")) == im["width"] == IMAGE_SIZE
            voc = sorted((o.findtext("name"), *[int(o.findtext(f"bndbox/{k}"))
                          for k in ("xmin", "ymin", "xmax", "ymax")])
                         for o in xml.iter("object"))
            coco = sorted((cat[a["category_id"]], a["bbox"][0], a["bbox"][1],
                           a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3])
                          for a in gt["annotations"] if a["image_id"] == im["id"])
            assert voc == coco and 1 <= len(voc) <= 4
            assert all(a["iscrowd"] == 0 and a["area"] == a["bbox"][2] * a["bbox"][3]
                       for a in gt["annotations"])
            assert all(16 <= x2 - x1 <= 110 and 16 <= y2 - y1 <= 110 for _, x1, y1, x2, y2 in voc)


def test_ensure_shapes_redoes_interrupted_generation(tmp_path, monkeypatch):
    calls = []
    real = shapes_mod.make_shapes
    monkeypatch.setattr(shapes_mod, "make_shapes", lambda *a: calls.append(a) or real(*a))
    root = ensure_shapes(tmp_path, n_train=2, n_val=1)
    assert len(calls) == 1 and (root / shapes_mod.MARKER).is_file()
    ensure_shapes(tmp_path, n_train=2, n_val=1)
    assert len(calls) == 1  # complete: left alone
    (root / shapes_mod.MARKER).unlink()  # as if killed before the end
    ensure_shapes(tmp_path, n_train=2, n_val=1)
    assert len(calls) == 2 and (root / shapes_mod.MARKER).is_file()
    ensure_shapes(tmp_path, n_train=3, n_val=1)  # other arguments: regenerated
    assert len(calls) == 3 and len(list((root / "voc/JPEGImages").glob("*.jpg"))) == 4


def _same_records(a, b, keys=("gt_bbox", "gt_class", "difficult", "is_crowd")):
    assert len(a) == len(b)
    for ra, rb in zip(a.records, b.records):
        assert Path(ra["im_file"]).name == Path(rb["im_file"]).name
        assert (ra["h"], ra["w"]) == (rb["h"], rb["w"])
        for k in keys:
            assert ra[k].dtype == rb[k].dtype and np.array_equal(ra[k], rb[k]), k


def test_voc_and_coco_readers_agree(shapes_root):
    voc = shapes_root / "voc"
    by_ids = VOCDataSet(voc, "ImageSets/Main/train.txt")
    by_list = DATASETS.build("VOCDataSet", {"dataset_dir": str(voc), "anno_path": "train_list.txt",
                                            "label_list": "label_list.txt"})
    coco = COCODataSet(shapes_root / "coco", "annotations/instances_train.json", "images")
    _same_records(by_ids, by_list)
    assert [r["im_file"] for r in by_ids.records] == [r["im_file"] for r in by_list.records]
    _same_records(by_ids, coco, keys=("gt_bbox", "gt_class"))
    r = by_ids[0]
    assert Path(r["im_file"]).is_absolute() and r["gt_bbox"].dtype == np.float32
    assert r["gt_bbox"].shape == (len(r["gt_class"]), 4) and r["gt_class"].dtype == np.int32
    for ds in (by_ids, coco):
        assert ds.class_names == list(CLASS_NAMES) and ds.num_classes == 4
        assert ds.clsid2catid == {0: 1, 1: 2, 2: 3, 3: 4}
    assert [r["im_id"] for r in by_ids.records] == list(range(6))
    assert [r["im_id"] for r in coco.records] == list(range(1, 7))
    r["gt_bbox"][:] = -1  # items are copies
    assert by_ids.records[0]["gt_bbox"].min() >= 0
    gt = by_ids.to_coco_gt()
    assert len(gt["images"]) == 6 and [c["name"] for c in gt["categories"]] == list(CLASS_NAMES)
    assert len(gt["annotations"]) == sum(len(r["gt_class"]) for r in by_ids.records)
    assert VOCDataSet(voc, "train_list.txt", sample_num=2).records[1]["im_id"] == 1


@pytest.mark.skipif(not BCCD.is_dir(), reason=f"BCCD not found at {BCCD}")
def test_bccd_loads_and_drops_zero_area_boxes():
    with pytest.warns(UserWarning, match=r"dropped 1 degenerate boxes in 1 images of .*bccd"):
        train = VOCDataSet(str(BCCD), "ImageSets/Main/train.txt")
    assert len(train) == 205 and train.class_names == ["Platelets", "RBC", "WBC"]
    with pytest.warns(UserWarning, match=r"dropped 2 degenerate boxes in 2 images"):
        trainval = VOCDataSet(str(BCCD), "ImageSets/Main/trainval.txt")
    assert len(trainval) == 292
    n_xml = sum(len(ET.parse(BCCD / "Annotations" / f"{Path(r['im_file']).stem}.xml")
                    .getroot().findall("object")) for r in trainval.records)
    assert sum(len(r["gt_bbox"]) for r in trainval.records) == n_xml - 2
    by_name = {Path(r["im_file"]).stem: r for r in trainval.records}
    for stem in ("BloodImage_00338", "BloodImage_00343"):
        xml = ET.parse(BCCD / "Annotations" / f"{stem}.xml").getroot()
        assert len(by_name[stem]["gt_bbox"]) == len(list(xml.iter("object"))) - 1
    boxes = np.concatenate([r["gt_bbox"] for r in trainval.records])
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert trainval.records[0]["h"] == 480 and trainval.records[0]["w"] == 640
    from pycocotools.coco import COCO
    coco = COCO()
    coco.dataset = train.to_coco_gt()
    coco.createIndex()
    assert len(coco.getImgIds()) == 205 and len(coco.getCatIds()) == 3


def test_missing_files_are_named(shapes_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="make_shapes.py"):
        VOCDataSet(tmp_path / "dataset/shapes/voc", "train_list.txt")
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        VOCDataSet(shapes_root / "voc", "nope.txt")
    with pytest.raises(FileNotFoundError, match="no_labels.txt"):
        VOCDataSet(shapes_root / "voc", "train_list.txt", label_list="no_labels.txt")
    with pytest.raises(FileNotFoundError, match="nope.json"):
        COCODataSet(shapes_root / "coco", "annotations/nope.json")
    bad = tmp_path / "bad"
    (bad / "Annotations").mkdir(parents=True)
    (bad / "list.txt").write_text("JPEGImages/x.jpg Annotations/missing.xml\n")
    with pytest.raises(FileNotFoundError, match="missing.xml"):
        VOCDataSet(bad, "list.txt")
    (bad / "Annotations/broken.xml").write_text("<annotation><object>")
    (bad / "list.txt").write_text("JPEGImages/x.jpg Annotations/broken.xml\n")
    with pytest.raises(ValueError, match="broken.xml"):
        VOCDataSet(bad, "list.txt")
    xml = (shapes_root / "voc/Annotations/train_00000.xml").read_text()
    (bad / "Annotations/odd.xml").write_text(xml.replace(
        f"<name>{CLASS_NAMES[0]}</name>", "<name>hexagon</name>").replace(
        f"<name>{CLASS_NAMES[1]}</name>", "<name>hexagon</name>").replace(
        f"<name>{CLASS_NAMES[2]}</name>", "<name>hexagon</name>").replace(
        f"<name>{CLASS_NAMES[3]}</name>", "<name>hexagon</name>"))
    (bad / "list.txt").write_text("train_00000.jpg Annotations/odd.xml\n")
    with pytest.raises(ValueError, match=r"odd\.xml.*hexagon"):
        VOCDataSet(bad, "list.txt", image_dir=str(shapes_root / "voc/JPEGImages"),
                   class_names=list(CLASS_NAMES))
    with pytest.raises(FileNotFoundError, match="gone.jpg"):
        TRANSFORMS.build("Decode")({"im_file": str(tmp_path / "gone.jpg")})


def _box_sample(h=120, w=160):
    """Black image with white rectangles exactly at gt_bbox."""
    boxes = np.array([[20, 30, 60, 90], [95, 10, 150, 50]], np.float32)
    img = np.zeros((h, w, 3), np.uint8)
    for x1, y1, x2, y2 in boxes.astype(int):
        img[y1:y2, x1:x2] = 255
    n = len(boxes)
    return {"im_file": "synthetic", "im_id": 0, "h": h, "w": w, "image": img,
            "gt_bbox": boxes, "gt_class": np.arange(n, dtype=np.int32),
            "difficult": np.zeros(n, np.int32), "is_crowd": np.zeros(n, np.int32)}


def _assert_boxes_on_objects(sample):
    img = sample["image"].astype(np.float32).mean(-1) / 255
    h, w = img.shape
    boxes = sample["gt_bbox"]
    assert len(boxes) and len(boxes) == len(sample["gt_class"])
    assert (boxes >= 0).all() and (boxes[:, [2, 3]] <= [w, h]).all()
    yy, xx = np.mgrid[:h, :w] + 0.5
    inside_any = np.zeros((h, w), bool)
    for x1, y1, x2, y2 in boxes:
        inside_any |= (xx > x1 - 1.5) & (xx < x2 + 1.5) & (yy > y1 - 1.5) & (yy < y2 + 1.5)
    for x1, y1, x2, y2 in boxes:
        inner = (xx > x1 + 1) & (xx < x2 - 1) & (yy > y1 + 1) & (yy < y2 - 1)
        near = (xx > x1 - 4) & (xx < x2 + 4) & (yy > y1 - 4) & (yy < y2 + 4) & ~inside_any
        assert img[inner].mean() > 0.9, (x1, y1, x2, y2)
        if near.any():
            assert img[near].mean() < 0.1, (x1, y1, x2, y2)


def test_flip_is_exact():
    s = TRANSFORMS.build("RandomFlip", {"prob": 1.0})(_box_sample())
    np.testing.assert_array_equal(s["gt_bbox"], [[100, 30, 140, 90], [10, 10, 65, 50]])
    _assert_boxes_on_objects(s)


@pytest.mark.parametrize("seed", range(8))
def test_geometric_transforms_keep_boxes_on_objects(seed):
    np.random.seed(seed)
    steps = Compose([{"RandomFlip": {"prob": 1.0}},
                     {"RandomExpand": {"ratio": 3.0, "prob": 1.0, "fill_value": [0, 0, 0]}},
                     {"RandomCrop": {"allow_no_crop": False}},
                     {"Resize": {"target_size": [160, 128], "keep_ratio": False}}])
    s = _box_sample()
    for t in steps.transforms:
        s = t(s)
        _assert_boxes_on_objects(s)
    assert s["image"].shape == (160, 128, 3)
    np.testing.assert_array_equal(s["im_shape"], [160, 128])
    s = TRANSFORMS.build("Resize", {"target_size": [100, 200], "keep_ratio": True})(_box_sample())
    assert s["image"].shape == (100, 133, 3) and s["scale_factor"].dtype == np.float32
    np.testing.assert_allclose(s["scale_factor"], [100 / 120, 133 / 160], rtol=1e-6)
    _assert_boxes_on_objects(s)


def test_box_arithmetic_and_padding():
    s = {"image": np.zeros((100, 200, 3), np.float32),
         "gt_bbox": np.array([[20, 10, 60, 50], [0, 0, 200, 100]], np.float32),
         "gt_class": np.array([3, 1], np.int32), "difficult": np.array([0, 1], np.int32)}
    s = TRANSFORMS.build("NormalizeBox")(s)
    np.testing.assert_allclose(s["gt_bbox"], [[0.1, 0.1, 0.3, 0.5], [0, 0, 1, 1]])
    s = TRANSFORMS.build("BboxXYXY2XYWH")(s)
    np.testing.assert_allclose(s["gt_bbox"], [[0.2, 0.3, 0.2, 0.4], [0.5, 0.5, 1, 1]])
    s = TRANSFORMS.build("PadBox", {"num_max_boxes": 5})(s)
    assert s["gt_bbox"].shape == (5, 4) and s["gt_class"].tolist() == [3, 1, 0, 0, 0]
    assert s["gt_score"].tolist() == [1, 1, 0, 0, 0] and s["difficult"].tolist() == [0, 1, 0, 0, 0]
    s = TRANSFORMS.build("NormalizeImage", {"mean": [0.5] * 3, "std": [0.5] * 3})(
        {"image": np.full((2, 3, 3), 255, np.uint8)})
    s = TRANSFORMS.build("Permute")(s)
    assert s["image"].shape == (3, 2, 3) and np.allclose(s["image"], 1.0)


def test_batch_random_resize_one_size_per_batch():
    cfg = yaml.safe_load("- BatchRandomResize: {target_size: [64, 96, 128], random_size: true}\n"
                         "- Permute: {}")
    batch_tf = Compose(cfg, batch=True)
    sizes = set()
    for seed in range(12):
        np.random.seed(seed)
        out = batch_tf([_box_sample(), _box_sample(90, 70)])
        shapes = {s["image"].shape for s in out}
        assert len(shapes) == 1
        c, h, w = shapes.pop()
        assert c == 3 and h == w
        sizes.add(h)
    assert sizes == {64, 96, 128}
    with pytest.raises(ValueError, match="batch_transforms"):
        Compose(cfg)
    with pytest.raises(KeyError, match="RandomFlip"):
        Compose([{"RandomFlp": {}}])


READER = """
sample_transforms:
  - Decode: {}
  - RandomDistort: {}
  - RandomExpand: {fill_value: [123.675, 116.28, 103.53]}
  - RandomCrop: {}
  - RandomFlip: {}
batch_transforms:
  - BatchRandomResize: {target_size: [96, 128], random_size: true, random_interp: true}
  - NormalizeBox: {}
  - PadBox: {num_max_boxes: 8}
  - BboxXYXY2XYWH: {}
  - NormalizeImage: {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], is_scale: true}
  - Permute: {}
batch_size: 4
shuffle: true
drop_last: true
worker_num: 0
"""
EVAL_READER = """
sample_transforms:
  - Decode: {}
  - Resize: {target_size: [96, 96], keep_ratio: false}
  - NormalizeImage: {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], is_scale: true}
  - Permute: {}
batch_size: 2
worker_num: 0
"""


def _collect(loader):
    return [b for b in loader]


def test_train_loader_batches(shapes_root):
    ds = VOCDataSet(shapes_root / "voc", "train_list.txt")
    loader = build_loader(yaml.safe_load(READER), ds, "train", seed=0)
    assert len(loader) == 1
    epoch0, epoch1 = _collect(loader), _collect(loader)
    assert len(epoch0) == 1
    b = epoch0[0]
    size = b["image"].shape[-1]
    expected = {"image": ((4, 3, size, size), np.float32), "im_shape": ((4, 2), np.float32),
                "scale_factor": ((4, 2), np.float32), "im_id": ((4,), np.int64),
                "gt_bbox": ((4, 8, 4), np.float32), "gt_class": ((4, 8), np.int32),
                "gt_score": ((4, 8), np.float32)}
    for k, (shape, dtype) in expected.items():
        assert b[k].shape == shape and b[k].dtype == dtype, k
    assert size in (96, 128) and (b["im_shape"] == size).all()
    assert (b["gt_bbox"] >= 0).all() and (b["gt_bbox"] <= 1).all()
    assert (b["gt_score"].sum(1) >= 1).all()
    loader.set_epoch(0)
    again = _collect(loader)[0]
    assert all(np.array_equal(again[k], b[k]) for k in b)
    assert not all(np.array_equal(epoch1[0][k], b[k]) for k in ("im_id", "image"))
    with pytest.raises(KeyError, match="batchsize"):
        build_loader({"batchsize": 2}, ds, "train")


def test_loader_shards_disjointly(shapes_root):
    ds = VOCDataSet(shapes_root / "voc", "train_list.txt")
    cfg = dict(yaml.safe_load(EVAL_READER), shuffle=True)
    ids = []
    for rank in (0, 1):
        loader = build_loader(cfg, ds, "eval", seed=5, rank=rank, world_size=2)
        assert len(loader) == 2
        ids.append([i for b in loader for i in b["im_id"].tolist()])
    assert len(ids[0]) == len(ids[1]) == 3 and sorted(ids[0] + ids[1]) == list(range(6))
    train = [build_loader({"batch_size": 2}, ds, "train", seed=5, rank=r, world_size=4)
             for r in range(4)]
    assert all(len(t) == 1 for t in train)  # 6 images padded to 8 so every rank steps alike


def test_eval_loader_workers_match_single_process(shapes_root):
    ds = COCODataSet(shapes_root / "coco", "annotations/instances_train.json", "images")
    cfg = yaml.safe_load(EVAL_READER)
    single = _collect(build_loader(cfg, ds, "eval"))
    multi = _collect(build_loader(dict(cfg, worker_num=2), ds, "eval"))
    assert len(single) == len(multi) == 3
    for a, b in zip(single, multi):
        assert sorted(a) == sorted(b) == ["im_id", "im_shape", "image", "scale_factor"]
        for k in a:
            assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
    assert single[0]["image"].shape == (2, 3, 96, 96) and single[0]["im_id"].tolist() == [1, 2]
    np.testing.assert_allclose(single[0]["scale_factor"], [[0.5, 0.5]] * 2)


def test_crowd_empty_and_sizeless_annotations(shapes_root, tmp_path):
    images = str(shapes_root / "coco/images")
    gt = {"categories": [{"id": 7, "name": "b"}, {"id": 3, "name": "a"}],
          "images": [{"id": 5, "file_name": "train_00000.jpg", "width": 192, "height": 192},
                     {"id": 9, "file_name": "train_00001.jpg"}],
          "annotations": [{"id": 1, "image_id": 5, "category_id": 7, "bbox": [10, 10, 20, 30]},
                          {"id": 2, "image_id": 5, "category_id": 3, "bbox": [0, 0, 50, 50],
                           "iscrowd": 1},
                          {"id": 3, "image_id": 9, "category_id": 3, "bbox": [300, 5, 9, 9]}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    with pytest.warns(UserWarning, match="dropped 1 degenerate boxes in 1 images"):
        ds = COCODataSet(tmp_path, "gt.json", images)
    assert ds.class_names == ["a", "b"] and ds.clsid2catid == {0: 3, 1: 7}
    assert len(ds) == 1 and ds[0]["gt_class"].tolist() == [1]  # crowd box dropped
    np.testing.assert_array_equal(ds[0]["gt_bbox"], [[10, 10, 30, 40]])
    with pytest.warns(UserWarning):
        ds = COCODataSet(tmp_path, "gt.json", images, allow_empty=True)
    assert len(ds) == 2 and ds.record_of(9)["h"] == 192 and len(ds.record_of(9)["gt_bbox"]) == 0
    voc = tmp_path / "voc"
    (voc / "Annotations").mkdir(parents=True)
    xml = (shapes_root / "voc/Annotations/val_00000.xml").read_text()
    start, end = xml.index("<size>"), xml.index("</size>") + len("</size>")
    (voc / "Annotations/val_00000.xml").write_text(xml[:start] + xml[end:])
    (voc / "ImageSets").mkdir()
    (voc / "ImageSets/ids.txt").write_text("val_00000\n")
    ds = VOCDataSet(voc, "ImageSets/ids.txt", image_dir=str(shapes_root / "voc/JPEGImages"),
                    class_names=list(CLASS_NAMES))
    assert (ds[0]["h"], ds[0]["w"]) == (IMAGE_SIZE, IMAGE_SIZE)
