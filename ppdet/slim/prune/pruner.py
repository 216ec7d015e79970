"""Filter pruning of a detector in place, on the one pruning graph.

``FilterPruner`` prunes ``{conv weight name: ratio}`` (all at once, so a concat consumer
loses the channels of every pruned input), restores, or makes the pruning permanent. The
channels are chosen by a criterion of :mod:`ppdet.slim.prune.criteria`; the cutting, counting and
masking live in :mod:`ppdet.slim.plan`.
"""
from ppdet.core.errors import UserError
from ppdet.slim.prune import criteria
from ppdet.slim.prune.costs import count_flops
from ppdet.slim.prune.graph import PruneGraph
from ppdet.slim.prune.plan import apply_plan, make_plan

__all__ = ["FilterPruner", "CRITERIA", "model_flops"]

CRITERIA = tuple(criteria.CRITERIA)     # every criterion is offered: one list, one place


def model_flops(model, image_size):
    """paddleslim's FLOPs count (multiply-adds, batch 1) at ``image_size`` [H, W], counted
    from the layers without tracing."""
    return count_flops(model, image_size)


class FilterPruner:
    """Prune and restore filters of ``model`` in place (real pruning: shapes change)."""

    def __init__(self, model, criterion="l1_norm", idx_selector="default"):
        if criterion not in CRITERIA:
            raise UserError(f"unknown criterion '{criterion}': choose one of "
                            f"{', '.join(CRITERIA)}")
        if idx_selector not in criteria.SELECTORS:
            raise UserError(f"unknown idx_selector '{idx_selector}': default or "
                            f"optimal_threshold")
        if idx_selector == "optimal_threshold" and criterion != "bn_scale":
            raise UserError("--idx_selector optimal_threshold works with --criterion bn_scale")
        self.model = model
        self.criterion, self.idx_selector = criterion, idx_selector
        self.graph = PruneGraph.of(model)
        self.groups = {g.name for g in self.graph.prunable}
        self._applied = None

    @property
    def pruned(self):
        return self._applied is not None

    def check(self, names):
        missing = [n for n in names if n not in self.groups]
        if missing:
            raise UserError(f"'{missing[0]}' has no pruning group of its own (its channels are "
                            f"tied to another conv's, e.g. through an add): name that conv")

    def plan(self, ratios):
        """The :class:`~ppdet.slim.plan.ChannelPlan` for ``ratios``, not applied."""
        self.check(ratios)
        return make_plan(self.graph, ratios, self.criterion, self.idx_selector)

    def prune(self, ratios):
        """``{param_name: ratio}`` -> prune all at once. Returns ``{param_name: kept
        filters}`` for the named convs."""
        plan = self.plan(ratios)
        self._applied = apply_plan(self.graph, plan)
        return {n: len(plan[self.graph.group(n).key]) if self.graph.group(n).key in plan
                else self.graph.group(n).size for n in ratios}

    def restore(self):
        if self._applied is not None:
            self._applied.restore()
        self._applied = None

    def drop_backups(self):
        """Make the current pruning permanent (frees the copies kept for restore)."""
        if self._applied is not None:
            self._applied.forget()
        self._applied = None
