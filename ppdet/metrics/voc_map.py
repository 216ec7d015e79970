"""Pascal VOC mean average precision, vectorised so that it can be re-run cheaply.

Matching follows the VOC devkit. Per class, detections are visited by descending score;
each takes the ground-truth box of its class in its image with the highest IoU (equal IoU:
the earlier GT in the record). It is a true positive when that IoU is > ``overlap_thresh``
(strictly, as in the devkit) and no higher-ranked detection took that GT; a later detection
on a taken GT is a false positive (it does not fall back to its second-best GT). A detection
whose best GT is ``difficult`` is dropped, neither TP nor FP, unless ``evaluate_difficult``.

Tie order: detections are ranked by a stable sort on descending score, so equal scores keep
input order: the order of ``update`` calls, then rows within a batch (for ``score``/
``evaluate``, the order of their arguments). This decides both which tied detection takes
a GT and the shape of the precision-recall curve.

Classes without (non-difficult) GT are left out of the mean; with no such class mAP is 0.
"""
from collections.abc import Mapping

import numpy as np

from .batch import flatten_batch

__all__ = ["VOCMetric", "average_precision", "rank_desc"]

MAP_TYPES = ("11point", "integral")
DENSE_LIMIT = 1 << 24  # largest id span / image*class table served by direct lookup


def rank_desc(score):
    """Indices by descending score, equal scores in input order: the result of a stable sort,
    computed as a (much faster) unstable sort plus a fix-up of tied runs."""
    order = np.argsort(-score)
    s = score[order]
    tie = s[1:] == s[:-1]
    if tie.any():
        sub = np.flatnonzero(np.r_[tie, False] | np.r_[False, tie])  # members of tied runs
        run = np.r_[0, np.cumsum(~tie)][sub]
        order[sub] = order[sub][np.lexsort((order[sub], run))]
    return order


def average_precision(tp, npos, map_type="11point"):
    """AP of one class from ``tp`` (bool, ranked detections, dropped ones removed).

    '11point': mean over t = 0, 0.1, ..., 1 (computed as i / 10) of the max precision at
    recall >= t. 'integral': area under the precision envelope (VOC2010+).
    """
    if npos <= 0 or len(tp) == 0:
        return 0.0
    ctp = np.cumsum(tp)
    prec = ctp / np.arange(1, len(tp) + 1)
    env = np.maximum.accumulate(prec[::-1])[::-1]  # max precision from here on
    if map_type == "integral":
        # recall grows by 1/npos at each TP, so the area is the envelope summed at the TPs
        return float(env[tp].sum() / npos)
    rec = ctp / npos
    first = np.searchsorted(rec, np.arange(11) / 10.0, side="left")  # first rec >= t
    hit = first < len(rec)
    return float(env[first[hit]].sum() / 11.0)


class VOCMetric:
    """VOC mAP over fixed GT records; GT is indexed once so evaluations are cheap to repeat.

    ``class_names``: list of names or the number of classes. ``gt_records``: dataset records
    (``im_id``, ``gt_bbox``, ``gt_class``, optional ``difficult``). ``bbox_plus_one`` uses
    the old pixel convention (w = x2 - x1 + 1) instead of continuous coordinates.
    Detections of unknown images or out-of-range classes (e.g. the -1 padding row) are ignored.
    """

    def __init__(self, class_names, gt_records, map_type="11point", overlap_thresh=0.5,
                 evaluate_difficult=False, bbox_plus_one=False):
        self.headline = f"mAP({float(overlap_thresh):.2f}, {map_type})"
        if map_type not in MAP_TYPES:
            raise ValueError(f"map_type must be one of {MAP_TYPES}, got {map_type!r}")
        if isinstance(class_names, (int, np.integer)):
            class_names = [str(i) for i in range(class_names)]
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.map_type = map_type
        self.overlap_thresh = float(overlap_thresh)
        self.evaluate_difficult = evaluate_difficult
        self._one = 1.0 if bbox_plus_one else 0.0
        self._index_gt(gt_records)
        self.reset()

    def _index_gt(self, records):
        """Sort all GT boxes by (image, class) once, with direct-lookup tables (binary search
        when too large), so each evaluation finds every detection's candidate GT cheaply."""
        ids = np.array([int(r["im_id"]) for r in records], np.int64).reshape(-1)
        if len(np.unique(ids)) != len(ids):
            raise ValueError("gt_records hold duplicate im_id values")
        self.record_ids = ids  # record order, for sequence input to score()
        self._im_ids = np.sort(ids)
        self._id0 = int(self._im_ids[0]) if len(ids) else 0
        span = int(self._im_ids[-1]) - self._id0 + 1 if len(ids) else 0
        self._im_lut = None
        if span <= DENSE_LIMIT:
            self._im_lut = np.full(span, -1, np.int64)
            self._im_lut[self._im_ids - self._id0] = np.arange(len(ids))
        img, cls, box, diff = [], [], [], []
        for r in records:
            c = np.asarray(r.get("gt_class", []), np.int64).reshape(-1)
            n = len(c)
            img.append(np.full(n, np.searchsorted(self._im_ids, int(r["im_id"]))))
            cls.append(c)
            box.append(np.asarray(r.get("gt_bbox", np.zeros((0, 4))), np.float64).reshape(n, 4))
            d = r.get("difficult")
            diff.append(np.zeros(n, bool) if d is None else np.asarray(d).reshape(n) != 0)
        C = self.num_classes
        img = np.concatenate(img + [np.zeros(0, np.int64)]).astype(np.int64)
        cls = np.concatenate(cls + [np.zeros(0, np.int64)])
        if len(cls) and (cls.min() < 0 or cls.max() >= C):
            raise ValueError(f"gt_class outside [0, {C})")
        box = np.concatenate(box + [np.zeros((0, 4))])
        diff = np.concatenate(diff + [np.zeros(0, bool)])
        if self.evaluate_difficult:
            diff[:] = False
        order = np.argsort(img * C + cls, kind="stable")
        self._gt_key = (img * C + cls)[order]
        self._gt_box = np.ascontiguousarray(box[order].T)  # [4, G]: x1, y1, x2, y2 rows
        self._gt_area = self._area(*self._gt_box)
        self._gt_difficult = diff[order]
        n_keys = len(ids) * C  # GT of (image, class) k is [_gt_start[k], _gt_start[k + 1])
        self._gt_start = None if n_keys > DENSE_LIMIT else \
            np.r_[0, np.cumsum(np.bincount(self._gt_key, minlength=n_keys))]
        self.num_pos = np.bincount(cls[~diff], minlength=C)

    def _area(self, x1, y1, x2, y2):
        return (x2 - x1 + self._one) * (y2 - y1 + self._one)

    # -- streaming interface ---------------------------------------------------------------
    def reset(self):
        self._rows, self._row_ids = [], []
        self.result = None

    def update(self, outputs):
        """Add one batch: dict with ``bbox`` [sum K, 6], ``bbox_num`` [B], ``im_id`` [B]."""
        rows, ids = flatten_batch(outputs)
        self._rows.append(rows)
        self._row_ids.append(ids)

    def accumulate(self):
        """Evaluate everything added since ``reset``; see ``evaluate`` for the keys."""
        rows = np.concatenate(self._rows) if self._rows else np.zeros((0, 6), np.float32)
        ids = np.concatenate(self._row_ids) if self._row_ids else np.zeros(0, np.int64)
        self.result = self.evaluate(rows, ids)
        return self.result

    def get_results(self):
        return self.result

    def log(self):
        """Print (and return) per-class AP and the mAP line, in percent."""
        res = self.result if self.result is not None else self.accumulate()
        width = max([5] + [len(n) for n in res["per_class_ap"]])
        lines = [f"{'class':<{width}}  {'gts':>6}  {'AP':>7}"]
        for name, ap in res["per_class_ap"].items():
            lines.append(f"{name:<{width}}  {res['num_gt'][name]:>6d}  {ap * 100:>6.2f}%")
        lines.append(f"mAP({self.overlap_thresh:.2f}, {self.map_type}) = {res['mAP'] * 100:.2f}%")
        text = "\n".join(lines)
        print(text)
        return text

    # -- one-shot interface (sensitivity analysis) ------------------------------------------
    def score(self, detections):
        """mAP of a whole detection set at once: a mapping im_id -> [K, 6] array, or a
        sequence of [K, 6] arrays in ``gt_records`` order. Does not touch ``update`` state."""
        if isinstance(detections, Mapping):
            ids, arrays = list(detections.keys()), list(detections.values())
        else:
            ids, arrays = self.record_ids, list(detections)
            if len(arrays) != len(ids):
                raise ValueError(f"{len(arrays)} detection arrays for {len(ids)} records")
        arrays = [np.asarray(a, np.float64).reshape(-1, 6) for a in arrays]
        rows = np.concatenate(arrays) if arrays else np.zeros((0, 6))
        im = np.repeat(np.asarray(ids, np.int64), [len(a) for a in arrays])
        return self.evaluate(rows, im)["mAP"]

    def evaluate(self, rows, row_im_ids):
        """Evaluate detection ``rows`` [N, 6] with the image id of each row [N].

        Returns ``{'mAP', 'per_class_ap': {name: AP}, 'num_gt': {name: n}, 'map_type',
        'overlap_thresh'}``; the two dicts list only classes with GT (those in the mean).
        """
        tp, cls, ranked = self._match(np.asarray(rows, np.float64).reshape(-1, 6),
                                      np.asarray(row_im_ids, np.int64).reshape(-1))
        # group the ranked, kept detections by class (stable, small ints: a radix sort)
        ranked = ranked[np.argsort(cls[ranked].astype(np.min_scalar_type(self.num_classes)),
                                   kind="stable")]
        tp, cls = tp[ranked], cls[ranked]
        bounds = np.searchsorted(cls, np.arange(self.num_classes + 1))
        per_class, num_gt = {}, {}
        for c in np.flatnonzero(self.num_pos > 0):
            name = self.class_names[c]
            per_class[name] = average_precision(tp[bounds[c]:bounds[c + 1]], self.num_pos[c],
                                                self.map_type)
            num_gt[name] = int(self.num_pos[c])
        m_ap = float(np.mean(list(per_class.values()))) if per_class else 0.0
        return {"mAP": m_ap, "per_class_ap": per_class, "num_gt": num_gt,
                "map_type": self.map_type, "overlap_thresh": self.overlap_thresh}

    def _match(self, rows, im_ids):
        """Greedy VOC matching for all detections at once.

        Each detection's best GT does not depend on what others matched, so the sequential
        rule reduces to: TP iff best IoU > thresh and it is the highest-ranked detection
        with that GT as best. Returns (tp, cls, ranked): ranked lists the kept (not dropped)
        detections by descending score, ties in input order; all index the valid rows.
        """
        C = self.num_classes
        cls = np.nan_to_num(rows[:, 0], nan=-1.0).astype(np.int64)
        img = self._image_index(im_ids)
        valid = (img >= 0) & (cls >= 0) & (cls < C) & np.isfinite(rows[:, 1])
        if not valid.all():
            rows, cls, img = rows[valid], cls[valid], img[valid]
        n = len(rows)
        # all (detection, GT of same image and class) pairs, grouped by detection
        key = img * C + cls
        if self._gt_start is not None:
            lo = self._gt_start[key]
            cnt = self._gt_start[key + 1] - lo
        else:
            lo = np.searchsorted(self._gt_key, key, side="left")
            cnt = np.searchsorted(self._gt_key, key, side="right") - lo
        start = np.cumsum(cnt) - cnt
        det = np.repeat(np.arange(n), cnt)
        gt = np.repeat(lo - start, cnt) + np.arange(len(det))
        d, g = [rows[:, j][det] for j in range(2, 6)], self._gt_box[:, gt]
        iw = np.minimum(d[2], g[2]) - np.maximum(d[0], g[0]) + self._one
        ih = np.minimum(d[3], g[3]) - np.maximum(d[1], g[1]) + self._one
        inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
        union = self._area(*d) + self._gt_area[gt] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
        # best GT per detection: the first pair reaching the detection's max IoU
        best = np.full(n, -np.inf)
        matched = np.full(n, -1)
        has = cnt > 0
        if len(iou):
            best[has] = np.maximum.reduceat(iou, start[has])
            at_max = np.flatnonzero(iou == best[det])
            first = at_max[np.r_[True, det[at_max][1:] != det[at_max][:-1]]]
            matched[det[first]] = gt[first]
        hit = best > self.overlap_thresh
        dropped = np.zeros(n, bool)
        dropped[hit] = self._gt_difficult[matched[hit]]
        cand = hit & ~dropped
        # the highest-ranked detection on each GT wins
        order = rank_desc(rows[:, 1])
        pos = order[cand[order]]
        _, first_hit = np.unique(matched[pos], return_index=True)
        tp = np.zeros(n, bool)
        tp[pos[first_hit]] = True
        return tp, cls, order[~dropped[order]]

    def _image_index(self, im_ids):
        """Position of each im_id among the GT images, -1 when unknown."""
        if len(self._im_ids) == 0:
            return np.full(len(im_ids), -1)
        if self._im_lut is None:
            idx = np.minimum(np.searchsorted(self._im_ids, im_ids), len(self._im_ids) - 1)
            return np.where(self._im_ids[idx] == im_ids, idx, -1) if len(idx) else idx
        q = im_ids - self._id0
        ok = (q >= 0) & (q < len(self._im_lut))
        return np.where(ok, self._im_lut[np.where(ok, q, 0)], -1)
