"""Data transforms with PaddleDetection 2.x names and arguments, built from config lists.

A sample is a dict: the record fields plus ``image`` (HWC, RGB, uint8 or float32 until
``Permute``). Transforms draw randomness from ``np.random`` (the loader seeds it per sample,
so results do not depend on worker processes). Batch transforms (``is_batch = True``) take
and return a list of samples.
"""
import os

import cv2
import numpy as np

from ppdet.core.errors import DataError
from ppdet.core.registry import TRANSFORMS
from ppdet.data.coco import BOX_KEYS

__all__ = ["Compose", "Decode", "RandomDistort", "RandomExpand", "RandomCrop", "RandomFlip",
           "Resize", "NormalizeImage", "Permute", "NormalizeBox", "BboxXYXY2XYWH", "PadBox",
           "BatchRandomResize"]


def _keep_boxes(sample, keep):
    for k in BOX_KEYS:
        if k in sample:
            sample[k] = sample[k][keep]


def _iou(boxes, box):
    """IoU of each of ``boxes`` [N, 4] with one ``box`` [4]."""
    lt = np.maximum(boxes[:, :2], box[:2])
    rb = np.minimum(boxes[:, 2:], box[2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / np.maximum(area(boxes) + area(box) - inter, 1e-10)


@TRANSFORMS.register
class Decode:
    """Read ``im_file`` as RGB; sets ``image``, ``h``, ``w``, ``im_shape``, ``scale_factor``."""

    def __call__(self, sample):
        im = cv2.imread(sample["im_file"], cv2.IMREAD_COLOR)
        if im is None:
            path = sample["im_file"]
            if not os.path.isfile(path):
                raise FileNotFoundError(f"image not found: {path}")
            raise DataError(f"cannot decode image {path}: not an image, or corrupt")
        sample["image"] = cv2.cvtColor(im, cv2.COLOR_BGR2RGB)
        sample["h"], sample["w"] = im.shape[:2]
        sample["im_shape"] = np.array(im.shape[:2], np.float32)
        sample["scale_factor"] = np.ones(2, np.float32)
        return sample


@TRANSFORMS.register
class RandomDistort:
    """Colour jitter. Each of hue/saturation/contrast/brightness is [low, high, prob]; with
    ``random_apply`` ``count`` of them run in random order, else all in a fixed order."""

    def __init__(self, hue=(-18, 18, 0.5), saturation=(0.5, 1.5, 0.5),
                 contrast=(0.5, 1.5, 0.5), brightness=(0.5, 1.5, 0.5), random_apply=True,
                 count=4, random_channel=False):
        self.ops = [(self._brightness, brightness), (self._contrast, contrast),
                    (self._saturation, saturation), (self._hue, hue)]
        self.random_apply, self.count, self.random_channel = random_apply, count, random_channel

    @staticmethod
    def _gray(img):
        return img @ np.array([0.299, 0.587, 0.114], np.float32)

    def _brightness(self, img, d):
        return img * d

    def _contrast(self, img, d):
        mean = self._gray(img).mean()
        return mean + d * (img - mean)

    def _saturation(self, img, d):
        gray = self._gray(img)[..., None]
        return gray + d * (img - gray)

    def _hue(self, img, d):
        """Rotate the chroma plane of YIQ by ``d`` degrees."""
        t = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.321], [0.211, -0.523, 0.311]])
        it = np.linalg.inv(t)
        c, s = np.cos(np.deg2rad(d)), np.sin(np.deg2rad(d))
        rot = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
        return img @ (it @ rot @ t).T.astype(np.float32)

    def __call__(self, sample):
        img = sample["image"].astype(np.float32)
        order = np.random.permutation(4)[:self.count] if self.random_apply else [0, 1, 2, 3]
        for i in order:
            op, (low, high, prob) = self.ops[i]
            if np.random.uniform() < prob:
                img = op(img, np.random.uniform(low, high))
        if self.random_channel and np.random.randint(2):
            img = img[..., np.random.permutation(3)]
        sample["image"] = np.clip(img, 0, 255).astype(np.float32)
        return sample


@TRANSFORMS.register
class RandomExpand:
    """With probability ``prob``, place the image at a random spot of a canvas up to
    ``ratio`` times larger filled with ``fill_value`` (zoom-out for small objects)."""

    def __init__(self, ratio=4., prob=0.5, fill_value=(127.5, 127.5, 127.5)):
        self.ratio, self.prob, self.fill_value = ratio, prob, fill_value

    def __call__(self, sample):
        if np.random.uniform() >= self.prob or self.ratio <= 1:
            return sample
        img = sample["image"]
        h, w = img.shape[:2]
        r = np.random.uniform(1., self.ratio)
        nh, nw = int(h * r), int(w * r)
        y, x = np.random.randint(0, nh - h + 1), np.random.randint(0, nw - w + 1)
        canvas = np.empty((nh, nw, img.shape[2]), img.dtype)
        canvas[:] = np.round(self.fill_value) if img.dtype == np.uint8 else self.fill_value
        canvas[y:y + h, x:x + w] = img
        sample["image"] = canvas
        sample["gt_bbox"] = sample["gt_bbox"] + np.array([x, y, x, y], np.float32)
        return sample


@TRANSFORMS.register
class RandomCrop:
    """SSD-style crop: for a random IoU threshold, try crops whose IoU with some box (all
    boxes if ``cover_all_box``) reaches it; keep boxes whose centres lie inside, clipped."""

    def __init__(self, aspect_ratio=(.5, 2.), thresholds=(.0, .1, .3, .5, .7, .9),
                 scaling=(.3, 1.), num_attempts=50, allow_no_crop=True, cover_all_box=False):
        self.aspect_ratio, self.thresholds, self.scaling = aspect_ratio, thresholds, scaling
        self.num_attempts, self.allow_no_crop = num_attempts, allow_no_crop
        self.cover_all_box = cover_all_box

    def __call__(self, sample):
        boxes = sample["gt_bbox"]
        if len(boxes) == 0:
            return sample
        h, w = sample["image"].shape[:2]
        options = list(self.thresholds) + ([None] if self.allow_no_crop else [])
        for i in np.random.permutation(len(options)):
            thresh = options[i]
            if thresh is None:
                return sample
            for _ in range(self.num_attempts):
                scale = np.random.uniform(*self.scaling)
                ar = np.random.uniform(*self.aspect_ratio)
                ch = int(np.clip(h * scale / np.sqrt(ar), 1, h))
                cw = int(np.clip(w * scale * np.sqrt(ar), 1, w))
                y0, x0 = np.random.randint(0, h - ch + 1), np.random.randint(0, w - cw + 1)
                crop = np.array([x0, y0, x0 + cw, y0 + ch], np.float32)
                iou = _iou(boxes, crop)
                if (iou.min() if self.cover_all_box else iou.max()) < thresh:
                    continue
                centre = (boxes[:, :2] + boxes[:, 2:]) / 2
                keep = np.all((centre > crop[:2]) & (centre < crop[2:]), axis=1)
                if not keep.any():
                    continue
                _keep_boxes(sample, keep)
                b = sample["gt_bbox"] - np.tile(crop[:2], 2)
                sample["gt_bbox"] = np.clip(b, 0, [cw, ch, cw, ch]).astype(np.float32)
                sample["image"] = sample["image"][y0:y0 + ch, x0:x0 + cw]
                return sample
        return sample


@TRANSFORMS.register
class RandomFlip:
    """Horizontal flip with probability ``prob``."""

    def __init__(self, prob=0.5):
        self.prob = prob

    def __call__(self, sample):
        if np.random.uniform() < self.prob:
            w = sample["image"].shape[1]
            sample["image"] = sample["image"][:, ::-1].copy()
            b = sample["gt_bbox"]
            sample["gt_bbox"] = np.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], 1)
        return sample


@TRANSFORMS.register
class Resize:
    """Resize to ``target_size`` ([h, w] or int). With ``keep_ratio`` the image fits inside
    (short side <= min(target), long side <= max(target)). Sets ``im_shape`` [h, w] and
    multiplies ``scale_factor`` [sy, sx] so it maps decoded-image pixels to network pixels."""

    def __init__(self, target_size, keep_ratio=False, interp=cv2.INTER_LINEAR):
        self.target_size = [target_size] * 2 if np.isscalar(target_size) else list(target_size)
        self.keep_ratio, self.interp = keep_ratio, interp

    def __call__(self, sample):
        img = sample["image"]
        h, w = img.shape[:2]
        th, tw = self.target_size
        if self.keep_ratio:
            s = min(min(th, tw) / min(h, w), max(th, tw) / max(h, w))
            nh, nw = max(int(round(h * s)), 1), max(int(round(w * s)), 1)
        else:
            nh, nw = int(th), int(tw)
        sy, sx = nh / h, nw / w
        sample["image"] = cv2.resize(img, (nw, nh), interpolation=self.interp)
        sample["im_shape"] = np.array([nh, nw], np.float32)
        prev = sample.get("scale_factor", np.ones(2, np.float32))
        sample["scale_factor"] = (prev * np.array([sy, sx])).astype(np.float32)
        if "gt_bbox" in sample and len(sample["gt_bbox"]):
            b = sample["gt_bbox"] * np.array([sx, sy, sx, sy], np.float32)
            sample["gt_bbox"] = np.clip(b, 0, [nw, nh, nw, nh]).astype(np.float32)
        return sample


@TRANSFORMS.register
class NormalizeImage:
    """``(image / 255 if is_scale) - mean) / std``, float32; ``norm_type='none'`` only scales."""

    def __init__(self, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), is_scale=True,
                 norm_type="mean_std"):
        self.mean, self.std = np.array(mean, np.float32), np.array(std, np.float32)
        self.is_scale, self.norm_type = is_scale, norm_type

    def __call__(self, sample):
        img = sample["image"].astype(np.float32)
        if self.is_scale:
            img *= 1 / 255.
        if self.norm_type == "mean_std":
            img = (img - self.mean) / self.std
        sample["image"] = img
        return sample


@TRANSFORMS.register
class Permute:
    """HWC -> CHW (the network layout); keep it after every geometric transform."""

    def __call__(self, sample):
        sample["image"] = np.ascontiguousarray(sample["image"].transpose(2, 0, 1))
        return sample


@TRANSFORMS.register
class NormalizeBox:
    """Boxes to [0, 1] by the (HWC) image size, as YOLO targets expect."""

    def __call__(self, sample):
        h, w = sample["image"].shape[:2]
        sample["gt_bbox"] = (sample["gt_bbox"] / np.array([w, h, w, h], np.float32))
        return sample


@TRANSFORMS.register
class BboxXYXY2XYWH:
    """x1,y1,x2,y2 -> centre x, centre y, width, height."""

    def __call__(self, sample):
        b = sample["gt_bbox"]
        sample["gt_bbox"] = np.concatenate([(b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]], 1)
        return sample


@TRANSFORMS.register
class PadBox:
    """Pad (or cut) per-box fields to ``num_max_boxes`` rows so that samples stack into a
    batch; adds ``gt_score`` (1 for real boxes, 0 for padding) when missing."""

    def __init__(self, num_max_boxes=50):
        self.num_max_boxes = num_max_boxes

    def __call__(self, sample):
        n = min(len(sample["gt_bbox"]), self.num_max_boxes)
        if "gt_score" not in sample:
            sample["gt_score"] = np.ones(len(sample["gt_bbox"]), np.float32)
        for k in BOX_KEYS:
            if k in sample:
                v = sample[k]
                out = np.zeros((self.num_max_boxes,) + v.shape[1:], v.dtype)
                out[:n] = v[:n]
                sample[k] = out
        return sample


_INTERPS = (cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_AREA, cv2.INTER_CUBIC,
            cv2.INTER_LANCZOS4)


@TRANSFORMS.register
class BatchRandomResize:
    """Multi-scale training: one size (and interpolation if ``random_interp``) per batch."""

    is_batch = True

    def __init__(self, target_size, keep_ratio=False, interp=cv2.INTER_LINEAR, random_size=True,
                 random_interp=False):
        self.target_size = list(target_size)
        self.keep_ratio, self.interp = keep_ratio, interp
        self.random_size, self.random_interp = random_size, random_interp

    def __call__(self, samples):
        size = (self.target_size[np.random.randint(len(self.target_size))]
                if self.random_size else self.target_size)
        interp = _INTERPS[np.random.randint(len(_INTERPS))] if self.random_interp else self.interp
        resize = Resize(size, self.keep_ratio, interp)
        return [resize(s) for s in samples]


class Compose:
    """Build transforms from config syntax ``[{Name: {kwargs}}, ...]`` (or callables) and
    apply them in order. With ``batch=True`` it takes a list of samples: batch transforms
    see the list, sample transforms are mapped over it."""

    def __init__(self, transforms=None, batch=False):
        self.batch = batch
        self.transforms = []
        for t in transforms or []:
            if isinstance(t, dict):
                if len(t) != 1:
                    raise ValueError(f"a transform entry names one transform, got {list(t)}")
                (name, kwargs), = t.items()
                t = TRANSFORMS.build(name, kwargs or {})
            if getattr(t, "is_batch", False) and not batch:
                raise ValueError(f"{type(t).__name__} works on batches: put it in "
                                 "batch_transforms")
            self.transforms.append(t)

    def __call__(self, data):
        for t in self.transforms:
            try:
                if self.batch and not getattr(t, "is_batch", False):
                    data = [t(s) for s in data]
                else:
                    data = t(data)
            except Exception as e:
                files = [s.get("im_file") for s in (data if self.batch else [data])]
                e.add_note(f"in transform {type(t).__name__} on {', '.join(map(str, files))}")
                raise
        return data

    def __repr__(self):
        return f"Compose([{', '.join(type(t).__name__ for t in self.transforms)}])"
