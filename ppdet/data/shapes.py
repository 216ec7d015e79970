"""Deterministic synthetic "shapes" detection set, written in both VOC and COCO layouts.

It lets the whole pipeline (train, eval, prune, export) run in minutes on a CPU without
downloading anything: 4 classes of plain geometric shapes with good contrast on textured
backgrounds, easy enough for a tiny YOLOv3 trained from scratch.
"""
import contextlib
import fcntl
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

__all__ = ["CLASS_NAMES", "IMAGE_SIZE", "DEFAULT_ROOT", "make_shapes", "ensure_shapes"]

CLASS_NAMES = ("circle", "rectangle", "triangle", "cross")  # label order
IMAGE_SIZE = 192
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "dataset" / "shapes"
MARKER = "voc/.complete"  # written last: its absence means generation did not finish
MIN_VISIBLE = 0.7  # a placement is refused if it would hide more of an earlier object
DIFFICULT_BELOW = 0.8  # objects less visible than this are marked difficult
JPEG_QUALITY = 92
SPLITS = ("train", "val")
MIN_SIDE = 16  # smallest box side, px
MIN_OBJECTS, MAX_OBJECTS = 1, 4  # objects per image
FILLED_SHARE = 0.6  # the rest are outlines
VERSION = 1  # bump when the generator changes, so ensure_shapes regenerates old sets


def _background(rng, size):
    """Smooth blobs, a gradient or stripes between two close colours, plus pixel noise."""
    c0 = rng.uniform(30, 225, 3)
    c1 = np.clip(c0 + rng.uniform(-70, 70, 3), 0, 255)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, 2 * np.pi)
    proj = xx * np.cos(angle) + yy * np.sin(angle)
    kind = rng.integers(3)
    if kind == 0:
        k = int(rng.integers(3, 9))
        coarse = rng.uniform(0, 1, (k, k)).astype(np.float32)
        t = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    elif kind == 1:
        t = (proj - proj.min()) / (proj.max() - proj.min())
    else:
        t = 0.5 + 0.5 * np.sin(2 * np.pi * proj * size / rng.uniform(6, 24))
    t = np.clip(t, 0, 1)[..., None]
    noise = rng.normal(0, rng.uniform(3, 12), (size, size, 3))
    return c0 * (1 - t) + c1 * t + noise


def _shape_mask(rng, cls, x0, y0, w, h, filled, size):
    """Binary mask of one shape drawn inside the box (x0, y0, w, h)."""
    mask = np.zeros((size, size), np.uint8)
    th = -1 if filled else max(2, int(round(min(w, h) / 12)))
    x1, y1 = x0 + w - 1, y0 + h - 1
    if cls == 0:
        cv2.ellipse(mask, (x0 + w // 2, y0 + h // 2), (w // 2, h // 2), 0, 0, 360, 1, th)
    elif cls == 1:
        cv2.rectangle(mask, (x0, y0), (x1, y1), 1, th)
    else:
        if cls == 2:  # triangle pointing up, down, left or right
            pts = np.array([(x0, y1), (x1, y1), ((x0 + x1) // 2, y0)], np.float64)
            d = rng.integers(4)
            if d % 2:  # down / right: mirror vertically
                pts[:, 1] = y0 + y1 - pts[:, 1]
            if d >= 2:  # left / right: transpose into the box
                u = (pts - (x0, y0)) / (w - 1, h - 1)
                pts = (x0, y0) + u[:, ::-1] * (w - 1, h - 1)
        else:  # plus sign with random arm thickness
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            tx, ty = w * rng.uniform(0.22, 0.4) / 2, h * rng.uniform(0.22, 0.4) / 2
            a, b, c, d = cx - tx, cx + tx, cy - ty, cy + ty
            pts = np.array([(a, y0), (b, y0), (b, c), (x1, c), (x1, d), (b, d), (b, y1),
                            (a, y1), (a, d), (x0, d), (x0, c), (a, c)])
        pts = [np.round(pts).astype(np.int32)]
        if filled:
            cv2.fillPoly(mask, pts, 1)
        else:
            cv2.polylines(mask, pts, True, 1, th)
    return mask.astype(bool)


def _iou(a, b):
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(iw, 0) * max(ih, 0)
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])
    return inter / (area(a) + area(b) - inter)


def _make_image(rng, size=IMAGE_SIZE):
    """One image (uint8 HWC) and its objects [{'cls', 'box' (x1,y1,x2,y2), 'difficult'}]."""
    img = _background(rng, size)
    owner = np.full((size, size), -1, np.int16)  # which object each pixel shows
    objs = []
    for _ in range(int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))):
        for _attempt in range(30):
            cls = int(rng.integers(len(CLASS_NAMES)))
            scale = np.exp(rng.uniform(np.log(MIN_SIDE + 2), np.log(90)))
            aspect = rng.uniform(0.8, 1.25) if cls == 0 else np.exp(rng.uniform(-0.5, 0.5))
            w = int(np.clip(scale * np.sqrt(aspect), MIN_SIDE, 96))
            h = int(np.clip(scale / np.sqrt(aspect), MIN_SIDE, 96))
            x0, y0 = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
            filled = min(w, h) < 24 or rng.random() < FILLED_SHARE
            mask = _shape_mask(rng, cls, x0, y0, w, h, filled, size)
            ys, xs = np.nonzero(mask)
            box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
            if any(_iou(box, o["box"]) > 0.5 for o in objs) or any(
                    np.count_nonzero((owner == j) & ~mask) < MIN_VISIBLE * o["area"]
                    for j, o in enumerate(objs)):
                continue
            mean = img[mask].mean(axis=0)
            for _c in range(20):  # a colour far from the background under the shape
                colour = rng.uniform(0, 255, 3)
                if np.linalg.norm(colour - mean) > 120:
                    break
            img[mask] = colour + rng.normal(0, 4, (len(ys), 3))
            owner[mask] = len(objs)
            objs.append({"cls": cls, "box": box, "area": len(ys)})
            break
    for j, o in enumerate(objs):
        o["difficult"] = int(np.count_nonzero(owner == j) < DIFFICULT_BELOW * o.pop("area"))
    return np.clip(np.round(img), 0, 255).astype(np.uint8), objs


def _voc_xml(name, objs, size):
    parts = [f"<annotation>\n\t<folder>JPEGImages</folder>\n\t<filename>{name}.jpg</filename>\n"
             f"\t<size>\n\t\t<width>{size}</width>\n\t\t<height>{size}</height>\n"
             "\t\t<depth>3</depth>\n\t</size>\n\t<segmented>0</segmented>\n"]
    for o in objs:
        x1, y1, x2, y2 = o["box"]
        parts.append(f"\t<object>\n\t\t<name>{CLASS_NAMES[o['cls']]}</name>\n"
                     "\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n"
                     f"\t\t<difficult>{o['difficult']}</difficult>\n\t\t<bndbox>\n"
                     f"\t\t\t<xmin>{x1}</xmin>\n\t\t\t<ymin>{y1}</ymin>\n"
                     f"\t\t\t<xmax>{x2}</xmax>\n\t\t\t<ymax>{y2}</ymax>\n"
                     "\t\t</bndbox>\n\t</object>\n")
    return "".join(parts) + "</annotation>\n"


def _params(seed, n_train, n_val):
    return {"version": VERSION, "seed": int(seed), "n_train": int(n_train), "n_val": int(n_val),
            "image_size": IMAGE_SIZE, "classes": list(CLASS_NAMES)}


def make_shapes(out_dir=None, seed=0, n_train=600, n_val=120):
    """Write ``voc/`` and ``coco/`` under ``out_dir`` (replacing them); returns ``out_dir``.

    Image i of a split depends only on (seed, split, i), so a smaller set is a prefix of a
    larger one, and the same arguments give byte-identical files.
    """
    out = Path(out_dir) if out_dir else DEFAULT_ROOT
    voc, coco = out / "voc", out / "coco"
    for d in (voc, coco):
        shutil.rmtree(d, ignore_errors=True)
    for d in (voc / "JPEGImages", voc / "Annotations", voc / "ImageSets" / "Main",
              coco / "images", coco / "annotations"):
        d.mkdir(parents=True, exist_ok=True)
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"}
                  for i, n in enumerate(CLASS_NAMES)]
    for split_no, (split, n) in enumerate(zip(SPLITS, (n_train, n_val))):
        ids, images, anns = [], [], []
        for i in range(n):
            img, objs = _make_image(np.random.default_rng([seed, split_no, i]))
            name = f"{split}_{i:05d}"
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            data = buf.tobytes()
            (voc / "JPEGImages" / f"{name}.jpg").write_bytes(data)
            (coco / "images" / f"{name}.jpg").write_bytes(data)
            (voc / "Annotations" / f"{name}.xml").write_text(_voc_xml(name, objs, IMAGE_SIZE))
            ids.append(name)
            images.append({"id": i + 1, "file_name": f"{name}.jpg",
                           "width": IMAGE_SIZE, "height": IMAGE_SIZE})
            for o in objs:
                x1, y1, x2, y2 = o["box"]
                anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": o["cls"] + 1,
                             "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                             "iscrowd": 0})
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        (voc / f"{split}_list.txt").write_text(
            "".join(f"JPEGImages/{i}.jpg Annotations/{i}.xml\n" for i in ids))
        gt = {"images": images, "annotations": anns, "categories": categories}
        (coco / "annotations" / f"instances_{split}.json").write_text(
            json.dumps(gt, sort_keys=True))
    (voc / "label_list.txt").write_text("".join(f"{n}\n" for n in CLASS_NAMES))
    (out / MARKER).write_text(json.dumps(_params(seed, n_train, n_val), sort_keys=True))
    return out


def _is_complete(root, params):
    marker = root / MARKER
    try:
        return json.loads(marker.read_text()) == params
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _lock(root):
    """Inter-process lock so that parallel ranks do not generate the set at the same time."""
    key = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"ppdet_shapes_{key}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_shapes(root=None, seed=0, n_train=600, n_val=120):
    """Generate the set under ``root`` unless a finished one with these arguments is there."""
    root = Path(root) if root else DEFAULT_ROOT
    params = _params(seed, n_train, n_val)
    if not _is_complete(root, params):
        with _lock(root):
            if not _is_complete(root, params):
                make_shapes(root, seed, n_train, n_val)
    return root
