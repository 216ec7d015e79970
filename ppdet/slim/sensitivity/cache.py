"""The eval set decoded once: what every sensitivity measurement (and BN recalibration,
on training images) runs over. Its own module so that ``sensitivity`` and ``bn_calib`` can
both use it without importing each other."""
import copy
import hashlib
import os
import sys

import numpy as np
from tqdm import tqdm

from ppdet.core.errors import UserError
from ppdet.data.transforms import Compose

__all__ = ["EvalCache", "eval_set_digest"]


class EvalCache:
    """The eval images after the EvalReader's sample transforms, in one pre-allocated
    float32 array (``np.stack`` would double the peak memory)."""

    def __init__(self, dataset, sample_transforms, max_samples=None, progress=True):
        records = dataset.records[:max_samples] if max_samples else list(dataset.records)
        if not records:
            raise UserError("the eval set is empty")
        self.dataset = copy.copy(dataset)
        self.dataset.records = records
        self.transform_cfg = sample_transforms
        transform = Compose(sample_transforms)
        n = len(records)
        self.images = None
        self.im_shape = np.zeros((n, 2), "float32")
        self.scale_factor = np.zeros((n, 2), "float32")
        self.im_id = np.zeros((n,), "int64")
        bar_on = progress and sys.stderr.isatty()       # redirected logs get no bar updates
        with tqdm(records, desc="caching eval set", disable=not bar_on, leave=False) as bar:
            for i, rec in enumerate(bar):    # closed (and cleared) on an error too
                self._add(i, rec, transform)

    def _add(self, i, rec, transform):
        s = transform(dict(rec))
        if self.images is None:
            self.images = np.empty((len(self.im_id),) + s["image"].shape, "float32")
        if s["image"].shape != self.images.shape[1:]:
            raise UserError("eval images differ in size after EvalReader transforms: use "
                            "a Resize with a fixed target_size to cache them")
        self.images[i] = s["image"]
        self.im_shape[i] = s["im_shape"]
        self.scale_factor[i] = s["scale_factor"]
        self.im_id[i] = rec["im_id"]

    def __len__(self):
        return len(self.im_id)

    @property
    def image_size(self):
        return list(self.images.shape[2:])

    def digest(self):
        return eval_set_digest(self.dataset.records)

    def batches(self, batch_size):
        for s in range(0, len(self), batch_size):
            e = s + batch_size
            yield self.images[s:e], self.im_shape[s:e], self.scale_factor[s:e], self.im_id[s:e]


def eval_set_digest(records):
    """The eval images and their boxes and classes (what the metric compares against)."""
    h = hashlib.sha256()
    for rec in records:
        h.update(f"{os.path.basename(rec['im_file'])}:{rec['im_id']}:"
                 f"{rec['gt_bbox'].round(2).tolist()}:{rec['gt_class'].tolist()}:"
                 f"{rec['difficult'].tolist()}".encode())
    return h.hexdigest()
