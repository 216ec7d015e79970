"""Sensitivity analysis: for each conv and ratio, prune, re-evaluate, record the loss.

loss = (baseline_mAP - pruned_mAP) / baseline_mAP, PaddleSlim's definition. The eval set
is decoded and preprocessed once per process (``EvalCache``); the model is pruned and
restored in place; nothing is rebuilt per measurement.
"""
import collections
import hashlib
import json
import os
import sys
import threading
import time

import paddle
from tqdm import tqdm

from ppdet.core.errors import UserError
from ppdet.engine.evaluate import normalise_output, split_per_image

__all__ = ["CachedEvaluator", "fingerprint",
           "legacy_eval_set_digest", "plan_pairs", "run_sensitivity", "stopped_by",
           "RealPruneMeasure", "MaskedMeasure"]


class CachedEvaluator:
    """``evaluator() -> mAP`` of the model as it is now, over the cached eval set."""

    def __init__(self, model, cache, metric, batch_size=16):
        self.model, self.cache, self.metric, self.batch_size = model, cache, metric, batch_size
        self.calls = 0

    def detections(self):
        self.model.eval()
        dets = {}
        with paddle.no_grad():
            for img, shape, scale, ids in self.cache.batches(self.batch_size):
                outs = self.model.head_outputs(paddle.to_tensor(img))
                out = self.model.predict_from_outputs(outs, paddle.to_tensor(shape),
                                                      paddle.to_tensor(scale))
                bbox, num = normalise_output(out["bbox"].numpy(), out["bbox_num"].numpy())
                split_per_image(bbox, num, ids, dets)
        return dets

    def __call__(self):
        self.calls += 1
        return float(self.metric.score(self.detections()))


def legacy_eval_set_digest(records, sample_transforms):
    """The eval-set digest that sidecars written before the metric entered the fingerprint
    hold (boxes and reader transforms, no classes): lets their files be upgraded in place."""
    h = hashlib.sha256()
    for rec in records:
        h.update(f"{os.path.basename(rec['im_file'])}:{rec['im_id']}:"
                 f"{rec['gt_bbox'].round(2).tolist()}".encode())
    h.update(json.dumps(sample_transforms, sort_keys=True).encode())
    return h.hexdigest()


def _digest(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def fingerprint(cfg, weights_path, eval_set, criterion, bn_calib=None, records=None):
    """What a measured number depends on; records measured under another are refused.

    Covers the model config, the weights file, the eval set (``eval_set``: an
    ``EvalCache``, or a digest from ``eval_set_digest``), the EvalReader's transforms,
    the metric (and VOC ``map_type``), the pruning criterion and the BN recalibration
    (``bn_calib``: ``CalibSet.describe()``, or None for none; files written before it
    existed read as none)."""
    model_keys = sorted(k for k in cfg if k[:1].isupper() and not k.endswith(("Reader",
                                                                               "Dataset"))
                        and k not in ("LearningRate", "OptimizerBuilder"))
    model_cfg = {k: cfg[k] for k in model_keys}
    model_cfg["architecture"] = cfg.get("architecture")
    model_cfg["num_classes"] = cfg.get("num_classes")
    # the weights: a file, or a static-era folder of variable files
    from ppdet.engine.weights import digest_path
    metric = str(cfg.get("metric", "VOC")).upper()
    reader = (cfg.get("EvalReader") or {}).get("sample_transforms")
    fp = {"model config": _digest(model_cfg), "weights": digest_path(weights_path),
          "eval set": eval_set if isinstance(eval_set, str) else eval_set.digest(),
          "eval reader": _digest(reader), "metric": metric,
          "map_type": cfg.get("map_type", "11point") if metric == "VOC" else "-",
          "criterion": criterion, "bn_calib": bn_calib or "none"}
    if records is not None:     # compared only against an older sidecar, never stored
        fp["_legacy eval set"] = legacy_eval_set_digest(records, reader)
    return fp


def plan_pairs(params, ratios, shards=1, shard_id=0):
    """All (param, ratio) pairs in a fixed order, split evenly: shard k takes every
    n-th pair starting at k, so shards stay balanced across params and ratios."""
    if shards < 1 or not 0 <= shard_id < shards:
        raise UserError(f"--shard_id must be in [0, {shards}) and --shards >= 1")
    pairs = [(p, r) for p in params for r in ratios]
    return pairs[shard_id::shards]


class RealPruneMeasure:
    """Prune the model for real, evaluate it eagerly, restore it. With ``calib`` (a
    :class:`~ppdet.slim.bn_calib.CalibSet`) the BN statistics are re-estimated before each
    evaluation (the baseline's too) and put back after it."""

    def __init__(self, pruner, evaluator, calib=None):
        self.pruner, self.evaluator, self.calib = pruner, evaluator, calib

    def _evaluate(self):
        if self.calib is None:
            return self.evaluator()
        from ppdet.slim.sensitivity import bn_calib
        model = self.evaluator.model
        with bn_calib.using_stats(model, bn_calib.calibrated_stats(model, self.calib)):
            return self.evaluator()

    def baseline(self):
        return self._evaluate()

    def __call__(self, name, ratio):
        kept = self.pruner.prune({name: ratio})[name]
        try:
            return self._evaluate(), kept
        finally:
            self.pruner.restore()

    @property
    def calls(self):
        return self.evaluator.calls


class MaskedMeasure:
    """Zero the pruned channels in one compiled program (see ppdet.slim.sensitivity.fast_eval): the
    same plan as real pruning, and the same mAP, several times faster. BN statistics are
    recalibrated first when the evaluator was made with ``calib``."""

    def __init__(self, evaluator):
        self.evaluator = evaluator

    def ready(self):
        """False while a spawned evaluator's worker process is still loading."""
        return self.evaluator.ready()

    def baseline(self):
        return self.evaluator()

    def __call__(self, name, ratio):
        ev = self.evaluator
        units = ev.unit_masks({name: ratio})
        masks = ev.masks_for({name: ratio}, units)
        corr = ev.correction_for(units) if ev.calib is not None else None
        a, b = ev.offsets[ev.index[name]]
        ev.calls += 1
        return ev.score(ev.detections(masks, corr)), int(masks[a:b].sum())

    @property
    def calls(self):
        return self.evaluator.calls


def stopped_by(losses, ratio, stop_loss):
    """The smallest ratio below ``ratio`` whose measured loss passed ``stop_loss``
    (``losses``: ``{ratio: loss}`` of one conv), or None: measure ``ratio``."""
    over = [r for r, loss in losses.items() if r < ratio - 1e-9 and loss > stop_loss]
    return min(over) if over else None


def run_sensitivity(measure, store, params, ratios, shards=1, shard_id=0, progress=True,
                    log=print, label="mAP", stop_loss=None, workers=None):
    """Measure every pair of this shard not yet in ``store``; returns the store's data.

    ``measure(name, ratio) -> (score, filters kept)``; ``measure.baseline() -> score``, the
    metric's headline number (``label``: VOC mAP, COCO AP 0.50:0.95).

    ``stop_loss``: ratios are measured in ascending order per conv, and a conv's larger
    ratios are skipped once one of its losses passes ``stop_loss`` (listed as skipped in
    the sidecar; the pickle holds measurements only). The file is re-read before each pair,
    so a stop found by another process sharing it counts too.

    ``measure`` may be a list: one worker thread each, taking pairs from one queue (each
    pair measured once, all written under the store's lock); a measure whose ``ready()``
    is False (a worker process still loading) takes none until it is. ``workers() -> n``: how many
    of them may run now (a :class:`ppdet.slim.cores.CoreShare`); the others wait. With
    several workers and ``stop_loss`` the pairs go ratio by ratio across convs, so that
    few are measured past a conv's stop.
    """
    measures = list(measure) if isinstance(measure, (list, tuple)) else [measure]
    _ensure_baseline(measures[0], store, log, label)
    mine, todo = _pending_pairs(store, params, ratios, shards, shard_id, log, stop_loss,
                                parallel=len(measures) > 1)
    run = _SensitivityRun(store, todo, log, label, stop_loss, workers,
                          _Progress(len(todo), progress, log))
    try:
        if len(measures) == 1:
            run.worker(0, measures[0])
        else:
            run.run_threads(measures)
    finally:
        run.progress.close()
    if run.failed:
        raise run.failed[0]
    if run.skipped:
        log(f"{run.skipped} of {len(mine)} pairs skipped by --stop_loss {stop_loss} (listed in "
            f"{os.path.basename(store.meta_path)})")
    return store.data


def _ensure_baseline(measure, store, log, label):
    """Measure the baseline unless the store holds one; refuse a baseline of zero."""
    if store.baseline is None:
        tic = time.time()
        value = measure.baseline()
        if not value > 0:       # refused before anything is written
            raise UserError(f"baseline {label} is {value * 100:.2f}: the model detects nothing "
                            f"on the eval set, so no loss can be computed; check -o weights= "
                            f"(train the model first); {store.path} was not written")
        store.set_baseline(value)
        log(f"baseline {label} {store.baseline * 100:.2f} ({time.time() - tic:.1f} s)")
    else:
        log(f"baseline {label} {store.baseline * 100:.2f} "
            f"(from {os.path.basename(store.meta_path)})")
    if not store.baseline > 0:
        raise UserError(f"{store.meta_path} holds baseline {store.baseline}: delete it and "
                        f"measure again")


def _pending_pairs(store, params, ratios, shards, shard_id, log, stop_loss, parallel):
    """This shard's pairs, and those of them not yet in ``store``, in measuring order."""
    if stop_loss is not None:
        ratios = sorted(ratios)
    mine = plan_pairs(params, ratios, shards, shard_id)
    todo = [(p, r) for p, r in mine if not store.has(p, r)]
    if len(todo) < len(mine):
        log(f"resuming: {len(mine) - len(todo)} of {len(mine)} measurements already in "
            f"{store.path}")
    if stop_loss is not None and parallel:
        todo.sort(key=lambda pair: pair[1])                 # stable: convs keep their order
    return mine, todo


class _Progress:
    """A live bar on a terminal; in a redirected log (nohup) one line per measurement that
    carries the count and the ETA instead of hundreds of carriage-return updates."""

    def __init__(self, total, progress, log):
        self.total, self.log = total, log
        self.bar_on = progress and sys.stderr.isatty()
        self.bar = tqdm(total=total, desc="sensitivity", disable=not self.bar_on,
                        dynamic_ncols=True)
        self.start, self.done = time.time(), 0

    def say(self, line):
        self.done += 1
        if self.bar_on:
            self.bar.write(line)
        else:
            eta = (time.time() - self.start) / self.done * max(self.total - self.done, 0)
            self.log(f"[{self.done}/{self.total}, ETA {_clock(eta)}] {line}")

    def update(self):
        self.bar.update()

    def close(self):
        self.bar.close()


class _SensitivityRun:
    """The state the measuring workers share: the queue of pairs, the store's lock, the
    first failure and the count of pairs skipped by ``stop_loss``."""

    def __init__(self, store, todo, log, label, stop_loss, workers, progress):
        self.store, self.log, self.label = store, log, label
        self.stop_loss, self.workers, self.progress = stop_loss, workers, progress
        self.queue, self.lock, self.failed = collections.deque(todo), threading.Lock(), []
        self.skipped = 0

    def _stopped(self, name, ratio):
        """True when the pair needs no measuring: another process measured it meanwhile,
        or a smaller ratio of its conv passed ``stop_loss`` (then it is marked skipped)."""
        store = self.store
        with self.lock:
            store.refresh()
            if store.has(name, ratio):      # another process measured it meanwhile
                return True
            if stopped_by(store.data.get(name, {}), ratio, self.stop_loss) is not None:
                if not store.is_skipped(name, ratio):
                    store.skip(name, ratio, self.stop_loss)
                self.skipped += 1
                return True
        return False

    def one(self, m, name, ratio):
        """Measure one pair with ``m`` and record its loss."""
        stop_loss, store = self.stop_loss, self.store
        if stop_loss is not None and self._stopped(name, ratio):
            return
        value, kept = m(name, ratio)
        loss = (store.baseline - value) / store.baseline
        with self.lock:
            store.add(name, ratio, loss)
            self.progress.say(
                f"{name} ratio {ratio:.2f}: {kept} filters kept, {self.label} "
                f"{value * 100:.2f}, loss {loss:.4f}"
                + (f" > --stop_loss {stop_loss}: larger ratios skipped"
                   if stop_loss is not None and loss > stop_loss else ""))

    def _must_wait(self, k, m):
        """Worker ``k`` (not the first) waits while the cores are taken or ``m`` loads."""
        return k and ((self.workers is not None and k >= self.workers())
                      or not getattr(m, "ready", lambda: True)())

    def worker(self, k, m):
        """Take pairs from the queue until it is empty or a worker failed."""
        while not self.failed:
            if self._must_wait(k, m):
                if not self.queue:
                    return
                time.sleep(0.05)        # another process holds the cores, or still loading
                continue
            with self.lock:
                if not self.queue:
                    return
                name, ratio = self.queue.popleft()
            try:
                self.one(m, name, ratio)
            except BaseException as e:          # the main thread re-raises it
                self.failed.append(e)
                return
            finally:
                self.progress.update()

    def run_threads(self, measures):
        """One worker thread per measure, all joined."""
        threads = [threading.Thread(target=self.worker, args=(k, m), daemon=True)
                   for k, m in enumerate(measures)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def _clock(seconds):
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"
