"""Batch loader: shuffles and shards indices, runs transforms, stacks samples into numpy batches.

Randomness is reproducible from (seed, epoch): the shuffle order, and one ``np.random`` seed
per sample and per batch, so the data do not depend on ``worker_num`` or on which worker
process handled a sample. Batches are dicts of numpy arrays.
"""
import contextlib
import copy
import math
import sys

import cv2
import numpy as np

from ppdet.core.errors import ConfigError, DataError, UserError
from ppdet.data.transforms import Compose

__all__ = ["build_loader", "DetLoader"]

READER_KEYS = ("sample_transforms", "batch_transforms", "batch_size", "shuffle", "drop_last",
               "worker_num", "use_shared_memory", "skip_bad_images")
SECTIONS = {"train": "TrainReader", "eval": "EvalReader", "test": "TestReader"}
_ERROR = "_data_error"
SKIP_HINT = "; to skip unreadable training images set TrainReader.skip_bad_images: true"
EVAL_KEYS = ("image", "im_shape", "scale_factor", "im_id")
NOT_BATCHED = ("im_file", "h", "w")


@contextlib.contextmanager
def _seeded(seed):
    """Seed ``np.random`` for a block, then restore the caller's state."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _child_seed(*words):
    return int(np.random.SeedSequence([int(w) for w in words]).generate_state(1)[0])


class _BatchSampler:
    """Yields lists of (index, sample seed, batch seed) for one rank and epoch.

    In train mode every rank gets the same number of samples (the shuffled order is padded by
    wrapping around); in eval/test modes the shares are disjoint and unpadded, so each image is
    evaluated exactly once across ranks.
    """

    def __init__(self, n, batch_size, shuffle, drop_last, seed, rank, world_size, pad):
        self.n, self.batch_size, self.shuffle, self.drop_last = n, batch_size, shuffle, drop_last
        self.seed, self.rank, self.world_size, self.pad = seed, rank, world_size, pad
        self.epoch = 0

    def _indices(self):
        order = (np.random.RandomState(_child_seed(self.seed, self.epoch)).permutation(self.n)
                 if self.shuffle else np.arange(self.n))
        if self.pad and self.n:
            total = math.ceil(self.n / self.world_size) * self.world_size
            order = np.resize(order, total)  # repeats from the start
        return order[self.rank::self.world_size]

    def __len__(self):
        n = (math.ceil(self.n / self.world_size) if self.pad
             else len(range(self.rank, self.n, self.world_size)))
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        idx = self._indices()
        for b in range(len(self)):
            chunk = idx[b * self.batch_size:(b + 1) * self.batch_size]
            bseed = _child_seed(self.seed, self.epoch, b, 1)
            yield [(int(i), _child_seed(self.seed, self.epoch, i, 0), bseed) for i in chunk]


class _Samples:
    """Map-style dataset over (index, sample seed, batch seed) keys; applies sample transforms."""

    def __init__(self, dataset, transforms, hint=""):
        self.dataset, self.transforms, self.hint = dataset, transforms, hint

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        idx, sample_seed, batch_seed = key
        with _seeded(sample_seed):
            try:
                sample = self.transforms(self.dataset[idx])
            except DataError as e:
                # carried to the main process in the batch (paddle's workers would turn
                # it into an unrelated "blocking queue is killed" error)
                return {_ERROR: f"{e}{self.hint}"}
        sample["_batch_seed"] = batch_seed
        return sample


class _Collate:
    """Runs batch transforms (seeded per batch) and stacks the fields into numpy arrays."""

    def __init__(self, transforms, mode):
        self.transforms, self.mode = transforms, mode

    def __call__(self, samples):
        for s in samples:
            if _ERROR in s:
                return {_ERROR: np.frombuffer(s[_ERROR].encode(), np.uint8).copy()}
        seed = samples[0]["_batch_seed"]
        for s in samples:
            del s["_batch_seed"]
        with _seeded(seed):
            samples = self.transforms(samples)
        keys = EVAL_KEYS if self.mode != "train" else [
            k for k, v in samples[0].items()
            if k not in NOT_BATCHED and not k.startswith("_") and not isinstance(v, str)]
        out = {}
        for k in keys:
            if k not in samples[0]:
                raise KeyError(f"samples have no '{k}': add Decode/Resize to sample_transforms")
            vals = [np.asarray(s[k]) for s in samples]
            if len({v.shape for v in vals}) > 1:
                hint = ("add PadBox to batch_transforms" if k in ("gt_bbox", "gt_class",
                        "gt_score", "difficult", "is_crowd") else "resize to one size")
                raise ValueError(f"cannot batch '{k}': shapes {[v.shape for v in vals]} "
                                 f"differ; {hint}")
            out[k] = np.stack(vals)
        out["image"] = out["image"].astype(np.float32, copy=False)
        out["im_id"] = out["im_id"].astype(np.int64)
        return out


class DetLoader:
    """Iterable of batches (dicts of numpy arrays) with ``len()`` = batches per epoch.

    Each ``iter()`` runs one epoch, then advances the epoch; ``set_epoch(e)`` picks one
    explicitly. ``worker_num`` > 0 uses ``paddle.io.DataLoader`` worker processes.
    """

    def __init__(self, dataset, sample_transforms=None, batch_transforms=None, batch_size=1,
                 shuffle=None, drop_last=False, worker_num=0, mode="train", seed=None,
                 rank=None, world_size=None, use_shared_memory=False, skip_bad_images=False):
        if mode not in ("train", "eval", "test"):
            raise ValueError(f"mode must be train, eval or test, not {mode!r}")
        section = SECTIONS[mode]
        for key, value, low in (("batch_size", batch_size, 1), ("worker_num", worker_num, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{section}.{key} is {value!r}: it must be an integer "
                                  f">= {low}")
        if skip_bad_images and mode != "train":
            raise ConfigError(f"{section}.skip_bad_images: only training may skip images; "
                              f"evaluation never drops any (fix or remove the image)")
        if skip_bad_images:
            dataset = _readable_only(dataset)
        if rank is None or world_size is None:
            rank, world_size = _dist_info(rank, world_size)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.dataset, self.mode, self.worker_num = dataset, mode, int(worker_num)
        self.use_shared_memory = use_shared_memory
        self.samples = _Samples(dataset, Compose(sample_transforms),
                                SKIP_HINT if mode == "train" and not skip_bad_images else "")
        self.collate = _Collate(Compose(batch_transforms, batch=True), mode)
        self.sampler = _BatchSampler(
            len(dataset), int(batch_size), mode == "train" if shuffle is None else shuffle,
            drop_last, 0 if seed is None else seed, rank, world_size, pad=mode == "train")
        self._paddle_loader = None

    def __len__(self):
        return len(self.sampler)

    def set_epoch(self, epoch):
        self.sampler.epoch = int(epoch)

    def __iter__(self):
        try:
            if self.worker_num == 0:
                for keys in self.sampler:
                    yield _checked(self.collate([self.samples[k] for k in keys]))
            else:
                try:
                    for batch in self._paddle():
                        yield _checked({k: v.numpy() for k, v in batch.items()})
                except UserError as e:    # re-raised by paddle with the worker's traceback
                    raise type(e)(_worker_message(e)) from None
        finally:
            self.sampler.epoch += 1

    def _paddle(self):
        if self._paddle_loader is None:
            import paddle
            self._paddle_loader = paddle.io.DataLoader(
                self.samples, batch_sampler=self.sampler, collate_fn=self.collate,
                num_workers=self.worker_num, use_shared_memory=self.use_shared_memory,
                return_list=True)  # no cv2.setNumThreads in workers: it hangs after fork
        return self._paddle_loader


def _checked(batch):
    """A batch, or the data error a sample of it met (see ``_Samples``)."""
    if _ERROR in batch:
        raise DataError(bytes(np.asarray(batch[_ERROR], np.uint8)).decode())
    return batch


def _worker_message(exc):
    """The original message of an error paddle re-raised from a worker process (paddle puts
    the worker's traceback in the message; its last line is ``module.Type: message``)."""
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    if len(lines) < 2 or "caught" not in lines[0]:
        return str(exc)
    last = lines[-1]
    name = type(exc).__name__ + ": "
    return last.split(name, 1)[1] if name in last else last


def _readable(path):
    """Whether OpenCV can decode the image (at 1/8 scale: cheap, same header and data)."""
    return cv2.imread(str(path), cv2.IMREAD_REDUCED_GRAYSCALE_8) is not None


def _readable_only(dataset):
    """A shallow copy of ``dataset`` without the records whose image cannot be read, with
    one warning counting them (``TrainReader.skip_bad_images: true``)."""
    bad = [r["im_file"] for r in dataset.records if not _readable(r["im_file"])]
    if not bad:
        return dataset
    keep = copy.copy(dataset)
    gone = set(bad)
    keep.records = [r for r in dataset.records if r["im_file"] not in gone]
    if hasattr(keep, "_by_id"):
        keep._by_id = None
    print(f"warning: skip_bad_images: skipping {len(bad)} of {len(dataset.records)} training "
          f"images that cannot be read (first: {bad[0]})", file=sys.stderr)
    if not keep.records:
        raise DataError(f"no training image can be read (first: {bad[0]})")
    return keep


def _dist_info(rank, world_size):
    try:
        import paddle.distributed as dist
        return (dist.get_rank() if rank is None else rank,
                dist.get_world_size() if world_size is None else world_size)
    except Exception:
        return rank or 0, world_size or 1


def build_loader(reader_cfg, dataset, mode="train", seed=None, rank=None, world_size=None):
    """Loader from a PaddleDetection reader section (``TrainReader`` etc.).

    Keys: sample_transforms, batch_transforms (lists of ``{Name: kwargs}``), batch_size,
    shuffle (default: train mode only), drop_last, worker_num, use_shared_memory. Batches hold
    ``image`` float32 [B,3,H,W], ``im_shape`` and ``scale_factor`` float32 [B,2], ``im_id``
    int64 [B]; in train mode also every other array field, e.g. padded ``gt_bbox`` [B,M,4],
    ``gt_class`` int32 [B,M], ``gt_score`` float32 [B,M].
    """
    cfg = dict(reader_cfg or {})
    unknown = sorted(set(cfg) - set(READER_KEYS))
    if unknown:
        raise KeyError(f"unknown reader option(s) {unknown}; valid: {', '.join(READER_KEYS)}")
    return DetLoader(dataset, mode=mode, seed=seed, rank=rank, world_size=world_size, **cfg)
