"""COCO bbox AP through pycocotools, quietly, with PaddleDetection's ``bbox.json`` output.

Detections become COCO results ``{image_id, category_id, bbox: [x, y, w, h], score}`` with
continuous widths (w = x2 - x1). Results are indexed directly (not via ``COCO.loadRes``) so
nothing is printed and an empty result set still evaluates (to AP 0). Detections of images
absent from the GT, or of classes without a category id, are dropped.
"""
import contextlib
import io
import json
import os
from collections.abc import Mapping

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from .batch import flatten_batch

__all__ = ["COCOMetric", "load_coco_gt"]

STAT_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _quiet(verbose):
    return contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())


def _indexed(dataset):
    coco = COCO()
    coco.dataset = dataset
    with _quiet(False):
        coco.createIndex()
    return coco


def load_coco_gt(coco_gt):
    """A pycocotools ``COCO`` from a dict, a json path or a ``COCO``, without its prints.

    Annotations lacking ``id``/``iscrowd``/``area`` (which COCOeval needs) get defaults;
    the caller's dict is not modified.
    """
    if isinstance(coco_gt, COCO):
        return coco_gt
    if isinstance(coco_gt, (str, os.PathLike)):
        with open(coco_gt) as f:
            coco_gt = json.load(f)
    anns = []
    for i, a in enumerate(coco_gt.get("annotations", [])):
        w, h = a["bbox"][2], a["bbox"][3]
        anns.append({"id": i + 1, "iscrowd": 0, "area": w * h, **a})
    return _indexed({**coco_gt, "annotations": anns})


class COCOMetric:
    """COCO bbox metric; ``clsid2catid`` maps class index -> category id (default: the GT
    categories in id order). ``output_eval``: folder where ``accumulate`` writes bbox.json.

    The headline number (``score``, ``accumulate()['mAP']``) is AP at IoU 0.50:0.95,
    ``COCOeval.stats[0]``, as PaddleDetection reports it."""

    headline = "AP(0.50:0.95)"

    def __init__(self, coco_gt, clsid2catid=None, verbose=False, output_eval=None):
        self.coco_gt = load_coco_gt(coco_gt)
        if clsid2catid is None:
            clsid2catid = dict(enumerate(sorted(self.coco_gt.getCatIds())))
        self.clsid2catid = {int(k): int(v) for k, v in clsid2catid.items()}
        self._lut = np.full(max(self.clsid2catid, default=-1) + 1, -1, np.int64)
        self._lut[list(self.clsid2catid)] = list(self.clsid2catid.values())
        self._img_ids = np.array(sorted(self.coco_gt.getImgIds()), np.int64)
        self.verbose = verbose
        self.output_eval = output_eval
        self.reset()

    def reset(self):
        self._rows, self._row_ids = [], []
        self.result, self.summary = None, ""

    def update(self, outputs):
        """Add one batch: dict with ``bbox`` [sum K, 6], ``bbox_num`` [B], ``im_id`` [B]."""
        rows, ids = flatten_batch(outputs)
        self._rows.append(rows)
        self._row_ids.append(ids)

    def results(self, rows=None, ids=None):
        """The detections so far (or ``rows`` [N, 6] with their image ids) as a COCO results
        list (what bbox.json holds)."""
        if rows is None:
            rows = np.concatenate(self._rows) if self._rows else np.zeros((0, 6), np.float32)
            ids = np.concatenate(self._row_ids) if self._row_ids else np.zeros(0, np.int64)
        rows = np.asarray(rows, np.float64).reshape(-1, 6)
        ids = np.asarray(ids, np.int64).reshape(-1)
        cls = np.nan_to_num(rows[:, 0], nan=-1).astype(np.int64)
        ok = (cls >= 0) & (cls < len(self._lut)) & np.isin(ids, self._img_ids)
        cat = np.full(len(cls), -1, np.int64)
        cat[ok] = self._lut[cls[ok]]
        ok &= cat >= 0
        b = rows[ok, 2:6].astype(np.float64)
        xywh = np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1).tolist()
        return [{"image_id": i, "category_id": c, "bbox": box, "score": s}
                for i, c, box, s in zip(ids[ok].tolist(), cat[ok].tolist(), xywh,
                                        rows[ok, 1].astype(np.float64).tolist())]

    def save_json(self, path):
        """Write the detections as COCO results; a folder gets ``bbox.json`` inside it."""
        if os.path.isdir(path):
            path = os.path.join(path, "bbox.json")
        from ppdet.utils.atomic import atomic_write_bytes
        atomic_write_bytes(path, json.dumps(self.results()).encode())   # never half-written
        return path

    def accumulate(self):
        """Run COCOeval (bbox). Returns {'AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'mAP',
        'stats', 'per_class_ap'}; like pycocotools, -1 marks an area range without GT."""
        if self.output_eval:
            os.makedirs(self.output_eval, exist_ok=True)
            self.save_json(self.output_eval)
        self.result = self._evaluate(self.results())
        return self.result

    def score(self, detections):
        """AP(0.50:0.95) of a whole detection set at once: a mapping im_id -> [K, 6] array,
        or a sequence of [K, 6] arrays in image-id order. Does not touch ``update`` state."""
        if isinstance(detections, Mapping):
            ids, arrays = list(detections.keys()), list(detections.values())
        else:
            ids, arrays = self._img_ids.tolist(), list(detections)
            if len(arrays) != len(ids):
                raise ValueError(f"{len(arrays)} detection arrays for {len(ids)} images")
        arrays = [np.asarray(a, np.float64).reshape(-1, 6) for a in arrays]
        rows = np.concatenate(arrays) if arrays else np.zeros((0, 6))
        im = np.repeat(np.asarray(ids, np.int64), [len(a) for a in arrays])
        return self._evaluate(self.results(rows, im))["mAP"]

    def _evaluate(self, dets):
        for i, d in enumerate(dets):
            d.update(id=i + 1, area=d["bbox"][2] * d["bbox"][3], iscrowd=0)
        gt = self.coco_gt.dataset
        coco_dt = _indexed({"images": gt.get("images", []),
                            "categories": gt.get("categories", []), "annotations": dets})
        ev = COCOeval(self.coco_gt, coco_dt, "bbox")
        out = io.StringIO()
        with contextlib.redirect_stdout(out) if not self.verbose else contextlib.nullcontext():
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        self.summary = "\n".join(ln for ln in out.getvalue().splitlines() if "Average" in ln)
        stats = [float(s) for s in ev.stats]
        prec = ev.eval["precision"][:, :, :, 0, -1]  # [iou, recall, class], all areas, 100 dets
        per_class = {}
        for k, cat_id in enumerate(ev.params.catIds):
            p = prec[:, :, k]
            name = self.coco_gt.cats[cat_id].get("name", str(cat_id))
            per_class[name] = float(p[p > -1].mean()) if (p > -1).any() else float("nan")
        return {**dict(zip(STAT_KEYS, stats)), "mAP": stats[0], "stats": stats,
                "per_class_ap": per_class}

    def get_results(self):
        return self.result

    def log(self):
        """Print (and return) the COCO summary table and the mAP line, in percent."""
        res = self.result if self.result is not None else self.accumulate()
        text = (self.summary + "\n" if self.summary else "") + \
            f"mAP(0.50:0.95) = {res['AP'] * 100:.2f}%, AP50 = {res['AP50'] * 100:.2f}%"
        print(text)
        return text
