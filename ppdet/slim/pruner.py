"""Filter pruning of a detector: one dependency graph (paddleslim's, traced once, with the
concat worker from ``compat``) serves sensitivity analysis, ratio search and pruning.

Pruning a conv's filters removes the matching channels of its BN, of every consumer conv
(through concat routes and upsampling) and of depthwise convs fed by it.
"""
import logging

import numpy as np
import paddle

from ppdet.slim import compat
from ppdet.utils.cli import UserError

__all__ = ["RawOutputs", "FilterPruner", "CRITERIA", "model_flops"]

CRITERIA = ("l1_norm", "bn_scale", "geometry_median")
TRACE_SIZE = 64   # a small trace input: the graph is the same, tracing is faster


class RawOutputs(paddle.nn.Layer):
    """``image -> raw head outputs``: what paddleslim traces (no post-processing)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image):
        return self.model.head_outputs(image)


def model_flops(model, image_size):
    """paddleslim's FLOPs count (multiply-adds, batch 1) at ``image_size`` [H, W]."""
    h, w = image_size
    return compat.dygraph_flops(RawOutputs(model), [1, 3, int(h), int(w)])


def _quiet_paddleslim():
    """paddleslim logs every pruned variable at INFO (thousands of lines in a sensitivity
    run) and warns about the graph leaves it skips, which is expected here."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("paddleslim"):
            logging.getLogger(name).setLevel(logging.ERROR)


def bn_scales(model):
    """``{conv weight name: the BN scale right after it}`` for every ConvBNLayer."""
    from ppdet.modeling.layers import ConvBNLayer
    return {m.conv.weight.name: m.bn.weight for m in model.sublayers()
            if isinstance(m, ConvBNLayer)}


def _bn_scale_pruner_class():
    slim = compat.import_paddleslim()
    base = slim.dygraph.prune.L1NormFilterPruner

    class BNScaleFilterPruner(base):
        """Removes the filters whose following BN scale |gamma| is smallest.

        ``optimal_threshold``: the ratio is a share of the summed squared scales, not of
        the channels (PaddleSlim's rule): the smallest gammas whose squares add up to at
        most ``ratio`` of the total go.
        """
        scales = {}
        idx_selector = "default"

        def cal_mask(self, pruned_ratio, collection, num_head=-1):
            scale = self.scales.get(collection.master_name)
            if scale is None:
                return super().cal_mask(pruned_ratio, collection, num_head)
            score = np.abs(scale.numpy())
            order = score.argsort(kind="stable")
            if self.idx_selector == "optimal_threshold":
                energy = np.cumsum(score[order] ** 2) / max(float((score ** 2).sum()), 1e-12)
                n = int(np.searchsorted(energy, pruned_ratio, side="right"))
            else:
                n = int(round(len(order) * pruned_ratio))
            n = min(len(order) - 1, n)
            mask = np.ones(len(order), dtype="int32")
            mask[order[:n]] = 0
            return mask

    return BNScaleFilterPruner


class FilterPruner:
    """Prune and restore filters of ``model`` in place (real pruning: shapes change)."""

    def __init__(self, model, criterion="l1_norm", idx_selector="default"):
        if criterion not in CRITERIA:
            raise UserError(f"unknown criterion '{criterion}': choose one of "
                            f"{', '.join(CRITERIA)}")
        if idx_selector not in ("default", "optimal_threshold"):
            raise UserError(f"unknown idx_selector '{idx_selector}': default or "
                            f"optimal_threshold")
        if idx_selector == "optimal_threshold" and criterion != "bn_scale":
            raise UserError("--idx_selector optimal_threshold works with --criterion bn_scale")
        self.model = model
        self.criterion = criterion
        was_training = model.training
        model.eval()
        compat.import_paddleslim()
        _quiet_paddleslim()
        shape = [1, 3, TRACE_SIZE, TRACE_SIZE]
        wrapped = RawOutputs(model)
        if criterion == "bn_scale":
            cls = _bn_scale_pruner_class()
            self._pruner = cls(wrapped, shape, skip_leaves=True)
            self._pruner.scales = bn_scales(model)
            self._pruner.idx_selector = idx_selector
        else:
            self._pruner = compat.make_pruner(wrapped, shape, criterion=criterion)
        if was_training:
            model.train()
        self.groups = set(compat.prunable_params(self._pruner))
        self.pruned = False

    def check(self, names):
        missing = [n for n in names if n not in self.groups]
        if missing:
            raise UserError(f"'{missing[0]}' has no pruning group of its own (its channels are "
                            f"tied to another conv's, e.g. through an add): name that conv")

    def prune(self, ratios):
        """``{param_name: ratio}`` -> prune all at once (one plan: concat consumers get one
        combined mask). Returns ``{param_name: kept filters}`` for the named convs."""
        self.check(ratios)
        if self.pruned:
            self.restore()
        compat.prune_vars(self._pruner, {k: float(v) for k, v in ratios.items()})
        self.pruned = True
        shapes = {p.name: p.shape for p in self.model.parameters()}
        return {n: shapes[n][0] for n in ratios}

    def plan(self, ratios):
        """The paddleslim pruning plan for ``ratios``, not applied to the model."""
        self.check(ratios)
        return self._pruner.prune_vars({k: float(v) for k, v in ratios.items()}, 0,
                                       apply=None)

    def restore(self):
        compat.restore(self._pruner)
        self.pruned = False

    def drop_backups(self):
        """Make the current pruning permanent (frees the backups kept for restore)."""
        for layer in self.model.sublayers(include_self=True):
            for key in [k for k in layer._buffers if k.endswith("_backup")]:
                del layer._buffers[key]
        self.pruned = False
