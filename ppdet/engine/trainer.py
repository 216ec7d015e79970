"""The one training loop, shared by tools/train.py, prune fine-tuning and slimming.

``Trainer.train`` runs epochs of ``run_step``; hooks (objects with optional
``before_train``, ``after_backward``, ``after_epoch``, ``after_train`` methods) add
behaviour such as BN-sparsity regularisation or a teacher without subclassing. Order:
hooks run in list order, after the built-in checkpoint/eval logic of each epoch.

Epochs are counted from 1 everywhere a user sees them: the log's "epoch 3/30",
checkpoint ``3.pdparams`` (saved after the third epoch) and ``eval_history.json``'s
``"epoch": 3``. Inside the loop (``self.epoch``, hooks' ``epoch`` argument) the epoch is
the 0-based index, and a checkpoint's stored ``epoch`` is the index of the last finished
epoch, as before, so checkpoints named the old 0-based way (``9.pdparams`` after ten
epochs) still resume exactly.
"""
import json
import os
import random
import sys
import time
import warnings

import numpy as np
import paddle
from tqdm import tqdm

from ppdet.engine import checkpoint as ckpt
from ppdet.engine.builder import build_metric_for, build_model, build_reader
from ppdet.engine.evaluate import evaluate, to_tensors
from ppdet.engine.optim import build_lr, build_optimizer, check_schedule
from ppdet.utils.atomic import atomic_write_bytes

__all__ = ["Trainer", "set_seed", "load_pretrain"]


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed)


def load_pretrain(model, path):
    """Load what matches by name and shape: ImageNet backbones (static-era folders/tars,
    PaddleClas 2.x), detection weights of another class count (the class-dependent layers
    start fresh), any format :mod:`ppdet.engine.weights` reads. One summary line says what
    loaded and what was skipped and why. A pruned or slimmed checkpoint of this toolkit is
    loaded whole instead (its channel plan and removed blocks rebuild the model), e.g. for a
    second round of --sr."""
    from ppdet.engine import weights as weights_lib
    source = weights_lib.read_weights(path)
    if source.kind == "ppdet" and ckpt.is_reshaped(source.meta or {}):
        ckpt.load_weights(model, source.path)
        print(f"pretrain weights {source.path}: a pruned model, loaded with its channel "
              f"plan")
        return
    weights_lib.load_lenient(model, source)


class Trainer:
    def __init__(self, cfg, model=None, hooks=(), save_dir=None):
        check_schedule(cfg)          # epoch >= 1, a schedule that can run: before the data
        self.cfg = cfg
        self.rank = paddle.distributed.get_rank()
        self.world_size = paddle.distributed.get_world_size()
        self.model = model if model is not None else build_model(cfg)
        self.hooks = list(hooks)
        # the config's seed also orders the data (shuffle, augmentation): runs differ by seed
        self.loader = build_reader(cfg, "train", seed=int(cfg.get("seed", 0)))
        self.steps_per_epoch = len(self.loader)
        self.lr = build_lr(cfg, self.steps_per_epoch)
        self._optimized = list(self.model.parameters())
        self.optimizer = build_optimizer(cfg, self.lr, self._optimized)
        self.save_dir = save_dir or os.path.join(cfg.get("save_dir", "output"),
                                                 cfg.get("filename", "model"))
        self.start_epoch = 0
        self.epoch = 0              # current epoch and step: hooks read them (s schedules)
        self.step_in_epoch = 0
        self.best_map = -1.0
        self.history = []
        self.written = []           # checkpoint names this run saved, for the final report
        self.epoch_seconds = []     # wall time of each epoch this run trained (bench/)
        self._eval = None
        self.log_terms = ["loss"]   # loss terms the epoch line averages (hooks add theirs)
        self.meta = {}              # extra checkpoint meta (hooks record their settings)
        self.net = self.model   # wrapped for data parallelism in train(), after any resume

    def _wrap_parallel(self):
        # after resume()/pretrain loading: a pruned checkpoint changes parameter shapes
        if self.world_size > 1 and self.net is self.model:
            paddle.distributed.init_parallel_env()
            self.net = paddle.DataParallel(self.model)

    # --- state -----------------------------------------------------------------------
    def _sync_optimizer(self):
        """Rebuild the optimizer when loading changed the model's parameters: a removed
        block's ``Shift`` is a new parameter the first optimizer never saw (channel cuts
        keep the parameter objects, so they need nothing)."""
        params = list(self.model.parameters())
        if [id(p) for p in params] != [id(p) for p in self._optimized]:
            self._optimized = params
            self.optimizer = build_optimizer(self.cfg, self.lr, params)

    def load_pretrain(self, path):
        """:func:`load_pretrain` into this trainer's model, the optimizer following."""
        load_pretrain(self.model, path)
        self._sync_optimizer()

    def resume(self, path):
        with warnings.catch_warnings():
            # the LR scheduler's state carries keys of its base class; Paddle warns about
            # "unused values in state_dict ... LearningRateDecay" on every resume: harmless
            warnings.filterwarnings("ignore", message=".*unused values in state_dict")
            meta = ckpt.load_weights(self.model, path)
            self._sync_optimizer()
            self.start_epoch = ckpt.load_optimizer_state(self.optimizer, path, meta)
        epochs = int(self.cfg.get("epoch", 1))
        if self.start_epoch >= epochs:
            from ppdet.core.errors import UserError
            raise UserError(f"{path} was saved after {self.start_epoch} epochs and epoch is "
                            f"{epochs}: nothing is left to train; give -o "
                            f"epoch={self.start_epoch + 1} or more")
        hist = os.path.join(self.save_dir, "eval_history.json")
        if os.path.isfile(hist):
            with open(hist) as f:   # epochs in the file count from 1
                self.history = [h for h in json.load(f) if h["epoch"] <= self.start_epoch]
            self.best_map = max([h["mAP"] for h in self.history], default=-1.0)
        print(f"resumed from {path} after {self.start_epoch} epochs: next epoch "
              f"{self.start_epoch + 1}")

    def save(self, name, epoch):
        if self.rank != 0:
            return
        path = os.path.join(self.save_dir, name)
        if name not in self.written:
            self.written.append(name)
        ckpt.save_checkpoint(self.model, path, self.optimizer, epoch=epoch,
                             plan=ckpt.channel_plan(self.model), extra=self.meta)

    # --- loop ------------------------------------------------------------------------
    def run_step(self, batch):
        losses = self.net(to_tensors(batch))
        losses["loss"].backward()
        for hook in self.hooks:
            if hasattr(hook, "after_backward"):
                hook.after_backward(self)
        self.optimizer.step()
        self.optimizer.clear_grad()
        self.lr.step()
        return {k: float(v) for k, v in losses.items()}

    def train(self, validate=False):
        epochs = int(self.cfg.get("epoch", 1))
        snapshot = int(self.cfg.get("snapshot_epoch", 1))
        if validate and self.rank == 0 and self._eval is None:
            # the eval set's defects (missing files, a class count that disagrees) are
            # reported now, not after the first snapshot's hours of training
            loader = build_reader(self.cfg, "eval")
            self._eval = (loader, build_metric_for(self.cfg, loader.dataset))
        self._wrap_parallel()
        self._call_hooks("before_train")
        try:
            for epoch in range(self.start_epoch, epochs):
                self._train_epoch(epoch, epochs, snapshot, validate)
            self.save("model_final", epochs - 1)
        finally:        # hooks undo their set-up (a teacher leaves the model) on errors too
            self._call_hooks("after_train")
        if self.rank == 0:
            self.report_saved(epochs, snapshot, validate)
        return self.history

    def _train_epoch(self, epoch, epochs, snapshot, validate):
        """One epoch: steps, its log line, its snapshot and evaluation, the hooks."""
        show = self.rank == 0
        bar_on = show and sys.stderr.isatty()      # a progress bar only on a terminal
        log_iter = max(int(self.cfg.get("log_iter", 20) or 20), 1)
        # in a file: one line per epoch, and one per log_iter steps only for long epochs
        step_lines = show and not bar_on and self.steps_per_epoch > 20 * log_iter
        self.epoch = epoch
        self.model.train()
        if hasattr(self.loader, "set_epoch"):
            self.loader.set_epoch(epoch)
        bar = tqdm(self.loader, desc=f"epoch {epoch + 1}/{epochs}",
                   disable=not bar_on, dynamic_ncols=True)
        tic, images = time.time(), 0
        total = dict.fromkeys(self.log_terms, 0.0)
        for self.step_in_epoch, batch in enumerate(bar):
            logs = self.run_step(batch)
            images += len(batch["im_id"])
            for k in total:
                total[k] += logs[k]
            if bar_on:
                bar.set_postfix(loss=f"{logs['loss']:.3f}", lr=f"{self.lr.get_lr():.2e}")
            elif step_lines and (self.step_in_epoch + 1) % log_iter == 0:
                print(f"epoch {epoch + 1}/{epochs} step {self.step_in_epoch + 1}/"
                      f"{self.steps_per_epoch}: {self._terms(logs)}, "
                      f"lr {self.lr.get_lr():.2e}", flush=True)
        seconds = time.time() - tic
        ips = images / max(seconds, 1e-9)
        self.epoch_seconds.append(seconds)
        if show:
            steps = self.step_in_epoch + 1 if images else 0
            means = {k: v / max(steps, 1) for k, v in total.items()}
            print(f"epoch {epoch + 1}/{epochs}: mean {self._terms(means)}, "
                  f"lr {self.lr.get_lr():.2e}, {ips:.1f} images/s, {seconds:.0f} s",
                  flush=True)
        last = epoch + 1 == epochs
        if (epoch + 1) % snapshot == 0 or last:
            self.save(str(epoch + 1), epoch)     # named by epochs done: 1-based
            if validate:
                self._validate(epoch, ips)
        self._call_hooks("after_epoch", epoch)

    def _call_hooks(self, name, *args):
        for hook in self.hooks:
            if hasattr(hook, name):
                getattr(hook, name)(self, *args)

    def _terms(self, values):
        """``loss 3.210`` (and, with more log terms, ``(loss_det 3.000, ...)``)."""
        extra = [f"{k} {values[k]:.3f}" for k in self.log_terms if k != "loss"]
        return f"loss {values['loss']:.3f}" + (f" ({', '.join(extra)})" if extra else "")

    def report_saved(self, epochs, snapshot, validate):
        """Say where the checkpoints went (the last thing a training run prints)."""
        snapshots = [n for n in self.written if n.isdigit()]
        print(f"checkpoints in {self.save_dir}/: model_final.pdparams (after epoch {epochs})"
              + (", best_model.pdparams" if "best_model" in self.written else "")
              + (f", snapshots {', '.join(n + '.pdparams' for n in snapshots)} (named by "
                 f"epochs done, every {snapshot})" if snapshots else "")
              + (", eval_history.json" if validate else ""))

    def _validate(self, epoch, ips):
        if self.rank != 0:
            return
        if self._eval is None:
            loader = build_reader(self.cfg, "eval")
            self._eval = (loader, build_metric_for(self.cfg, loader.dataset))
        loader, metric = self._eval
        result = evaluate(self.model, loader, metric, progress=False)
        metric.log()
        self.history.append({"epoch": epoch + 1, "mAP": float(result["mAP"]),
                             "train_ips": ips})
        atomic_write_bytes(os.path.join(self.save_dir, "eval_history.json"),
                           json.dumps(self.history, indent=1).encode())
        if result["mAP"] > self.best_map:
            self.best_map = float(result["mAP"])
            self.save("best_model", epoch)
            print(f"best mAP so far: {self.best_map * 100:.2f} (epoch {epoch + 1})")
