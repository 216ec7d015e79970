"""Measured latency of a config on a deploy target, per pruning group, and a predictor.

**What is measured** (Paddle Inference, CPU, oneDNN, ``threads`` threads, batch 1, at the
config's deploy input size, the way an exported model runs):

- ``full_ms``: the whole exported model (pre-processing is outside the predictor;
  decode, NMS and every layer pruning never touches are inside it);
- for every conv a prunable group touches (its producers as deployed: conv + BN +
  activation; its depthwise followers; the input side of its consumers), that conv alone
  at full width (``base``), timed as a one-conv program at its deploy input size, less
  the cost of running an empty program (:func:`run_overhead`);
- for every prunable group of the :class:`~ppdet.slim.graph.PruneGraph` (the one place
  groups are defined) and every channel count ``k`` it can keep under its size (the
  multiples of ``step``, and any extra counts asked for, e.g. those current ratios give):
  each of those convs again with the group at ``k`` and everything else full.

**The model**: ``latency(plan) = fixed + sum over convs u of base_u * prod over the groups
g touching u of piece_{g,u}(k_g) / base_u``, with ``fixed = full_ms - sum of base``: the
part no pruning changes (decode, NMS, the layers no group touches). A conv whose input and
output groups both shrink scales by both ratios (its FLOPs are bilinear in the two
counts), which a sum of per-group savings gets badly wrong (a conv pruned 50% on each side
keeps 25% of its work, not 0%). ``T(group, k)``, the sum of the group's pieces at ``k``,
is what a group costs. One-conv programs cost more than the same conv inside the model
(input/output layout reorders), so the sum is scaled by ``scale``, fitted on two whole-model
measurements: unpruned and a calibration plan (every group at about half width):
``latency = fixed + scale * sum(...)``, ``fixed = full_ms - scale * sum of base``. A plan
that changes one group is predicted exactly from its measured points
(``full_ms + scale * (T(g, k) - T(g, size))``); counts between measured ones are
interpolated linearly per conv, below the smallest measured count extrapolated. Not
modelled: cache effects between layers and the layers' own overheads in a bigger program;
bench/bench_latency.py measures how far the model goes.

The table is a JSON file beside the model, keyed by device, threads, input size and the
config's structure (a digest of the groups and conv shapes); one from another key is
refused with one line. Building is resumable: each entry is written as it is measured,
under the lock the sensitivities file uses, atomically (temp + fsync + rename).
"""
import hashlib
import json
import os
import platform
import tempfile
import time

import numpy as np
import paddle

from ppdet.core.errors import UserError
from ppdet.utils.atomic import atomic_write_bytes

__all__ = ["LatencyTable", "build_table", "table_path", "target_key", "device_name",
           "structure_digest", "time_program", "counts_for", "LatencyTableError",
           "load_latency_table", "predicted_latency"]

FORMAT = "ppdet-latency/1"


class LatencyTableError(UserError):
    """A table that does not fit this config, target or size; one line."""


# --- keys ------------------------------------------------------------------------------

def device_name(use_mkldnn=True):
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"cpu{'-onednn' if use_mkldnn else ''}: {cpu}"


def structure_digest(graph):
    """The model's structure as the table sees it: groups (key, size) and conv shapes."""
    h = hashlib.sha1()
    for g in graph.prunable:
        h.update(f"{g.key}:{g.size};".encode())
    for path in graph.conv_paths:
        h.update(f"{path}{list(graph.layers[path].weight.shape)};".encode())
    return h.hexdigest()[:16]


def target_key(graph, image_size, threads=1, use_mkldnn=True, config=""):
    return {"config": os.path.basename(str(config)), "structure": structure_digest(graph),
            "device": device_name(use_mkldnn), "threads": int(threads),
            "input_size": [int(image_size[0]), int(image_size[1])]}


def table_path(weights, image_size, threads=1, use_mkldnn=True):
    """``<weights folder>/latency_<cpu|cpu-onednn>_t<N>_<H>x<W>.json``."""
    folder = os.path.dirname(os.path.abspath(str(weights))) if weights else "output"
    dev = "cpu-onednn" if use_mkldnn else "cpu"
    return os.path.join(folder, f"latency_{dev}_t{threads}_{image_size[0]}x{image_size[1]}"
                                f".json")


# --- the sub-networks ----------------------------------------------------------------------

def _unit_of(graph, conv_path):
    """The deployed unit of a conv: its ConvBN parent (conv + BN + act), or the conv."""
    parent = conv_path.rpartition(".")[0]
    holder = graph.layers.get(parent)
    if holder is not None and getattr(holder, "conv", None) is graph.layers[conv_path]:
        return parent, holder
    return conv_path, graph.layers[conv_path]


def _input_shapes(graph, image_size):
    """``{conv path: [C, H, W] of its input}`` at the deploy size (one forward)."""
    shapes, hooks = {}, []
    for path in graph.conv_paths:
        def hook(layer, inputs, _path=path):
            shapes[_path] = [int(s) for s in inputs[0].shape[1:]]
        hooks.append(graph.layers[path].register_forward_pre_hook(hook))
    model = graph.model
    was_training = model.training
    model.eval()
    try:
        with paddle.no_grad():
            model.head_outputs(paddle.zeros([1, 3, int(image_size[0]), int(image_size[1])]))
    finally:
        for h in hooks:
            h.remove()
        if was_training:
            model.train()
    return shapes


def _conv_spec(graph, conv_path, in_ch, out_ch, hw):
    conv = graph.layers[conv_path]
    _, unit = _unit_of(graph, conv_path)
    dw = conv._groups > 1
    return {"in": int(in_ch), "out": int(out_ch), "k": list(conv._kernel_size),
            "stride": list(conv._stride), "padding": conv._padding,
            "dilation": list(conv._dilation), "groups": int(out_ch) if dw else 1,
            "bias": conv.bias is not None, "bn": unit is not conv,
            "act": getattr(unit, "act", None) if unit is not conv else None, "hw": list(hw)}


def group_specs(graph, group, kept, shapes):
    """``{conv path: spec}``: the layers whose shapes depend on ``group`` keeping ``kept``
    channels, everything else at full width."""
    specs = {}
    for p in group.producers:
        c, h, w = shapes[p]
        if p in group.depthwise:
            specs[p] = _conv_spec(graph, p, kept, kept, (h, w))
        else:
            specs[p] = _conv_spec(graph, p, c, kept, (h, w))
    for p in group.consumers:
        if p in group.producers:
            continue
        c, h, w = shapes[p]
        member = next(m for m in group.members if m.layer == p and m.axis == 1
                      and m.attr == "weight")
        per = np.bincount(member.channels[member.channels >= 0]).max() \
            if (member.channels >= 0).any() else 0
        in_ch = c - (group.size - kept) * int(per)
        specs[p] = _conv_spec(graph, p, in_ch, graph.layers[p]._out_channels, (h, w))
    return specs


class _Pieces(paddle.nn.Layer):
    """Independent conv(+BN+act) pieces, one input each: what one table entry times."""

    def __init__(self, specs):
        super().__init__()
        self.specs = specs
        self.convs = paddle.nn.LayerList()
        self.bns = paddle.nn.LayerList()
        for s in specs:
            self.convs.append(paddle.nn.Conv2D(
                s["in"], s["out"], s["k"], stride=s["stride"], padding=s["padding"],
                dilation=s["dilation"], groups=s["groups"],
                bias_attr=None if s["bias"] else False))
            self.bns.append(paddle.nn.BatchNorm(s["out"]) if s["bn"] else paddle.nn.Identity())

    def forward(self, x0, x1=None, x2=None, x3=None, x4=None, x5=None, x6=None, x7=None):
        # explicit arguments: to_static cannot take *args
        xs = [x0, x1, x2, x3, x4, x5, x6, x7]
        outs = []
        for s, conv, bn, x in zip(self.specs, self.convs, self.bns, xs):
            y = bn(conv(x))
            if s["act"] == "relu":
                y = paddle.nn.functional.relu(y)
            elif s["act"] == "relu6":
                y = paddle.nn.functional.relu6(y)
            elif s["act"] == "leaky":
                y = paddle.nn.functional.leaky_relu(y, 0.1)
            outs.append(y)
        return outs


STAT = "p0"    # the minimum: other processes on a shared machine only ever add time


def time_program(model_file, params_file, inputs, threads=1, use_mkldnn=True, warmup=5,
                 repeats=30):
    """ms (:data:`STAT` of ``repeats``) of a saved legacy program under Paddle Inference
    with numpy ``inputs``."""
    from paddle import inference

    from ppdet.engine.latency import summarise
    config = inference.Config(model_file, params_file)
    config.disable_gpu()
    config.set_cpu_math_library_num_threads(int(threads))
    if use_mkldnn:
        config.enable_mkldnn()
    else:
        config.disable_mkldnn()
    config.disable_glog_info()
    predictor = inference.create_predictor(config)
    for name, value in zip(predictor.get_input_names(), inputs):
        predictor.get_input_handle(name).copy_from_cpu(np.ascontiguousarray(value))
    for _ in range(warmup):
        predictor.run()
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        predictor.run()
        times.append((time.perf_counter() - tic) * 1000)
    return summarise(times, STAT)


_MAX_PIECES = 8


def time_specs(specs, threads=1, use_mkldnn=True, warmup=5, repeats=30):
    """Export the pieces once (legacy program, as deployed, at most 8 a program) and time
    them."""
    if len(specs) > _MAX_PIECES:
        return sum(time_specs(specs[i:i + _MAX_PIECES], threads, use_mkldnn, warmup, repeats)
                   for i in range(0, len(specs), _MAX_PIECES))
    paddle.seed(0)
    net = _Pieces(specs)
    net.eval()
    spec_in = [paddle.static.InputSpec([1, s["in"], *s["hw"]], "float32", f"x{i}")
               for i, s in enumerate(specs)]
    rng = np.random.RandomState(0)
    inputs = [rng.randn(1, s["in"], *s["hw"]).astype("float32") for s in specs]
    with tempfile.TemporaryDirectory(prefix="latency_") as tmp:
        with paddle.pir_utils.DygraphOldIrGuard():
            static = paddle.jit.to_static(net, input_spec=spec_in, full_graph=True)
            paddle.jit.save(static, os.path.join(tmp, "m"))
        return time_program(os.path.join(tmp, "m.pdmodel"), os.path.join(tmp, "m.pdiparams"),
                            inputs, threads, use_mkldnn, warmup, repeats)


_OVERHEAD = {}


def run_overhead(threads=1, use_mkldnn=True, repeats=30):
    """ms of running a program that does (almost) nothing: a 1x1 conv on one pixel. Every
    one-conv timing carries it once; the whole model carries it once too (in ``fixed``)."""
    key = (int(threads), bool(use_mkldnn))
    if key not in _OVERHEAD:
        spec = {"in": 1, "out": 1, "k": [1, 1], "stride": [1, 1], "padding": 0,
                "dilation": [1, 1], "groups": 1, "bias": False, "bn": False, "act": None,
                "hw": [1, 1]}
        _OVERHEAD[key] = min(time_specs([spec], threads, use_mkldnn, repeats=repeats)
                             for _ in range(3))
    return _OVERHEAD[key]


def counts_for(size, step=8, extra=(), max_counts=None):
    """Channel counts a group of ``size`` is measured at: multiples of ``step``, ``size``,
    and ``extra``; ``max_counts`` keeps that many multiples, evenly spread."""
    mult = list(range(step, size, step)) or [max(1, size // 2)]
    if max_counts and len(mult) > max_counts - 1:
        idx = np.unique(np.linspace(0, len(mult) - 1, max(max_counts - 1, 1)).round()
                        .astype(int))
        mult = [mult[i] for i in idx]
    return sorted({*mult, size, *[int(c) for c in extra if 0 < int(c) <= size]})


# --- the table -----------------------------------------------------------------------------

class LatencyTable:
    """``base``: ``{conv path: ms}`` of every conv a group touches, at full width;
    ``entries``: ``{group key: {kept: {conv path: ms}}}`` for counts under the group's
    size (at its size every piece is its ``base``); ``full_ms``: the whole model."""

    def __init__(self, key, entries=None, full_ms=None, sizes=None, path=None, base=None,
                 calib=None):
        self.key = key
        self.calib = calib                    # {"plan": {group: kept}, "ms": whole model}
        self.entries = {g: {int(k): {u: float(v) for u, v in p.items()} for k, p in e.items()}
                        for g, e in (entries or {}).items()}
        self.base = {u: float(v) for u, v in (base or {}).items()}
        self.full_ms = full_ms
        self.sizes = {g: int(s) for g, s in (sizes or {}).items()}
        self.path = path
        self.members = {}                     # group key -> conv paths, from its entries
        self._touch = None

    # persistence
    def to_json(self):
        return {"format": FORMAT, "key": self.key, "full_ms": self.full_ms,
                "sizes": self.sizes, "base": self.base, "calib": self.calib,
                "entries": {g: {str(k): p for k, p in sorted(e.items())}
                            for g, e in self.entries.items()}}

    @classmethod
    def load(cls, path, key=None):
        """Read ``path``; with ``key``, refuse (one line) a table of another target."""
        try:
            with open(path) as f:
                data = json.load(f)
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as e:
            raise LatencyTableError(f"{path} is not a latency table ({type(e).__name__}): "
                                    f"build it again with slim/prune/latency_table.py") from e
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise LatencyTableError(f"{path} is not a latency table ({FORMAT}): build it "
                                    f"with slim/prune/latency_table.py")
        table = cls(data["key"], data.get("entries"), data.get("full_ms"),
                    data.get("sizes"), path, data.get("base"), data.get("calib"))
        if key is not None:
            table.check(key)
        return table

    def check(self, key):
        for field in ("structure", "device", "threads", "input_size"):
            if self.key.get(field) != key.get(field):
                what = "config (model structure)" if field == "structure" else field
                raise LatencyTableError(
                    f"{self.path}: latency table for another {what} ({self.key.get(field)} "
                    f"here, {key.get(field)} wanted): build one for this target with "
                    f"slim/prune/latency_table.py")

    def has(self, group, kept):
        return int(kept) == self.sizes.get(group) or int(kept) in self.entries.get(group, {})

    @property
    def complete(self):
        return self.full_ms is not None and bool(self.sizes) and all(
            g in self.entries or self.sizes[g] <= 1 for g in self.sizes)

    def counts(self, group):
        """Measured counts of ``group``, its size included."""
        return sorted({*self.entries.get(group, {}), self.sizes[group]})

    def _members(self, group):
        if group not in self.members:
            e = self.entries.get(group, {})
            self.members[group] = sorted({u for p in e.values() for u in p})
        return self.members[group]

    # prediction
    def piece_ms(self, group, conv, kept):
        """One conv's ms with ``group`` at ``kept`` (all else full): measured, linear
        between measured counts, extrapolated below the first (never under zero)."""
        kept = int(kept)
        points = {k: p[conv] for k, p in self.entries.get(group, {}).items() if conv in p}
        points[self.sizes[group]] = self.base[conv]
        if kept in points:
            return points[kept]
        ks = sorted(points)
        if len(ks) == 1:
            return points[ks[0]] * kept / ks[0]
        if kept < ks[0]:
            k0, k1 = ks[0], ks[1]
        elif kept > ks[-1]:
            k0, k1 = ks[-2], ks[-1]
        else:
            i = int(np.searchsorted(ks, kept))
            k0, k1 = ks[i - 1], ks[i]
        return max(points[k0] + (points[k1] - points[k0]) * (kept - k0) / (k1 - k0), 0.0)

    def group_ms(self, group, kept):
        """T(group, kept): the group's convs with it at ``kept``, all else full."""
        return sum(self.piece_ms(group, u, kept) for u in self._members(group))

    def _raw(self, kept):
        """Sum over convs of base * prod of piece ratios (one-conv programs' time)."""
        factor = {u: 1.0 for u in self.base}
        for g, k in kept.items():
            if k == self.sizes[g]:
                continue
            for u in self._members(g):
                factor[u] *= self.piece_ms(g, u, k) / max(self.base[u], 1e-9)
        return sum(self.base[u] * factor[u] for u in self.base)

    @property
    def scale(self):
        """How much a conv costs inside the whole model per ms it costs alone (data layout
        reorders and the like make one-conv programs dearer): fitted on the whole model
        measured unpruned and at one calibration plan; 1 without one."""
        if not self.calib or self.full_ms is None:
            return 1.0
        s0 = sum(self.base.values())
        s1 = self._raw({g: int(k) for g, k in self.calib["plan"].items()})
        if s0 - s1 <= 1e-9:
            return 1.0
        scale = (self.full_ms - self.calib["ms"]) / (s0 - s1)
        return scale if scale > 0 else 1.0

    @property
    def fixed_ms(self):
        """Everything no group changes: decode, NMS, untouched layers."""
        return self.full_ms - self.scale * sum(self.base.values())

    def kept_counts(self, plan, graph=None):
        """``{group key: kept}`` from a ChannelPlan, ``{key: kept indices}`` or counts."""
        out = {}
        for key, v in (plan or {}).items():
            if graph is not None and key not in self.sizes:
                key = graph.group(key).key
            out[key] = int(v) if np.isscalar(v) else len(v)
        return out

    def predict(self, plan=None, graph=None):
        """Predicted ms under ``plan`` (kept counts or kept indices per group):
        ``fixed + sum over convs of base * prod over its groups of piece(k) / base``."""
        kept = self.kept_counts(plan, graph)
        unknown = [k for k in kept if k not in self.sizes]
        if unknown:
            raise LatencyTableError(f"the latency table has no entries for {unknown[0]}: "
                                    f"build it again with slim/prune/latency_table.py")
        return self.fixed_ms + self.scale * self._raw(kept)

    def save(self):
        atomic_write_bytes(self.path, json.dumps(self.to_json(), indent=1).encode())


def _locked_update(path, key, fn):
    """Under the lock: re-read the table on disk (checking its key), apply ``fn``, write."""
    from ppdet.slim.sensitivity_store import file_lock
    with file_lock(path):
        if os.path.isfile(path):
            table = LatencyTable.load(path, key)
        else:
            table = LatencyTable(key, path=path)
        fn(table)
        table.save()
        return table


def measure_full(model, cfg, image_size, threads=1, use_mkldnn=True, repeats=30):
    """Whole exported model, ms (:data:`STAT`), exported as tools/export_model.py does."""
    from ppdet.engine.export import export_model
    from ppdet.engine.latency import measure_latency
    with tempfile.TemporaryDirectory(prefix="latency_full_") as tmp:
        export_model(model, cfg, tmp, ["c"] * int(cfg.get("num_classes", 1) or 1))
        return measure_latency(tmp, image_size, use_mkldnn=use_mkldnn, warmup=5,
                               repeats=repeats, threads=threads, stat=STAT)


def work_items(graph, step=8, max_counts=None, extra_counts=None, groups=None):
    """What a complete table measures: ``[("base", conv path)]`` for every conv a group
    touches, then ``[(group key, kept)]`` for every count under each group's size."""
    chosen = [g for g in graph.prunable if groups is None or g.key in groups]
    convs = []
    for g in chosen:
        for p in [*g.producers, *g.consumers]:
            if p not in convs:
                convs.append(p)
    items = [("base", p) for p in convs]
    for g in chosen:
        for k in counts_for(g.size, step, (extra_counts or {}).get(g.key, ()), max_counts):
            if k < g.size:
                items.append((g.key, k))
    return chosen, items


def build_table(graph, cfg, path, image_size, threads=1, use_mkldnn=True, step=8,
                max_counts=None, extra_counts=None, groups=None, repeats=30, progress=True,
                on_entry=None, log=print):
    """Measure what ``path`` lacks and return the table. Resumable: entries already in the
    file are kept (a file for another target is refused before anything is measured).
    Each conv is timed on its own (a one-conv program); ``extra_counts``:
    ``{group key: [counts]}`` measured too; ``groups``: only these keys (tests);
    ``on_entry(n)`` is called after each new entry."""
    key = target_key(graph, image_size, threads, use_mkldnn, cfg.get("filename", ""))
    have = LatencyTable.load(path, key) if os.path.isfile(path) else LatencyTable(key)
    chosen, items = work_items(graph, step, max_counts, extra_counts, groups)
    todo = [(a, b) for a, b in items
            if not (b in have.base if a == "base" else have.has(a, b))]
    sizes = {g.key: g.size for g in chosen}
    table = _locked_update(path, key, lambda t: t.sizes.update(sizes))
    need_full = table.full_ms is None
    if todo or need_full:
        log(f"latency table {path}: {len(todo)} entries to measure "
            f"({len(items) - len(todo)} already there)")
    shapes = _input_shapes(graph, image_size) if todo else {}
    bar = None
    if progress and todo:
        from tqdm import tqdm
        bar = tqdm(total=len(todo), desc="latency table", unit="entry")

    overhead = run_overhead(threads, use_mkldnn) if todo else 0.0

    def one(spec):                       # the conv's own time, without the run overhead
        return max(time_specs([spec], threads, use_mkldnn, repeats=repeats) - overhead, 0.0)
    try:
        for n, (a, b) in enumerate(todo, 1):
            if a == "base":
                g = next(g for g in chosen if b in g.producers or b in g.consumers)
                ms = one(group_specs(graph, g, g.size, shapes)[b])
                table = _locked_update(path, key, lambda t, b=b, ms=ms:
                                       t.base.setdefault(b, ms))
            else:
                g = graph.group(a)
                pieces = {u: one(spec) for u, spec in
                          group_specs(graph, g, b, shapes).items()}
                table = _locked_update(path, key, lambda t, a=a, b=b, p=pieces:
                                       t.entries.setdefault(a, {}).setdefault(b, p))
            if bar is not None:
                bar.update(1)
            if on_entry is not None:
                on_entry(n)
    finally:
        if bar is not None:
            bar.close()
    if need_full:
        full = measure_full(graph.model, cfg, image_size, threads, use_mkldnn,
                            repeats=max(3 * repeats, 60))
        table = _locked_update(path, key, lambda t: setattr(t, "full_ms", full))
    if table.calib is None:
        from ppdet.slim.plan import ChannelPlan, apply_plan
        plan = {g: min(table.counts(g), key=lambda k, g=g: abs(k - table.sizes[g] / 2))
                for g in table.sizes}
        applied = apply_plan(graph, ChannelPlan({g: np.arange(k) for g, k in plan.items()}))
        try:
            ms = measure_full(graph.model, cfg, image_size, threads, use_mkldnn,
                              repeats=max(3 * repeats, 60))
        finally:
            applied.restore()
        table = _locked_update(path, key, lambda t: setattr(t, "calib",
                                                            {"plan": plan, "ms": ms}))
    return table


# --- the config's table, for the tools (prune, report, analyze) ---------------------------

def load_latency_table(cfg, graph, path=None, threads=1, required=False):
    """The latency table of this config (default: beside its weights, for its test size and
    ``threads``), checked against the model and target; None when absent and not
    ``required`` (then a one-line error says how to build it)."""
    from ppdet.engine.builder import image_size_for
    size = image_size_for(cfg, "test")
    path = path or table_path(cfg.get("weights"), size, threads)
    if not os.path.isfile(path):
        if required:
            raise UserError(f"no latency table at {path}: build it with python "
                            f"slim/prune/latency_table.py -c CONFIG"
                            f" -o weights={cfg.get('weights')} --threads {threads}")
        return None
    try:
        table = LatencyTable.load(path, target_key(graph, size, threads))
    except UserError:
        if required:
            raise
        return None                      # a stale table only matters when it is asked for
    if not table.complete:
        if required:
            raise UserError(f"latency table {path} is incomplete: run "
                            f"slim/prune/latency_table.py again to finish it")
        return None
    return table


def predicted_latency(cfg, model, threads=1):
    """``(predicted ms, table)`` of ``model`` (pruned or not) from the config's latency
    table, or ``(None, None)`` without one: kept counts are read off the model's master
    convs, on the graph of the unpruned model."""
    from ppdet.engine.builder import build_model
    from ppdet.slim.graph import PruneGraph
    graph = PruneGraph.of(build_model(cfg))
    table = load_latency_table(cfg, graph, threads=threads)
    if table is None:
        return None, None
    layers = dict(model.named_sublayers())
    kept = {g.key: int(layers[g.key].weight.shape[0]) for g in graph.prunable
            if g.key in layers and g.key in table.sizes}
    return table.predict(kept), table
