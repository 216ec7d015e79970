"""Sparsity training on BN scales (network slimming), as a Trainer hook.

After each backward pass ``s * sign(gamma)`` is added to the gradient of the BN scales of
the prunable layers (the subgradient of ``s * sum |gamma|``), so unneeded channels drift to
zero and can later be cut by a global threshold. Each epoch logs a histogram of |gamma|
and the share below 1e-2 to ``<save_dir>/bn_sparsity.json`` (atomic; a resumed run keeps
the earlier epochs; epochs count from 1, as in the training log) and draws
``bn_sparsity.png``.
"""
import json
import math
import os

import numpy as np
import paddle

from ppdet.core.errors import UserError
from ppdet.slim.plots import plot_sparsity
from ppdet.utils.atomic import atomic_write_bytes

__all__ = ["BNSparsity", "S_DECAYS", "sparsity_from_config"]

S_DECAYS = ("none", "linear", "cosine")
SMALL = 1e-2
BINS = 40


class BNSparsity:
    """``prune_mode`` 0: scales of prunable layers not tied by shortcuts; 1 (default, as
    slim_prune.py): also those tied by shortcuts; 2: also those feeding kxk convs.
    ``s_decay``: ``none`` keeps s; ``linear``/``cosine`` take it to 0 over the run."""

    def __init__(self, s=1e-4, prune_mode=1, s_decay="none"):
        if not 0 < s < 1:
            raise UserError(f"sparsity factor s must be in (0, 1), e.g. 0.0001; got {s}")
        if prune_mode not in (0, 1, 2):
            raise UserError(f"sparsity prune mode must be 0, 1 or 2, got {prune_mode}")
        if s_decay not in S_DECAYS:
            raise UserError(f"sparsity s_decay must be one of {', '.join(S_DECAYS)}, "
                            f"got '{s_decay}'")
        self.s = float(s)
        self.prune_mode = int(prune_mode)
        self.s_decay = s_decay
        self.scales = []
        self.history = []
        self.edges = None

    def s_at(self, progress):
        if self.s_decay == "linear":
            return self.s * (1 - progress)
        if self.s_decay == "cosine":
            return self.s * 0.5 * (1 + math.cos(math.pi * progress))
        return self.s

    def _log_path(self, trainer):
        return os.path.join(trainer.save_dir, "bn_sparsity.json")

    # --- hook points ---------------------------------------------------------------------
    def before_train(self, trainer):
        from ppdet.slim.slimming.channels import SlimGraph
        self.scales = SlimGraph(trainer.model, self.prune_mode).scales()
        if not self.scales:
            raise UserError("sparsity training: this model has no prunable BN scales")
        path = self._log_path(trainer)
        if trainer.start_epoch > 0 and os.path.isfile(path):
            try:
                with open(path) as f:
                    log = json.load(f)
            except (OSError, ValueError) as e:
                raise UserError(f"cannot read {path} ({e}): move it away to start the "
                                f"sparsity log afresh") from e
            self.edges = log.get("edges")
            # epochs count from 1 (logs before "epoch_base" counted from 0)
            shift = 0 if log.get("epoch_base") == 1 else 1
            self.history = [{**h, "epoch": h["epoch"] + shift} for h in log.get("epochs", [])
                            if h["epoch"] + shift <= trainer.start_epoch]
        print(f"sparsity training: s={self.s} ({self.s_decay} decay) on "
              f"{len(self.scales)} BN scales (prune mode {self.prune_mode})")

    def after_backward(self, trainer):
        epochs = max(int(trainer.cfg.get("epoch", 1)), 1)
        progress = (trainer.epoch + trainer.step_in_epoch / max(trainer.steps_per_epoch, 1)) \
            / epochs
        s = self.s_at(min(progress, 1.0))
        with paddle.no_grad():
            for p in self.scales:
                if p.grad is not None:
                    p.grad.add_(s * paddle.sign(p))

    def after_epoch(self, trainer, epoch):
        gamma = np.abs(np.concatenate([p.numpy().ravel() for p in self.scales]))
        if self.edges is None:
            self.edges = np.linspace(0, float(gamma.max()) * 1.05 + 1e-6, BINS + 1).tolist()
        counts, _ = np.histogram(np.clip(gamma, 0, self.edges[-1]), bins=self.edges)
        small = float((gamma < SMALL).mean())
        epochs = max(int(trainer.cfg.get("epoch", 1)), 1)
        self.history.append({"epoch": epoch + 1, "s": self.s_at((epoch + 1) / epochs),
                             "share_below_1e-2": small, "mean_abs_gamma": float(gamma.mean()),
                             "hist": counts.tolist()})
        if trainer.rank != 0:
            return
        print(f"epoch {epoch + 1}: {small:.1%} of BN scales below {SMALL}, "
              f"mean |gamma| {gamma.mean():.4f}")
        log = {"s": self.s, "prune_mode": self.prune_mode, "s_decay": self.s_decay,
               "epoch_base": 1, "edges": self.edges, "epochs": self.history}
        path = self._log_path(trainer)
        atomic_write_bytes(path, json.dumps(log, indent=1).encode())
        plot_sparsity(log, path[:-len(".json")] + ".png", small=SMALL)


def sparsity_from_config(cfg, sr=False, s=None, prune=None):
    """The hook asked for by ``--sr --s --prune`` or the config's ``sparsity:`` section
    (``{enable, s, prune, s_decay}``); command-line values win. None when off."""
    section = dict(cfg.get("sparsity") or {})
    unknown = sorted(set(section) - {"enable", "s", "prune", "s_decay"})
    if unknown:
        raise UserError(f"unknown key 'sparsity.{unknown[0]}': use enable, s, prune, s_decay")
    enable = section.get("enable", False)
    if not isinstance(enable, bool):
        raise UserError(f"sparsity.enable must be true or false, got {enable!r}")
    if not (sr or enable):
        return None
    try:
        s = float(s if s is not None else section.get("s", 1e-4))
        prune = int(prune if prune is not None else section.get("prune", 1))
    except (TypeError, ValueError) as e:
        raise UserError(f"sparsity.s must be a number and sparsity.prune 0 or 1: {e}") from e
    return BNSparsity(s=s, prune_mode=prune, s_decay=section.get("s_decay", "none"))
