"""The one training loop, shared by tools/train.py, prune fine-tuning and slimming.

``Trainer.train`` runs epochs of ``run_step``; hooks (objects with optional
``before_train``, ``after_backward``, ``after_epoch`` methods) add behaviour such as
BN-sparsity regularisation without subclassing. Order: hooks run in list order, after
the built-in checkpoint/eval logic of each epoch.
"""
import json
import os
import random
import time

import numpy as np
import paddle
from tqdm import tqdm

from ppdet.engine import checkpoint as ckpt
from ppdet.engine.builder import build_metric_for, build_model, build_reader
from ppdet.engine.evaluate import evaluate, to_tensors
from ppdet.engine.optim import build_lr, build_optimizer
from ppdet.utils.atomic import atomic_write_bytes

__all__ = ["Trainer", "set_seed", "load_pretrain"]


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed)


def load_pretrain(model, path):
    """Load what matches by key and shape (ImageNet backbones, other class counts).
    A pruned or slimmed checkpoint of this toolkit is loaded whole instead (its channel
    plan and removed blocks rebuild the model), e.g. for a second round of --sr."""
    base = ckpt.resolve_weights(path)
    state = paddle.load(base + ".pdparams")
    meta = state.pop(ckpt.META_KEY, None) or {}
    if ckpt.is_reshaped(meta):
        ckpt.load_weights(model, base)
        print(f"pretrain weights {base}.pdparams: a pruned model, loaded with its channel "
              f"plan")
        return
    own = model.state_dict()
    use = {k: v for k, v in state.items() if k in own and list(v.shape) == list(own[k].shape)}
    model.set_state_dict(use)
    skipped = len(own) - len(use)
    print(f"pretrain weights {base}.pdparams: loaded {len(use)} tensors, {skipped} kept "
          f"their initial values (absent or of another shape)")


class Trainer:
    def __init__(self, cfg, model=None, hooks=(), save_dir=None):
        self.cfg = cfg
        self.rank = paddle.distributed.get_rank()
        self.world_size = paddle.distributed.get_world_size()
        self.model = model if model is not None else build_model(cfg)
        self.hooks = list(hooks)
        self.loader = build_reader(cfg, "train")
        self.steps_per_epoch = len(self.loader)
        self.lr = build_lr(cfg, self.steps_per_epoch)
        self.optimizer = build_optimizer(cfg, self.lr, self.model.parameters())
        self.save_dir = save_dir or os.path.join(cfg.get("save_dir", "output"),
                                                 cfg.get("filename", "model"))
        self.start_epoch = 0
        self.epoch = 0              # current epoch and step: hooks read them (s schedules)
        self.step_in_epoch = 0
        self.best_map = -1.0
        self.history = []
        self._eval = None
        self.net = self.model   # wrapped for data parallelism in train(), after any resume

    def _wrap_parallel(self):
        # after resume()/pretrain loading: a pruned checkpoint changes parameter shapes
        if self.world_size > 1 and self.net is self.model:
            paddle.distributed.init_parallel_env()
            self.net = paddle.DataParallel(self.model)

    # --- state -----------------------------------------------------------------------
    def resume(self, path):
        self.start_epoch = ckpt.load_resume(self.model, self.optimizer, path)
        hist = os.path.join(self.save_dir, "eval_history.json")
        if os.path.isfile(hist):
            with open(hist) as f:
                self.history = [h for h in json.load(f) if h["epoch"] < self.start_epoch]
            self.best_map = max([h["mAP"] for h in self.history], default=-1.0)
        print(f"resumed from {path}: next epoch {self.start_epoch}")

    def save(self, name, epoch):
        if self.rank != 0:
            return
        path = os.path.join(self.save_dir, name)
        ckpt.save_checkpoint(self.model, path, self.optimizer, epoch=epoch,
                             plan=ckpt.channel_plan(self.model))

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
        self._wrap_parallel()
        for hook in self.hooks:
            if hasattr(hook, "before_train"):
                hook.before_train(self)
        for epoch in range(self.start_epoch, epochs):
            self.epoch = epoch
            self.model.train()
            if hasattr(self.loader, "set_epoch"):
                self.loader.set_epoch(epoch)
            bar = tqdm(self.loader, desc=f"epoch {epoch + 1}/{epochs}",
                       disable=self.rank != 0, dynamic_ncols=True)
            tic, images = time.time(), 0
            for self.step_in_epoch, batch in enumerate(bar):
                logs = self.run_step(batch)
                images += len(batch["im_id"])
                bar.set_postfix(loss=f"{logs['loss']:.3f}", lr=f"{self.lr.get_lr():.2e}")
            ips = images / max(time.time() - tic, 1e-9)
            last = epoch + 1 == epochs
            if (epoch + 1) % snapshot == 0 or last:
                self.save(str(epoch), epoch)
                if validate:
                    self._validate(epoch, ips)
            for hook in self.hooks:
                if hasattr(hook, "after_epoch"):
                    hook.after_epoch(self, epoch)
        self.save("model_final", epochs - 1)
        return self.history

    def _validate(self, epoch, ips):
        if self.rank != 0:
            return
        if self._eval is None:
            loader = build_reader(self.cfg, "eval")
            self._eval = (loader, build_metric_for(self.cfg, loader.dataset))
        loader, metric = self._eval
        result = evaluate(self.model, loader, metric, progress=False)
        metric.log()
        self.history.append({"epoch": epoch, "mAP": float(result["mAP"]),
                             "train_ips": ips})
        atomic_write_bytes(os.path.join(self.save_dir, "eval_history.json"),
                           json.dumps(self.history, indent=1).encode())
        if result["mAP"] > self.best_map:
            self.best_map = float(result["mAP"])
            self.save("best_model", epoch)
            print(f"best mAP so far: {self.best_map * 100:.2f} (epoch {epoch + 1})")
