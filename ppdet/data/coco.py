"""COCO-format reader, and ``DetDataset``, the base every reader shares.

Every record is a dict: ``im_file`` (absolute path), ``im_id`` (int), ``h``/``w`` (ints),
``gt_bbox`` float32 [N, 4] x1,y1,x2,y2 in pixels, ``gt_class`` int32 [N] (contiguous 0-based),
``difficult`` int32 [N], ``is_crowd`` int32 [N].
"""
import json
import os
import warnings
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

from ppdet.core.errors import DataError
from ppdet.core.registry import DATASETS

__all__ = ["DetDataset", "COCODataSet", "BOX_KEYS"]


def one_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _fields(path, where, item, types):
    """``item`` must be a dict holding ``types``' keys with values of those types."""
    if not isinstance(item, dict):
        raise DataError(f"{path}: {where} is a {type(item).__name__}, not an object")
    for key, kind in types.items():
        if key not in item:
            raise DataError(f"{path}: {where} has no '{key}'")
        value = item[key]
        ok = isinstance(value, kind) and not isinstance(value, bool)
        if kind is int and isinstance(value, float) and value.is_integer():
            ok = True
        if not ok:
            raise DataError(f"{path}: {where} '{key}' is {value!r}, not a "
                            f"{'number' if kind is int else kind.__name__}")
    return item


def _unique(path, field, ids):
    seen = set()
    for i in ids:
        if i in seen:
            raise DataError(f"{path}: '{field}' holds id {i} twice")
        seen.add(i)

BOX_KEYS = ("gt_bbox", "gt_class", "difficult", "is_crowd", "gt_score")  # one row per box


def check_dataset_dir(dataset_dir):
    """Absolute dataset dir; a missing one is an error that says how to create it."""
    path = Path(dataset_dir).expanduser().resolve()
    if not path.is_dir():
        hint = ("; create it with `python dataset/shapes/make_shapes.py`"
                if "shapes" in Path(dataset_dir).parts else "")
        raise FileNotFoundError(f"dataset directory {path} not found{hint}")
    return path


def image_hw(im_file):
    """(h, w) of an image, for annotations that do not give its size."""
    im = cv2.imread(str(im_file), cv2.IMREAD_UNCHANGED)
    if im is None:
        raise DataError(f"cannot read image {im_file}: not an image, or corrupt")
    return int(im.shape[0]), int(im.shape[1])


def make_record(im_file, im_id, h, w, boxes, classes, difficult=None):
    n = len(classes)
    return {"im_file": str(im_file), "im_id": int(im_id), "h": int(h), "w": int(w),
            "gt_bbox": np.asarray(boxes, np.float32).reshape(n, 4),
            "gt_class": np.asarray(classes, np.int32).reshape(n),
            "difficult": np.asarray(difficult if difficult is not None else [0] * n,
                                    np.int32).reshape(n),
            "is_crowd": np.zeros(n, np.int32)}


class DetDataset:
    """Records plus class maps; subclasses read annotations in ``__init__``."""

    def __init__(self, dataset_dir, anno_path, image_dir="", allow_empty=False, sample_num=-1):
        self.dataset_dir = check_dataset_dir(dataset_dir)
        self.anno_path = self.dataset_dir / anno_path
        self.image_dir = self.dataset_dir / (image_dir or "")
        self.allow_empty = allow_empty
        self.sample_num = sample_num
        self.records = []
        self.class_names = []
        self.clsid2catid = {}
        self.unused_classes = []    # names of classes without any box (counted, allowed)

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def catid2clsid(self):
        return {c: i for i, c in self.clsid2catid.items()}

    @property
    def cname2cid(self):
        return {n: i for i, n in enumerate(self.class_names)}

    def __len__(self):
        return len(self.records)

    def __getitem__(self, idx):
        """A copy of record ``idx``, so that transforms may change it freely."""
        return {k: v.copy() if isinstance(v, np.ndarray) else v
                for k, v in self.records[idx].items()}

    def record_of(self, im_id):
        """The record with image id ``im_id`` (ids are not indices in COCO files)."""
        if getattr(self, "_by_id", None) is None:
            self._by_id = {r["im_id"]: r for r in self.records}
        return self._by_id[int(im_id)]

    def _finish(self, records):
        """Clip boxes to the image and drop degenerate ones with ONE warning counting them.

        Images without any box are skipped unless ``allow_empty``; ``sample_num`` > 0 keeps
        only the first records.
        """
        n_box = n_img = n_emptied = 0
        kept = []
        for r in records:
            b = r["gt_bbox"]
            b[:, 0::2] = np.clip(b[:, 0::2], 0, r["w"])
            b[:, 1::2] = np.clip(b[:, 1::2], 0, r["h"])
            ok = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
            if not ok.all():
                n_box, n_img = n_box + int((~ok).sum()), n_img + 1
                for k in BOX_KEYS:
                    if k in r:
                        r[k] = r[k][ok]
                n_emptied += not ok.any()
            if len(r["gt_bbox"]) or self.allow_empty:
                kept.append(r)
        if n_box:
            msg = (f"dropped {n_box} degenerate boxes in {n_img} images of {self.dataset_dir} "
                   "(zero width or height, or outside the image)")
            if n_emptied and not self.allow_empty:
                msg += f"; {n_emptied} images left without boxes are skipped"
            warnings.warn(msg, stacklevel=3)
        self.records = kept[:self.sample_num] if self.sample_num and self.sample_num > 0 else kept
        self._by_id = None

    def to_coco_gt(self, difficult_as_crowd=True):
        """Ground truth as a COCO dict (for pycocotools' ``COCO.dataset``).

        VOC "difficult" boxes become ``iscrowd=1``: COCOeval then ignores detections on them,
        the nearest it has to VOC's rule.
        """
        images, anns = [], []
        for r in self.records:
            images.append({"id": r["im_id"], "file_name": os.path.basename(r["im_file"]),
                           "height": r["h"], "width": r["w"]})
            crowd = r["is_crowd"] | (r["difficult"] if difficult_as_crowd else 0)
            for (x1, y1, x2, y2), c, iscrowd in zip(r["gt_bbox"].tolist(),
                                                    r["gt_class"].tolist(), crowd.tolist()):
                anns.append({"id": len(anns) + 1, "image_id": r["im_id"],
                             "category_id": self.clsid2catid[c],
                             "bbox": [x1, y1, x2 - x1, y2 - y1],
                             "area": (x2 - x1) * (y2 - y1), "iscrowd": int(iscrowd)})
        cats = [{"id": self.clsid2catid[i], "name": n} for i, n in enumerate(self.class_names)]
        return {"images": images, "annotations": anns, "categories": cats}

    def __repr__(self):
        return (f"{type(self).__name__}({self.anno_path}: {len(self)} images, "
                f"{self.num_classes} classes)")


@DATASETS.register
class COCODataSet(DetDataset):
    """COCO json reader. Category ids map to 0-based class indices in id order.

    Crowd annotations (``iscrowd=1``) are dropped from the records, so no training target or
    VOC-style match ever sees them; ``im_id`` is the json image id. ``data_fields`` is
    accepted for PaddleDetection configs; records always carry every field.
    """

    def __init__(self, dataset_dir, anno_path, image_dir="", allow_empty=False,
                 sample_num=-1, data_fields=None):
        super().__init__(dataset_dir, anno_path, image_dir, allow_empty, sample_num)
        path = self.anno_path
        gt = _read_coco_json(path)
        cats, images = _categories_and_images(path, gt)
        self.class_names = [c["name"] for c in cats]
        self.clsid2catid = {i: c["id"] for i, c in enumerate(cats)}
        catid2clsid = self.catid2clsid
        anns, used = _annotations_by_image(path, gt, {im["id"] for im in images}, catid2clsid)
        self.unused_classes = [c["name"] for c in cats if c["id"] not in used]
        self._finish([self._record(path, im, anns[im["id"]], catid2clsid) for im in images])

    def _record(self, path, im, anns, catid2clsid):
        """One image's record: its size (read from the file when the json lacks it) and
        its non-crowd boxes as [x1, y1, x2, y2] with 0-based classes."""
        im_file = self.image_dir / im["file_name"]
        if not im_file.is_file():
            raise FileNotFoundError(f"image {im_file} listed in {path} not found")
        h, w = im.get("height"), im.get("width")
        if not h or not w:
            h, w = image_hw(im_file)
        boxes, classes = [], []
        for a in anns:
            x, y, bw, bh = a["bbox"]
            boxes.append([x, y, x + bw, y + bh])
            classes.append(catid2clsid[a["category_id"]])
        return make_record(im_file, im["id"], h, w, boxes, classes)


def _read_coco_json(path):
    """The annotation file's dict, with ``images`` and ``categories`` lists."""
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        gt = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{path} is not valid JSON: {one_line(e)}") from e
    if not isinstance(gt, dict):
        raise DataError(f"{path} holds a {type(gt).__name__}, not a COCO dict")
    for field in ("images", "categories"):
        if not isinstance(gt.get(field), list):
            raise DataError(f"{path}: '{field}' is missing or not a list (a COCO "
                            f"annotation file needs images, annotations, categories)")
    return gt


def _categories_and_images(path, gt):
    """Categories and images, each checked, sorted by id, ids unique."""
    cats = [_fields(path, f"categories[{i}]", c, {"id": int, "name": str})
            for i, c in enumerate(gt["categories"])]
    images = [_fields(path, f"images[{i}]", im, {"id": int, "file_name": str})
              for i, im in enumerate(gt["images"])]
    cats.sort(key=lambda c: c["id"])
    images.sort(key=lambda im: im["id"])
    _unique(path, "categories", [c["id"] for c in cats])
    _unique(path, "images", [im["id"] for im in images])
    return cats, images


def _annotations_by_image(path, gt, image_ids, catid2clsid):
    """``({image id: [non-crowd annotations]}, category ids used by any annotation)``,
    every annotation checked against the images and categories."""
    anns = defaultdict(list)
    used = set()
    for i, a in enumerate(gt.get("annotations") or []):
        a = _fields(path, f"annotations[{i}]", a,
                    {"image_id": int, "category_id": int, "bbox": list})
        where = f"{path}: annotation {a.get('id', f'#{i}')}"
        if a["image_id"] not in image_ids:
            raise DataError(f"{where} is on image_id {a['image_id']}, which is not in "
                            f"'images'")
        if a["category_id"] not in catid2clsid:
            raise DataError(f"{where} has category_id {a['category_id']}, which is not "
                            f"in 'categories'")
        if len(a["bbox"]) != 4 or not all(isinstance(v, (int, float)) for v in a["bbox"]):
            raise DataError(f"{where}: bbox {a['bbox']} is not [x, y, w, h]")
        used.add(a["category_id"])
        if not a.get("iscrowd", 0):
            anns[a["image_id"]].append(a)
    return anns, used
