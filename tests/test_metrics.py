"""Metrics: VOC mAP against a loop-based reference and hand-computed values; COCO against
pycocotools run directly; the build_metric interface."""
import contextlib
import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ppdet.core.registry import METRICS
from ppdet.metrics import COCOMetric, VOCMetric, build_metric
from ppdet.metrics.voc_map import rank_desc

# ---------------------------------------------------------------------------------------
# independent reference: the VOC devkit algorithm written as plain loops


def ref_iou(a, b, one=0.0):
    iw = min(a[2], b[2]) - max(a[0], b[0]) + one
    ih = min(a[3], b[3]) - max(a[1], b[1]) + one
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0] + one) * (a[3] - a[1] + one) + (b[2] - b[0] + one) * (b[3] - b[1] + one)
    return inter / (union - inter)


def ref_voc(records, dets, num_classes, map_type, thresh=0.5, one=0.0, use_difficult=False):
    """dets: list of (im_id, class, score, box) in input order. Returns {class: AP}."""
    aps = {}
    for c in range(num_classes):
        gts, npos = {}, 0
        for r in records:
            diffs = r.get("difficult", [0] * len(r["gt_class"]))
            for box, cl, dif in zip(r["gt_bbox"], r["gt_class"], diffs):
                if cl == c:
                    hard = bool(dif) and not use_difficult
                    gts.setdefault(r["im_id"], []).append({"box": box, "hard": hard,
                                                           "used": False})
                    npos += not hard
        if npos == 0:
            continue
        mine = sorted([d for d in dets if d[1] == c], key=lambda d: -d[2])  # stable
        tps = []
        for im_id, _, _, box in mine:
            best, best_g = -1.0, None
            for g in gts.get(im_id, []):
                o = ref_iou(box, g["box"], one)
                if o > best:
                    best, best_g = o, g
            if best_g is not None and best > thresh:
                if best_g["hard"]:
                    continue
                tps.append(0 if best_g["used"] else 1)
                best_g["used"] = True
            else:
                tps.append(0)
        prec, rec, ctp = [], [], 0
        for k, t in enumerate(tps):
            ctp += t
            prec.append(ctp / (k + 1))
            rec.append(ctp / npos)
        if map_type == "11point":
            ap = 0.0
            for i in range(11):
                ps = [p for p, r in zip(prec, rec) if r >= i / 10.0]
                ap += (max(ps) if ps else 0.0) / 11.0
        else:
            mrec, mpre = [0.0] + rec + [1.0], [0.0] + prec + [0.0]
            for i in range(len(mpre) - 2, -1, -1):
                mpre[i] = max(mpre[i], mpre[i + 1])
            ap = sum((mrec[i + 1] - mrec[i]) * mpre[i + 1] for i in range(len(mrec) - 1)
                     if mrec[i + 1] != mrec[i])
        aps[c] = ap
    return aps


# ---------------------------------------------------------------------------------------
# helpers


def rec(im_id, boxes, classes, difficult=None):
    r = {"im_id": im_id, "h": 100, "w": 100, "gt_bbox": np.array(boxes, np.float32).reshape(-1, 4),
         "gt_class": np.array(classes, np.int32)}
    if difficult is not None:
        r["difficult"] = np.array(difficult, np.int32)
    return r


def det(cls, score, box):
    return [cls, score, *box]


def voc(records, dets_by_image, num_classes=1, map_type="integral", **kw):
    m = VOCMetric(num_classes, records, map_type=map_type, **kw)
    arrays = {k: np.array(v, np.float32).reshape(-1, 6) for k, v in dets_by_image.items()}
    return m.score(arrays)


A, B = [10, 10, 50, 50], [60, 60, 90, 90]
FAR = [0, 70, 20, 95]  # overlaps neither A nor B


def random_case(seed, n_img=20, n_cls=3, difficult=True):
    """Jittered GT as detections with random (partly tied) scores plus random false
    positives and duplicates; image ids non-contiguous."""
    rng = np.random.default_rng(seed)
    records, dets = [], {}
    for i in range(n_img):
        im_id = 3 * i + 7
        n = int(rng.integers(0, 6))
        xy = rng.uniform(0, 300, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(8, 120, (n, 2))], 1)
        cls = rng.integers(0, n_cls, n)
        hard = (rng.random(n) < 0.15).astype(int) if difficult else None
        records.append(rec(im_id, boxes, cls, hard))
        rows = []
        for b, c in zip(boxes, cls):
            for _ in range(int(rng.integers(0, 3))):  # 0 = missed, 2 = duplicate
                rows.append(det(c, rng.random(), b + rng.normal(0, 4, 4)))
        for _ in range(int(rng.integers(0, 8))):
            xy = rng.uniform(0, 300, 2)
            rows.append(det(rng.integers(0, n_cls), rng.random(), [*xy, *(xy + 40)]))
        rows = np.array(rows, np.float32).reshape(-1, 6)
        rows[:, 1] = np.round(rows[:, 1], 1)  # many ties
        dets[im_id] = rows
    return records, dets


def flat(dets):
    return [(im, int(r[0]), float(r[1]), [float(v) for v in r[2:]])
            for im, rows in dets.items() for r in rows]


# ---------------------------------------------------------------------------------------
# VOC: hand-computed values


@pytest.mark.parametrize("map_type", ["11point", "integral"])
def test_perfect_detections(map_type):
    records = [rec(1, [A, B], [0, 1]), rec(2, [B], [1])]
    dets = {1: [det(0, .9, A), det(1, .8, B)], 2: [det(1, .7, B)]}
    assert voc(records, dets, 2, map_type) == pytest.approx(1.0)


def test_one_fp_above_one_tp():
    # one GT: ranked FP, TP -> precision [0, 1/2], recall [0, 1]
    # 11point: max precision at recall >= t is 1/2 for every t -> 0.5; integral: 1 * 1/2
    records = [rec(1, [A], [0])]
    dets = {1: [det(0, .9, FAR), det(0, .8, A)]}
    assert voc(records, dets, map_type="11point") == pytest.approx(0.5)
    assert voc(records, dets, map_type="integral") == pytest.approx(0.5)
    # two GT, B missed: precision [0, 1/2], recall [0, 1/2]
    # 11point: t = 0..0.5 (6 points) give 1/2, t = 0.6..1 give 0 -> 3/11
    # integral: recall step 1/2 at precision 1/2 -> 0.25
    records = [rec(1, [A, B], [0, 0])]
    assert voc(records, dets, map_type="11point") == pytest.approx(3 / 11)
    assert voc(records, dets, map_type="integral") == pytest.approx(0.25)


def test_duplicate_detection_is_fp():
    # ranked TP(A), FP(A again), TP(B): precision [1, 1/2, 2/3], recall [1/2, 1/2, 1]
    # integral: 1/2 * 1 + 1/2 * 2/3 = 5/6; 11point: 6 points at 1, 5 at 2/3 -> 28/33
    records = [rec(1, [A, B], [0, 0])]
    dets = {1: [det(0, .9, A), det(0, .8, A), det(0, .7, B)]}
    assert voc(records, dets, map_type="integral") == pytest.approx(5 / 6)
    assert voc(records, dets, map_type="11point") == pytest.approx(28 / 33)


def test_ties_keep_input_order():
    # equal scores: earlier input row ranks first (stable sort)
    records = [rec(1, [A], [0])]
    assert voc(records, {1: [det(0, .5, FAR), det(0, .5, A)]}) == pytest.approx(0.5)
    assert voc(records, {1: [det(0, .5, A), det(0, .5, FAR)]}) == pytest.approx(1.0)
    # across images the order is the order of the mapping, then rows
    records = [rec(1, [A], [0]), rec(2, [A], [0])]
    d = {2: [det(0, .5, FAR)], 1: [det(0, .5, A)]}  # FP first, TP; A of image 2 missed
    assert voc(records, d) == pytest.approx(0.25)


def test_rank_desc_is_stable_sort():
    rng = np.random.default_rng(0)
    for s in [rng.random(1000), np.round(rng.random(1000), 2), np.ones(7), np.zeros(0)]:
        np.testing.assert_array_equal(rank_desc(s), np.argsort(-s, kind="stable"))


def test_no_detections_and_no_gt():
    records = [rec(1, [A], [0])]
    assert voc(records, {}) == 0.0
    assert voc(records, {1: []}) == 0.0
    m = VOCMetric(["a", "b"], [rec(1, [], [])])
    assert m.score({1: np.array([det(0, .9, A)])}) == 0.0
    assert m.accumulate()["per_class_ap"] == {}
    assert VOCMetric(1, []).score({1: np.array([det(0, .9, A)])}) == 0.0


def test_class_without_gt_excluded():
    records = [rec(1, [A, B], [0, 1])]
    dets = {1: [det(0, .9, A), det(1, .3, FAR), det(1, .2, B), det(2, .99, A)]}
    m = VOCMetric(["a", "b", "c"], records, map_type="integral")
    res = m.evaluate(*_rows_ids(dets))
    assert set(res["per_class_ap"]) == {"a", "b"}  # "c" has no GT: not in the mean
    assert res["per_class_ap"]["b"] == pytest.approx(0.5)
    assert res["mAP"] == pytest.approx(0.75)
    assert res["num_gt"] == {"a": 1, "b": 1}


def test_difficult_matched_is_ignored():
    # D is difficult: the detection on it is neither TP nor FP, so AP stays 1
    D = [60, 10, 95, 45]
    records = [rec(1, [A, D], [0, 0], difficult=[0, 1])]
    dets = {1: [det(0, .9, D), det(0, .8, A)]}
    assert voc(records, dets) == pytest.approx(1.0)
    # absent `difficult` means none are; evaluate_difficult counts D as a positive
    assert voc([rec(1, [A, D], [0, 0])], {1: [det(0, .8, A)]}) == pytest.approx(0.5)
    assert voc(records, {1: [det(0, .8, A)]}, evaluate_difficult=True) == pytest.approx(0.5)
    # a class whose only GT is difficult has no positives: excluded
    m = VOCMetric(2, [rec(1, [A, D], [0, 1], difficult=[0, 1])])
    assert set(m.accumulate()["per_class_ap"]) == {"0"}


def test_best_iou_gt_taken_is_fp_not_second_best():
    # the second detection's best GT (A) is taken: FP, even though it also overlaps A2
    A2 = [10, 20, 50, 60]  # IoU(A, A2) = 0.6
    near = [10, 12, 50, 52]  # IoU 0.905 with A, 0.684 with A2
    records = [rec(1, [A, A2], [0, 0])]
    dets = [(1, 0, .9, A), (1, 0, .8, near)]
    got = voc(records, {1: [det(0, .9, A), det(0, .8, near)]})
    assert got == pytest.approx(ref_voc(records, dets, 1, "integral")[0]) == pytest.approx(0.5)


def test_overlap_thresh_and_plus_one():
    records = [rec(1, [[0, 0, 10, 10]], [0])]
    d = {1: [det(0, .9, [0, 0, 10, 5])]}  # IoU 50/100 continuous, 66/121 with +1 pixels
    assert voc(records, d) == 0.0  # strictly greater than 0.5 is required
    assert voc(records, d, bbox_plus_one=True) == pytest.approx(1.0)
    assert voc(records, d, overlap_thresh=0.4) == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------
# VOC: randomised against the reference


def _rows_ids(dets):
    arrays = [np.array(v, np.float32).reshape(-1, 6) for v in dets.values()]
    return np.concatenate(arrays), np.repeat(list(dets), [len(a) for a in arrays])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("map_type", ["integral", "11point"])
def test_random_matches_reference(seed, map_type):
    records, dets = random_case(seed)
    m = VOCMetric(["a", "b", "c"], records, map_type=map_type)
    res = m.evaluate(*_rows_ids(dets))
    ref = ref_voc(records, flat(dets), 3, map_type)
    assert [res["per_class_ap"][n] for n in "abc" if n in res["per_class_ap"]] == \
        pytest.approx([ref[c] for c in sorted(ref)], abs=1e-9)
    assert res["mAP"] == pytest.approx(np.mean(list(ref.values())), abs=1e-9)
    assert 0.0 < res["mAP"] < 1.0


@pytest.mark.parametrize("seed", range(3))
def test_random_options_match_reference(seed):
    records, dets = random_case(seed + 10, n_img=15)
    for kw, rkw in [({"bbox_plus_one": True}, {"one": 1.0}),
                    ({"evaluate_difficult": True}, {"use_difficult": True}),
                    ({"overlap_thresh": 0.7}, {"thresh": 0.7})]:
        m = VOCMetric(3, records, map_type="integral", **kw)
        ref = ref_voc(records, flat(dets), 3, "integral", **rkw)
        assert m.score(dets) == pytest.approx(np.mean(list(ref.values())), abs=1e-9)


def test_streaming_equals_score_and_reuse():
    records, dets = random_case(3)
    m = VOCMetric(3, records, map_type="integral")
    want = m.score(dets)
    ids = list(dets)
    for _ in range(2):  # reusable after reset
        m.reset()
        for i in range(0, len(ids), 4):  # batches of 4 images, with a -1 padding row added
            batch = [np.concatenate([dets[k], [[-1, 0, 0, 0, 0, 0]]]) for k in ids[i:i + 4]]
            m.update({"bbox": np.concatenate(batch), "bbox_num": [len(b) for b in batch],
                      "im_id": np.array(ids[i:i + 4]).reshape(-1, 1)})
        assert m.accumulate()["mAP"] == pytest.approx(want, abs=1e-12)
    # a sequence in record order is the same as the mapping
    assert m.score([dets[r["im_id"]] for r in records]) == pytest.approx(want, abs=1e-12)
    # detections of unknown images are ignored
    assert m.score({**dets, 9999: np.array([det(0, 1.0, A)])}) == pytest.approx(want)


def test_update_rejects_inconsistent_batch():
    m = VOCMetric(1, [rec(1, [A], [0])])
    with pytest.raises(ValueError):
        m.update({"bbox": np.zeros((3, 6)), "bbox_num": [2], "im_id": [1]})


def test_log_format(capsys):
    m = VOCMetric(["cat", "dog"], [rec(1, [A, B], [0, 1])])
    m.update({"bbox": np.array([det(0, .9, A)]), "bbox_num": [1], "im_id": [1]})
    res = m.accumulate()
    assert res["mAP"] == pytest.approx(0.5) and res["map_type"] == "11point"
    text = m.log()
    assert "mAP(0.50, 11point) = 50.00%" in text and "dog" in text
    assert text in capsys.readouterr().out


# ---------------------------------------------------------------------------------------
# COCO

CLSID2CATID = {0: 1, 1: 3, 2: 7}


def coco_gt_dict(records, full=True):
    ann = []
    for r in records:
        for b, c in zip(r["gt_bbox"].tolist(), r["gt_class"].tolist()):
            a = {"image_id": r["im_id"], "category_id": CLSID2CATID[c],
                 "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]}
            if full:
                a.update(id=len(ann) + 1, iscrowd=0, area=a["bbox"][2] * a["bbox"][3])
            ann.append(a)
    return {"images": [{"id": r["im_id"], "width": 400, "height": 400} for r in records],
            "annotations": ann,
            "categories": [{"id": v, "name": f"c{v}"} for v in CLSID2CATID.values()]}


def coco_metric_with(records, dets, **kw):
    m = COCOMetric(coco_gt_dict(records), CLSID2CATID, **kw)
    for im_id, rows in dets.items():
        m.update({"bbox": rows, "bbox_num": [len(rows)], "im_id": [im_id]})
    return m


def pycocotools_direct(gt_dict, res_path):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = gt_dict
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(str(res_path)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


@pytest.mark.parametrize("seed", range(3))
def test_coco_matches_pycocotools_directly(seed, tmp_path):
    records, dets = random_case(seed, difficult=False)
    m = coco_metric_with(records, dets)
    res = m.accumulate()
    path = m.save_json(str(tmp_path))
    assert path.endswith("bbox.json")
    direct = pycocotools_direct(coco_gt_dict(records), path)
    np.testing.assert_allclose(res["stats"], direct, atol=1e-12)
    assert res["mAP"] == res["AP"] == res["stats"][0] and 0 < res["AP"] < 1
    assert set(res) >= {"AP", "AP50", "AP75", "APs", "APm", "APl", "mAP", "stats"}
    assert set(res["per_class_ap"]) == {"c1", "c3", "c7"}


def test_coco_perfect_and_empty(capsys):
    records = [rec(1, [A, B], [0, 2]), rec(5, [B], [1])]
    dets = {1: [det(0, .9, A), det(2, .8, B)], 5: [det(1, .7, B)]}
    m = coco_metric_with(records, dets)
    res = m.accumulate()
    assert res["AP"] == pytest.approx(1.0) and res["AP50"] == pytest.approx(1.0)
    assert "mAP(0.50:0.95) = 100.00%" in m.log()
    m.reset()
    res = m.accumulate()  # no detections at all
    assert res["AP"] == 0.0 and res["AP50"] == 0.0
    assert "loading" not in capsys.readouterr().out.lower()


def test_coco_gt_defaults_and_path(tmp_path):
    records = [rec(1, [A], [0])]
    gt = coco_gt_dict(records, full=False)  # no id / iscrowd / area
    p = tmp_path / "instances.json"
    p.write_text(json.dumps(gt))
    for source in (gt, str(p)):
        m = COCOMetric(source, CLSID2CATID)
        m.update({"bbox": np.array([det(0, .9, A)]), "bbox_num": [1], "im_id": [1]})
        assert m.accumulate()["AP"] == pytest.approx(1.0)
    assert "iscrowd" not in gt["annotations"][0]  # caller's dict untouched


def test_coco_ap50_close_to_voc_integral():
    records, dets = random_case(5, n_img=60, difficult=False)
    voc_ap = VOCMetric(3, records, map_type="integral").score(dets)
    coco_ap50 = coco_metric_with(records, dets).accumulate()["AP50"]
    assert abs(voc_ap - coco_ap50) < 0.02


def test_save_json_valid(tmp_path):
    records, dets = random_case(2, difficult=False)
    m = coco_metric_with(records, dets)
    m.update({"bbox": np.array([[-1, 0, 0, 0, 0, 0]]), "bbox_num": [1], "im_id": [7]})
    path = m.save_json(str(tmp_path / "out.json"))
    res = json.load(open(path))
    rows, _ = _rows_ids(dets)
    assert len(res) == len(rows)  # padding row dropped
    img_ids = {r["im_id"] for r in records}
    for r in res:
        assert set(r) == {"image_id", "category_id", "bbox", "score"}
        assert r["image_id"] in img_ids and r["category_id"] in {1, 3, 7}
        assert len(r["bbox"]) == 4
    first = rows[0]
    assert res[0]["bbox"] == pytest.approx([first[2], first[3], first[4] - first[2],
                                            first[5] - first[3]])
    assert res[0]["category_id"] == CLSID2CATID[int(first[0])]


# ---------------------------------------------------------------------------------------
# evaluator interface


def test_build_metric():
    records, dets = random_case(4, difficult=False)
    ds = SimpleNamespace(records=records, class_names=["a", "b", "c"], num_classes=3,
                         clsid2catid=CLSID2CATID, to_coco_gt=lambda: coco_gt_dict(records))
    assert "VOC" in METRICS and "COCO" in METRICS
    m = build_metric("VOC", ds, map_type="integral")
    assert isinstance(m, VOCMetric) and m.map_type == "integral"
    ref = ref_voc(records, flat(dets), 3, "integral")
    assert m.score(dets) == pytest.approx(np.mean(list(ref.values())), abs=1e-9)
    assert isinstance(build_metric("voc", ds), VOCMetric)
    c = build_metric("COCO", ds, map_type="11point")  # map_type is ignored by COCO
    assert isinstance(c, COCOMetric)
    with pytest.raises(TypeError):
        build_metric("VOC", ds, bogus=1)
    with pytest.raises(KeyError):
        build_metric("VOOC", ds)


def test_binary_search_fallback_matches_dense(monkeypatch):
    import ppdet.metrics.voc_map as voc_map
    records, dets = random_case(1)
    want = VOCMetric(3, records, map_type="integral").score(dets)
    monkeypatch.setattr(voc_map, "DENSE_LIMIT", 0)  # as for huge id spans / class counts
    m = VOCMetric(3, records, map_type="integral")
    assert m._im_lut is None and m._gt_start is None
    assert m.score({**dets, 99999: np.array([det(0, 1, A)])}) == pytest.approx(want, abs=1e-12)
