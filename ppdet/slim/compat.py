"""Everything paddleslim 2.6 (written for Paddle 2.x) needs to prune dygraph models on Paddle 3.3.

paddleslim itself is imported lazily (``import_paddleslim()``): it costs ~1 s and most CLI
entry points never touch it. Shims, all idempotent:

1. ``paddle.base.dygraph.base._to_static_mode_guard_``: renamed ``to_static_mode_guard`` in
   Paddle 3; paddleslim's tracer still calls the old name. Aliased once, only if missing.
2. Tracing (``paddleslim.core.dygraph2program``, used by every dygraph pruner and by
   ``dygraph_flops``) runs under the old-IR flag, so it builds a legacy ``Program`` whose ops
   paddleslim can walk (under PIR it fails: ``'pir.Operation' object has no attribute 'type'``).
   Only the flag is switched (``DygraphOldIrGuard``), never static mode: so pruner
   construction, ``flops`` and ``FilterPruner.sensitive_prune`` (which traces between prunes)
   work with no guard at the call site, while ``prune_vars``/``restore``/``sensitive`` (which
   need dygraph mode) keep working. A trace that raises no longer leaves Paddle stuck in
   static mode (upstream only calls ``disable_static()`` on success).
3. A ``concat`` prune worker, which paddleslim dropped in v2.1.1. Without it a filter whose
   output reaches a concat (YOLOv3 routes, SPP) gets no pruning group at all: "Unsupported
   operator named concat", ``prune_var`` returns an empty plan, sensitivity reads 0.0.
   Forward (an input pruned): the input's mask is placed at that input's offset in a mask
   over the output, then the output's consumers are searched with a visited set of their
   own; the shared one would stop a second input (or a second path into the same concat, as
   in SPP) at consumers an earlier search already marked, leaving their input channels
   unpruned. Its marks are then handed to the shared set, so a filter that search reached
   from its output side (the other operand of an add after the concat) is not made a master
   of a partial group later. Backward (the output pruned): each input gets its slice.
4. ``PruningPlan.add`` merges two masks on one parameter axis into a Python list;
   ``apply="lazy"`` then fails (``'list' object has no attribute 'reshape'``). With concat
   this is the normal case (a concat consumer gets one mask per pruned input). Merged masks
   are kept as arrays.
5. ``FilterPruner.sensitive()`` without ``sen_file`` fails (``Status.save(None)`` opens None)
   right after its first prune, before the restore: the model is left pruned. Saving is
   skipped when there is no file.

What the toolkit uses: ``trace_groups`` (one trace of a model into plain-data groups, for
``ppdet.slim.prune.graph``) and ``import_paddleslim``. ``make_pruner``, ``prune_vars``,
``restore`` and ``dygraph_flops`` are paddleslim's own pruners and FLOPs count, kept as the
reference the pruning graph is tested and benchmarked against (``tests/test_graph.py``,
``bench/bench_sensitivity.py``).

``FilterPruner.restore()`` only undoes ``prune_vars`` (``prune_var`` does not set
``pruner.plan``); ``restore(pruner)`` undoes any plan applied to the model.

Checked and left alone: ``paddle.fluid`` is only referenced by paddleslim's distillation
code (not imported by pruning); FPGM's ``np.product`` works on numpy 1.26 (pinned < 2);
the static ``Pruner`` needs ``FLAGS_enable_pir_api=0`` before paddle is imported (not here).
"""

from __future__ import annotations

import functools
import sys

import numpy as np
import paddle

__all__ = [
    "CRITERIA",
    "apply_paddle_shims",
    "import_paddleslim",
    "make_pruner",
    "dygraph_flops",
    "prunable_params",
    "prune_vars",
    "restore",
    "trace_groups",
]

# criterion name -> paddleslim.dygraph class; 'bn_scale' exists only for the static Pruner.
CRITERIA = {
    "l1_norm": "L1NormFilterPruner",
    "l2_norm": "L2NormFilterPruner",
    "fpgm": "FPGMFilterPruner",
    "geometry_median": "FPGMFilterPruner",
}

_MARK = "_ppdet_compat"  # attribute set on every wrapper, so re-applying is a no-op
_slim = None  # the paddleslim module once shimmed


def apply_paddle_shims():
    """Shims that need only paddle (shim 1). Safe to call any number of times."""
    base = paddle.base.dygraph.base
    if not hasattr(base, "_to_static_mode_guard_"):
        base._to_static_mode_guard_ = base.to_static_mode_guard


def import_paddleslim():
    """Apply every shim, import paddleslim and return it. Idempotent and cheap after the first."""
    global _slim
    apply_paddle_shims()
    if _slim is not None:
        return _slim
    import paddleslim
    import paddleslim.core.dygraph
    import paddleslim.dygraph.prune.filter_pruner
    import paddleslim.dygraph.prune.pruning_plan
    import paddleslim.dygraph.prune.var_group
    import paddleslim.prune.prune_worker

    _guard_tracing(paddleslim)
    _register_concat_worker(paddleslim.prune.prune_worker)
    _keep_merged_masks_as_arrays(paddleslim.dygraph.prune.pruning_plan.PruningPlan)
    _skip_save_without_file(paddleslim.dygraph.prune.filter_pruner.Status)
    _slim = paddleslim
    return paddleslim


# --- shim 2: trace under the old IR --------------------------------------------------------

def _guard_tracing(paddleslim):
    original = paddleslim.core.dygraph.dygraph2program
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def dygraph2program(layer, inputs, dtypes=None):
        was_dynamic = paddle.in_dynamic_mode()
        try:
            with paddle.pir_utils.DygraphOldIrGuard():
                return original(layer, inputs, dtypes=dtypes)
        finally:
            # upstream calls enable_static() and only undoes it when the forward succeeds
            if was_dynamic and not paddle.in_dynamic_mode():
                paddle.disable_static()

    setattr(dygraph2program, _MARK, True)
    dygraph2program.original = original
    # modules bound the function with `from ... import dygraph2program`: rebind each copy
    for name, module in list(sys.modules.items()):
        if name.startswith("paddleslim") and getattr(module, "dygraph2program", None) is original:
            module.dygraph2program = dygraph2program


# --- shim 3: concat prune worker -----------------------------------------------------------

_active_forwards = set()  # (graph, op, slot, axis) being searched: bounds pathological loops


def _register_concat_worker(prune_worker):
    registry = prune_worker.PRUNE_WORKER
    if registry.get("concat") is not None:
        return
    registry.register(_make_concat_worker(prune_worker))


def _make_concat_worker(prune_worker):
    """Long: one class for paddleslim's PRUNE_WORKER interface (``_prune`` and the
    ``_forward`` it calls share the op, the visited marks and the transforms); its methods
    only make sense together, and the class must be made from the installed paddleslim's
    ``PruneWorker``, so it is defined inside this factory."""
    base = prune_worker.PruneWorker
    unsupported = prune_worker.UnsupportOpError

    class concat(base):  # the registry keys workers by class name, i.e. by op type
        def _prune(self, var, pruned_axis, transforms):
            ins = self.op.inputs("X")
            out = self.op.outputs("Out")[0]
            if self.op.inputs("AxisTensor"):
                raise unsupported("concat with a tensor axis")
            axis = self.op.attr("axis")
            if axis < 0:
                axis += len(out.shape())
            if pruned_axis != axis:
                # channels line up across inputs and output: all are pruned alike (like sum)
                for v in ins + [out]:
                    if v.name() != var.name():
                        self._visit_and_search(v, pruned_axis, transforms)
                return
            sizes = [int(v.shape()[axis]) for v in ins]
            if min(sizes) < 0:
                raise unsupported("concat of inputs with unknown size on the concat axis")
            offsets = [sum(sizes[:i]) for i in range(len(sizes))]
            total = sum(sizes)
            # transforms are read by FilterPruner._transform_mask: mask[src_start:src_end] is
            # written into ones(target_len)[target_start:target_end]
            if var.name() == out.name():
                names = [v.name() for v in ins]
                if len(set(names)) != len(names):
                    # one producer would need two (possibly different) masks
                    raise unsupported("pruning the output of a concat with a repeated input")
                for v, off, size in zip(ins, offsets, sizes):
                    trans = {"src_start": off, "src_end": off + size, "target_start": 0,
                             "target_end": size, "target_len": size}
                    self._visit_and_search(v, axis, transforms + [trans])
                return
            for slot, v in enumerate(ins):
                if v.name() != var.name():
                    continue
                off, size = offsets[slot], sizes[slot]
                trans = {"src_start": 0, "src_end": size, "target_start": off,
                         "target_end": off + size, "target_len": total}
                self._forward(out, slot, axis, transforms + [trans])

        def _forward(self, out, slot, axis, transforms):
            key = (id(getattr(self.op, "_graph", None)), self.op.idx(), slot, axis)
            if key in _active_forwards:  # came back to this input through a loop
                return
            # Search the consumers with an empty visited set: the shared one already holds
            # their marks if another input of this concat (another master, or another path
            # of this one, as in SPP) got there first, and the search would stop before
            # pruning their input channels.
            shared, self.visited = self.visited, {}
            _active_forwards.add(key)
            try:
                self._visit_and_search(out, axis, transforms)
                # Hand the marks on: a filter this search reached from its output side (the
                # other operand of an add after the concat) now belongs to this group, so its
                # own search must stop at once, as paddleslim does for residual adds, instead
                # of building a partial group of its own.
                for ax, marks in self.visited.items():
                    shared.setdefault(ax, {}).update(marks)
            finally:
                _active_forwards.discard(key)
                self.visited = shared

    return concat


# --- shim 4: merged masks stay arrays ------------------------------------------------------

def _keep_merged_masks_as_arrays(plan_cls):
    original = plan_cls.add
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def add(self, var_name, pruning_mask):
        original(self, var_name, pruning_mask)
        for m in self._masks.get(var_name, []):
            if isinstance(m.mask, list):
                m.mask = np.asarray(m.mask, dtype=np.int64)

    setattr(add, _MARK, True)
    plan_cls.add = add


# --- shim 5: sensitive() without a status file --------------------------------------------

def _skip_save_without_file(status_cls):
    original = status_cls.save
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def save(self, dst):
        if dst is not None:
            original(self, dst)

    setattr(save, _MARK, True)
    status_cls.save = save


# --- helpers -------------------------------------------------------------------------------

def make_pruner(model, input_shape, criterion="l1_norm", skip_leaves=True, opt=None,
                sen_file=None):
    """A paddleslim dygraph filter pruner for ``model`` traced with one input of ``input_shape``.

    ``criterion``: one of ``CRITERIA`` ('l1_norm', 'l2_norm', 'fpgm' == 'geometry_median').
    The model's forward must take the image tensor alone and return raw outputs.
    """
    slim = import_paddleslim()
    if criterion not in CRITERIA:
        raise ValueError(
            f"criterion {criterion!r} not supported by paddleslim's dygraph pruners; "
            f"choose from {sorted(CRITERIA)} ('bn_scale' exists only in the static Pruner)")
    cls = getattr(slim.dygraph.prune, CRITERIA[criterion])
    # FPGMFilterPruner accepts only these keyword arguments
    return cls(model, [int(d) for d in input_shape], sen_file=sen_file, opt=opt,
               skip_leaves=skip_leaves)


def dygraph_flops(model, input_shape, only_conv=False, detail=False):
    """paddleslim's FLOPs count (multiply-adds) of ``model`` for ONE image.

    ``input_shape`` is [C, H, W] or [N, C, H, W]; N is replaced by 1 because paddleslim
    multiplies the non-conv terms (bn, relu, fc) by the batch but not the conv terms.
    """
    slim = import_paddleslim()
    shape = [int(d) for d in input_shape]
    shape = [1] + shape[-3:] if len(shape) >= 3 else shape
    return slim.analysis.dygraph_flops(model, shape, only_conv=only_conv, detail=detail)


def prunable_params(pruner):
    """Names that ``prune_vars`` can take as keys: masters of the pruner's groups on axis 0."""
    return [c.master_name for c in pruner.collections if c.master_axis == 0]


def prune_vars(pruner, ratios, apply="impretive"):
    """``pruner.prune_vars(ratios, 0)`` that refuses names it would silently ignore.

    paddleslim skips unknown names, and names with no group of their own (a filter absorbed
    into another's group, or one that met an unsupported op), without a word. Pruning all
    ratios in one call matters: separate calls compute masks on the original shapes, so a
    concat consumer pruned by two calls gets the second mask on an already shrunken axis.
    """
    known = set(prunable_params(pruner))
    unknown = sorted(set(ratios) - known)
    if unknown:
        raise KeyError(f"not prunable as filters (no pruning group): {unknown}")
    return pruner.prune_vars(dict(ratios), 0, apply=apply)


def restore(pruner):
    """Give back every pruned parameter (and optimizer state) of ``pruner.model``.

    Works whatever applied the plan: ``prune_var`` never sets ``pruner.plan``, so
    ``pruner.restore()`` is a no-op after it. The backups live in the layers' buffers.
    """
    slim = import_paddleslim()
    slim.dygraph.prune.pruning_plan.PruningPlan().restore(pruner.model, opt=pruner.opt)
    pruner.plan = None


def trace_groups(layer, input_shape):
    """Trace ``layer`` once (image input only) and return its channel groups as plain data.

    Returns ``{"groups": [...]}``. Each group is
    ``{"master": param name, "members": [(param name, axis, [transform dict, ...]), ...]}``
    for a conv whose filters (axis 0) can be removed, members being every parameter or BN
    buffer that loses the same channels (BN, depthwise followers, convs tied by shortcut
    adds on axis 0; consumers on axis 1). Transforms map a channel of the master onto the
    member's axis (``src_start``/``target_start``... through concat, ``repeat``, ``stride``,
    ``squeeze``), in paddleslim's order. Convs producing the model's outputs get no group.
    No paddleslim object leaks.
    """
    slim = import_paddleslim()
    import logging
    for name in list(logging.root.manager.loggerDict):   # it warns about every leaf it skips
        if name.startswith("paddleslim"):
            logging.getLogger(name).setLevel(logging.ERROR)
    shape = [int(d) for d in input_shape]
    program = slim.core.dygraph2program(layer, [shape], dtypes=["float32"])
    graph = slim.core.GraphWrapper(program)
    import paddle
    convs = {m.weight.name for m in layer.sublayers() if isinstance(m, paddle.nn.Conv2D)}
    params = [p.name for p in layer.parameters() if p.name in convs]   # filters only
    finder = slim.prune.PruningCollections()
    collections = finder.create_pruning_collections(params, graph, skip_leaves=True)
    known = {p.name for p in layer.parameters()} | {b.name for b in layer.buffers()}
    groups = []
    for coll in collections:
        if coll.master_axis != 0:
            continue
        members = []
        for d in coll.all_pruning_details():
            if d.name in known:
                members.append((d.name, int(d.axis), [dict(t) for t in d.transform]))
        groups.append({"master": coll.master_name, "members": members})
    return {"groups": groups}
