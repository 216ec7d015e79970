"""Fast sensitivity evaluation: one compiled program serves every (conv, ratio).

Pruning a group's channels is computed exactly by zeroing them at the output of every
producer of the group (conv + BN + activation, depthwise followers and shortcut-tied convs
too; a bare conv at its output): every consumer then sees zeros where real pruning would
see no channel at all. The model is exported ONCE with a ``channel_masks`` input holding one
0/1 per such channel, applied by forward hooks, and run by Paddle Inference with oneDNN;
each measurement only feeds new masks. Which channels go is decided by the same channel plan
(pruning graph, criterion) as real pruning (``ppdet.slim.plan.masks``).

Cut programs (:mod:`ppdet.slim.sensitivity.cuts`): a pair whose mask units all run after a cut
point (a backbone block, a YOLOv3 head level) is measured by the program after the cut,
fed the cut's state, which the whole program outputs too and computes once, unpruned, over
the cached set. Each cut program is the whole program pruned to the ops after the cut
(same hooks, same masks vector, same numbers); the program for
a measurement is the cheapest whose traced units include every unit the masks prune
(:meth:`MaskedEvaluator.program_for`), so an upstream unit is never silently unmasked.

With BN recalibration (``calib``, a :class:`~ppdet.slim.bn_calib.CalibSet`) the program also
takes ``bn_scale`` and ``bn_shift``, one per BN channel, applied to every BN's output: the
statistics are re-estimated in dygraph with the same masks and reach the predictor as that
affine correction (:func:`ppdet.slim.bn_calib.affine_correction`). It has no cuts: the
recalibration changes every BN, before any cut too.
"""
import copy
import glob
import os
import re
import shutil
import tempfile
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import paddle

from ppdet.engine.evaluate import normalise_output, split_per_image
from ppdet.modeling.layers import Upsample2x
from ppdet.slim.prune.masks import mask_units, masked, masks
from ppdet.slim.sensitivity import bn_calib
from ppdet.slim.sensitivity.cuts import Cut, cuts_of, prefix_states, trace_cut
from ppdet.slim.sensitivity.worker import Worker, make_predictor, run_batches, save_arrays

__all__ = ["MaskedEvaluator", "check_device"]

# A cut must save this much of one whole evaluation per ratio, summed over the groups it
# serves: exporting it costs about 2-4 evaluations of the demo eval set, and a run
# measures 9 ratios by default.
MIN_SAVING = 0.2


def check_device(device):
    """``device`` ("cpu", "gpu" or None: the GPU when this Paddle has CUDA and sees one)
    -> "cpu" or "gpu"; asking for a GPU this Paddle cannot use is a one-line error."""
    has_gpu = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if device is None:
        return "gpu" if has_gpu else "cpu"
    if device == "gpu" and not has_gpu:
        from ppdet.core.errors import UserError
        why = ("sees no GPU" if paddle.device.is_compiled_with_cuda()
               else "is the CPU build (pip install paddlepaddle-gpu for CUDA)")
        raise UserError(f"--device gpu: this paddlepaddle {why}; use --device cpu")
    return device


def _remove_stale_exports():
    """Temporary exports left by evaluators whose process was killed (kill -9)."""
    from ppdet.utils.atomic import pid_alive
    for path in glob.glob(os.path.join(tempfile.gettempdir(), "ppdet_masked_*_*")):
        m = re.match(r"ppdet_masked_(\d+)_", os.path.basename(path))
        if m and not pid_alive(int(m.group(1))):
            shutil.rmtree(path, ignore_errors=True)


class _MaskedExport(paddle.nn.Layer):
    """``forward`` sets one mask per unit; hooks on the units multiply their outputs."""

    def __init__(self, model, layers, offsets, bns=None, cuts=(), keys=()):
        super().__init__()
        self.model = model
        self._cuts, self._keys = list(cuts), list(keys)
        self._offsets = offsets
        self._current = None
        self._hooks = [layer.register_forward_post_hook(
            lambda lyr, inputs, out, _i=i: out if self._current is None
            else out * self._current[_i]) for i, layer in enumerate(layers)]
        self._bn_offsets, self._bn = [], None
        if bns is not None:
            sizes = [m._mean.shape[0] for m in bns]
            ends = np.cumsum(sizes)
            self._bn_offsets = [(int(e - n), int(e)) for n, e in zip(sizes, ends)]
            self._hooks += [m.register_forward_post_hook(
                lambda lyr, inputs, out, _i=i: out if self._bn is None
                else out * self._bn[0][_i] + self._bn[1][_i]) for i, m in enumerate(bns)]

    def remove_hooks(self):
        for h in self._hooks:
            h.remove()

    def _set(self, channel_masks, bn_scale=None, bn_shift=None):
        self._current = [channel_masks[a:b].reshape([1, b - a, 1, 1])
                         for a, b in self._offsets]
        if bn_scale is not None:
            self._bn = ([bn_scale[a:b].reshape([1, b - a, 1, 1]) for a, b in self._bn_offsets],
                        [bn_shift[a:b].reshape([1, b - a, 1, 1]) for a, b in self._bn_offsets])

    def _detect(self, outs, im_shape, scale_factor):
        out = self.model.predict_from_outputs(outs, im_shape, scale_factor)
        return out["bbox"], out["bbox_num"]

    def forward(self, image, im_shape, scale_factor, channel_masks, bn_scale=None,
                bn_shift=None):
        self._set(channel_masks, bn_scale, bn_shift)
        try:
            if not self._cuts:
                return self._detect(self.model.head_outputs(image), im_shape, scale_factor)
            # the same forward, walked so that the cuts' states are outputs too (computed
            # once, unpruned, by this very program: no second export, same numbers)
            levels = [c for c in self._cuts if c.kind == "level"]
            deep = max(levels, key=lambda c: c.at) if levels else Cut(self.model)
            states = prefix_states(self.model, image, self._cuts + [deep])
            outs = deep.suffix({k: states[k] for k in deep.keys})
            return self._detect(outs, im_shape, scale_factor) + tuple(
                states[k] for k in self._keys)
        finally:
            self._current = self._bn = None


class _Program:
    """One exported program: its files, the units it may mask, its relative cost, and
    ``feeds``: ``{input name: state key}`` of its per-image inputs (none: the images)."""

    def __init__(self, name, safe, flops, feeds=None):
        self.name, self.safe, self.flops, self.feeds = name, safe, flops, feeds or {}


class MaskedEvaluator:
    """``evaluator(ratios=None) -> mAP`` over a cached eval set, pruning by masks."""

    def __init__(self, model, cache, metric, pruner, batch_size=16, threads=1,
                 workdir=None, calib=None, device="cpu", cut_budget=None, log=None):
        self.model, self.cache, self.metric, self.pruner = model, cache, metric, pruner
        self.device = device
        self.calib = calib
        self._dygraph = threading.Lock()    # spawned evaluators share the dygraph model
        self._metric = threading.Lock()     # ... and the metric (COCOeval is not re-entrant)
        self.bns = [m for _, m in bn_calib.bn_layers(model)] if calib is not None else None
        self.n_bn = sum(m._mean.shape[0] for m in self.bns) if self.bns else 0
        self.batch_size = batch_size
        self.calls = 0
        self.graph = pruner.graph
        units = mask_units(self.graph)      # every producer of every prunable group
        self.units = list(dict.fromkeys(u for u, _, _, _ in units))
        self.layers = [self.graph.layers[u] for u in self.units]
        at = {u: i for i, u in enumerate(self.units)}
        self.index = {}                     # group name -> the unit of its master conv
        sizes = [0] * len(self.units)
        for unit, conv, key, channels in units:
            sizes[at[unit]] = channels
            if conv == key:
                for name in self.graph.group(key).names:
                    self.index[name] = at[unit]
        ends = np.cumsum(sizes)
        self.offsets = [(int(e - s), int(e)) for s, e in zip(sizes, ends)]
        self.n_channels = int(ends[-1])
        own = workdir is None     # a temporary export, removed by close() (or at exit)
        if own:
            _remove_stale_exports()
        self.workdir = workdir or tempfile.mkdtemp(prefix=f"ppdet_masked_{os.getpid()}_")
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.workdir, True) if own \
            else None
        self._log = log or (lambda *_: None)
        self.states = {}                    # cut state key -> array over the cached set
        self.programs = [_Program("model", set(range(len(self.units))), None)]
        chosen = []             # BN recalibration changes every BN: the whole program only
        if calib is None:
            chosen = self._choose_cuts(self.cache.images.nbytes if cut_budget is None
                                       else cut_budget)
        keys = list(dict.fromkeys(k for c in chosen for k in c[4]))
        self._export(_MaskedExport(self.model, self.layers, self.offsets, self.bns,
                                   [c[0] for c in chosen], keys), "model", self._spec())
        # every predictor of this process is made and run on one thread of its own: oneDNN
        # keeps per-thread state, and predictors run from a third thread in turn failed
        # ("could not execute a primitive") once there was more than one program
        self._runner = ThreadPoolExecutor(1, thread_name_prefix="ppdet-predictor")
        self._runner_down = weakref.finalize(self, self._runner.shutdown, False)
        self.predictor = self._on_runner(
            make_predictor, os.path.join(self.workdir, "model"), threads, device)
        self.predictors = {"model": self.predictor}
        if chosen:
            self._add_cuts(chosen, keys, threads)
        self._worker, self._workers, self._arrays = None, [], None

    def _choose_cuts(self, budget):
        """The cuts worth a program whose states fit ``budget`` bytes.

        The default budget is the image cache's own size: the cached data at most doubles,
        and the eval set's size was chosen for the images to fit. A cut is taken only if it
        saves at least ``MIN_SAVING`` of a whole evaluation per ratio over the groups it
        would serve (an export and a predictor per process are not free). Greedy: the cut
        saving most per new byte first."""
        candidates = []
        for cut in cuts_of(self.model):
            safe, (pre, post), shapes = trace_cut(self.model, cut, self.units,
                                                 self.cache.image_size)
            candidates.append((cut, safe, post, pre + post, shapes))
        if not candidates:
            return []
        whole = candidates[0][3]
        self.programs[0].flops = whole
        groups = {}                         # group key -> its units
        for unit, _, key, _ in mask_units(self.graph):
            groups.setdefault(key, set()).add(unit)
        n = len(self.cache)

        def cost(group, chosen):
            return min([whole] + [c[2] for c in chosen if groups[group] <= c[1]])

        def saving(chosen):
            return sum(whole - cost(g, chosen) for g in groups) / whole

        def new_bytes(c, chosen):
            have = {k for x in chosen for k in x[4]}
            return sum(int(np.prod(v)) * 4 * n for k, v in c[4].items() if k not in have)

        chosen, used, left_out = [], 0, []
        while True:
            best = None
            for c in candidates:
                if c in chosen:
                    continue
                gain = saving(chosen + [c]) - saving(chosen)
                size = new_bytes(c, chosen)
                if gain < MIN_SAVING:
                    continue
                if used + size > budget:
                    left_out.append(c[0].name)
                    candidates = [x for x in candidates if x is not c]
                    break
                if best is None or gain / max(size, 1) > best[0]:
                    best = (gain / max(size, 1), c, size)
            else:
                if best is None:
                    break
                chosen.append(best[1])
                used += best[2]
        if left_out:
            self._log(f"fast sensitivity: {len(left_out)} cut program(s) left out, their "
                      f"cached tensors over the budget of {budget / 2**20:.0f} MiB "
                      f"({', '.join(left_out)}): their pairs run an earlier cut or the whole "
                      f"program")
        return chosen

    def _add_cuts(self, chosen, keys, threads):
        """The states by one unpruned run of the whole program, then a program per cut."""
        outs = self._on_runner(run_batches, self.predictor, self._batched(),
                               {"channel_masks": np.ones(self.n_channels, "float32")},
                               self.batch_size, n_out=2 + len(keys))
        for i, k in enumerate(keys):
            self.states[k] = np.concatenate([o[2 + i] for o in outs])
        at = {u: i for i, u in enumerate(self.units)}
        # each cut program is the whole program pruned to what its fetches need from the
        # cut's states: the same ops (same numbers) and no second trace (~0.2 s, not ~2 s)
        paddle.enable_static()
        try:
            with paddle.pir_utils.OldIrGuard(), paddle.static.scope_guard(paddle.static.Scope()):
                exe = paddle.static.Executor(paddle.CPUPlace())
                prog, _, fetches = paddle.static.load_inference_model(
                    os.path.join(self.workdir, "model"), exe)
                block = prog.global_block()
                var = {k: fetches[2 + i].name for i, k in enumerate(keys)}
                for cut, safe, post, _, shapes in chosen:
                    feeds = [block.var(var[k]) for k in shapes] + [
                        block.var(n) for n in ("im_shape", "scale_factor", "channel_masks")]
                    paddle.static.save_inference_model(
                        os.path.join(self.workdir, cut.name), feeds, fetches[:2], exe,
                        program=prog)
                    self.programs.append(_Program(cut.name, {at[u] for u in safe}, post,
                                                  {var[k]: k for k in shapes}))
        finally:
            paddle.disable_static()
        for p in self.programs[1:]:
            self.predictors[p.name] = self._on_runner(
                make_predictor, os.path.join(self.workdir, p.name), threads, self.device)

    def _on_runner(self, fn, *args, **kwargs):
        return self._runner.submit(fn, *args, **kwargs).result()

    def spawn(self):
        """Another evaluator on the same compiled program, run by a worker process of its
        own (see :mod:`ppdet.slim.sensitivity.worker`: threads do not run predictors in parallel).
        It loads in the background; :meth:`ready` says when it can take work. BN
        calibration and scoring stay in this process, serialised between evaluators."""
        if self._arrays is None:
            self._arrays = save_arrays(self.workdir, {**self._batched(), **self.states})
        other = copy.copy(self)
        other._worker = Worker({p.name: (os.path.join(self.workdir, p.name),
                                         {n: self._arrays[k] for n, k in self._inputs(p)})
                                for p in self.programs}, self.batch_size)
        other._workers, other._cleanup = [], None     # the export is this evaluator's
        other.calls = 0
        self._workers.append(other._worker)
        return other

    def ready(self):
        return self._worker is None or self._worker.ready()

    def close(self):
        """Stop the worker processes spawned from this evaluator; remove its export."""
        for w in self._workers:
            w.close()
        self._workers = []
        if self._cleanup is not None:
            self._cleanup()
        if self._worker is None:
            self._runner_down()

    def _batched(self, program=None):
        """The per-image inputs of ``program`` (default: the whole program)."""
        arrays = {**self.states, "image": self.cache.images, "im_shape": self.cache.im_shape,
                  "scale_factor": self.cache.scale_factor}
        return {n: arrays[k] for n, k in self._inputs(program)}

    def _inputs(self, program):
        """``[(input name, array key)]``: what ``program`` reads per image."""
        feeds = list(program.feeds.items()) if program is not None and program.feeds \
            else [("image", "image")]
        return feeds + [("im_shape", "im_shape"), ("scale_factor", "scale_factor")]

    def _spec(self):
        h, w = self.cache.image_size
        spec = [paddle.static.InputSpec([None, 3, h, w], "float32", "image"),
                paddle.static.InputSpec([None, 2], "float32", "im_shape"),
                paddle.static.InputSpec([None, 2], "float32", "scale_factor"),
                paddle.static.InputSpec([self.n_channels], "float32", "channel_masks")]
        if self.bns is not None:
            spec += [paddle.static.InputSpec([self.n_bn], "float32", "bn_scale"),
                     paddle.static.InputSpec([self.n_bn], "float32", "bn_shift")]
        return spec

    def _export(self, wrapper, name, spec):
        ups = [m for m in self.model.sublayers() if isinstance(m, Upsample2x)]
        for m in ups:           # oneDNN cannot run nearest interpolate with a scale attribute
            m.mode = "repeat"
        was_training = self.model.training
        self.model.eval()
        try:
            with paddle.pir_utils.DygraphOldIrGuard():
                static = paddle.jit.to_static(wrapper, input_spec=spec, full_graph=True)
                paddle.jit.save(static, os.path.join(self.workdir, name))
        finally:
            wrapper.remove_hooks()
            for m in ups:
                m.mode = "interpolate"
            if was_training:
                self.model.train()

    def program_for(self, masks):
        """The cheapest program that runs every unit ``masks`` prunes (the whole program
        when none of the cuts does)."""
        pruned = {i for i, (a, b) in enumerate(self.offsets) if masks[a:b].min() < 1}
        fit = [p for p in self.programs if pruned <= p.safe]
        return min(fit, key=lambda p: (p.flops is None, p.flops or 0))

    def unit_masks(self, ratios):
        """``{unit: 0/1 per channel}`` for pruning ``{name: ratio}``."""
        return masks(self.graph, self.pruner.plan(ratios)) if ratios else {}

    def masks_for(self, ratios, unit_masks=None):
        """0/1 per channel for pruning ``{name: ratio}`` (the plan is not applied)."""
        out = np.ones(self.n_channels, "float32")
        if not ratios:
            return out
        at = {u: i for i, u in enumerate(self.units)}
        for unit, vec in (unit_masks or self.unit_masks(ratios)).items():
            a, b = self.offsets[at[unit]]
            out[a:b] *= vec
        return out

    def correction_for(self, unit_masks):
        """The BN ``(scale, shift)`` of the model pruned by ``unit_masks``, its statistics
        re-estimated on the calibration batches (dygraph, masks applied as hooks)."""
        with self._dygraph, masked(self.graph, unit_masks):
            stats = bn_calib.calibrated_stats(self.model, self.calib)
            return bn_calib.affine_correction(self.model, stats)

    def detections(self, masks, correction=None):
        constants = {"channel_masks": masks}
        if self.bns is not None:
            if correction is None:
                correction = (np.ones(self.n_bn, "float32"), np.zeros(self.n_bn, "float32"))
            constants["bn_scale"], constants["bn_shift"] = correction
        program = self.program_for(masks)
        if self._worker is not None:
            outs = self._worker.run(constants, program.name)
        else:
            outs = self._on_runner(run_batches, self.predictors[program.name],
                                   self._batched(program), constants,
                               self.batch_size)
        dets = {}
        for k, (bbox, num) in enumerate(outs):
            ids = self.cache.im_id[k * self.batch_size:(k + 1) * self.batch_size]
            bbox, num = normalise_output(bbox, num)
            split_per_image(bbox, num, ids, dets)
        return dets

    def __call__(self, ratios=None):
        """mAP pruned by ``ratios``, BN recalibrated first when the evaluator has ``calib``."""
        self.calls += 1
        units = self.unit_masks(ratios)
        corr = self.correction_for(units) if self.calib is not None else None
        return self.score(self.detections(self.masks_for(ratios, units), corr))

    def score(self, detections):
        with self._metric:
            return float(self.metric.score(detections))
