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
import contextlib
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

FORMAT = "ppdet-latency/2"
OLD_FORMATS = ("ppdet-latency/1",)


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
INSTANCES = 2  # predictors per timing, the fastest kept (see time_program)
PASSES = 2     # timings of each table entry, in separate passes over the table
CALIB_ROUNDS = 3
CALIB_FRACTIONS = (0.75, 0.5, 0.25)


def _predictor(model_file, params_file, inputs, threads=1, use_mkldnn=True):
    from paddle import inference
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
    return predictor


def _run_times(predictor, warmup, repeats):
    for _ in range(warmup):
        predictor.run()
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        predictor.run()
        times.append((time.perf_counter() - tic) * 1000)
    return times


def time_program(model_file, params_file, inputs, threads=1, use_mkldnn=True, warmup=5,
                 repeats=30, instances=INSTANCES):
    """ms (:data:`STAT` of ``repeats``) of a saved legacy program under Paddle Inference
    with numpy ``inputs``, the fastest of ``instances`` predictors (one now and then runs
    1.5-2x slower for its whole life)."""
    from ppdet.engine.latency import summarise
    best, alive = float("inf"), []
    for _ in range(max(int(instances), 1)):
        predictor = _predictor(model_file, params_file, inputs, threads, use_mkldnn)
        alive.append(predictor)          # kept alive: the next one gets other buffers
        best = min(best, summarise(_run_times(predictor, warmup, repeats), STAT))
    return best


class QuietGate:
    """Waits, before a timing, until the machine runs a small reference program (a 1x1
    conv, 64 channels, 40x40: about 0.2 ms) within ``tol`` of the fastest it has run it.
    Why: on a shared host the same program runs 1.3-2x slower for seconds at a time (other
    tenants; measured with nothing else running in this machine), and the minimum of a few
    ms of runs does not get past such a stretch; a timing taken in one then counts as the
    conv's cost. After ``max_wait_s`` it lets the timing go (counted in ``gave_up``).

    When it gives up on most recent checks (``rebase_after`` of the last ``window``), the
    fastest is no longer within reach (the host got slower for minutes): it takes the
    fastest of that last wait as the new reference (counted in ``rebased``), instead of
    waiting ``max_wait_s`` before every timing for the rest of the build (on one noisy
    host the tiny model's table was on course for about 40 minutes, against 2-3 without
    the gate; bench/HISTORY.md, "Session 7: how far two builds of the tiny table agree").
    A faster run later lowers it again.
    ``sampler``: the reference timing (tests); by default the 1x1 conv above."""

    def __init__(self, threads=1, use_mkldnn=True, tol=1.15, max_wait_s=3.0, sampler=None,
                 window=5, rebase_after=3):
        self.tol, self.max_wait_s = tol, max_wait_s
        self.window, self.rebase_after = window, rebase_after
        self.best, self.checks, self.waited_s, self.gave_up = float("inf"), 0, 0.0, 0
        self.rebased, self._recent = 0, []
        self._sampler = sampler
        if sampler is None:
            spec = {"in": 64, "out": 64, "k": [1, 1], "stride": [1, 1], "padding": 0,
                    "dilation": [1, 1], "groups": 1, "bias": False, "bn": True,
                    "act": "relu", "hw": [40, 40]}
            with _exported([spec]) as (model_file, params_file, inputs):
                self.predictor = _predictor(model_file, params_file, inputs, threads,
                                            use_mkldnn)
        for _ in range(10):                  # a first idea of the fastest, over ~1 s
            self.best = min(self.best, self.sample())
            time.sleep(0.1 if sampler is None else 0)

    def sample(self):
        if self._sampler is not None:
            return self._sampler()
        return min(_run_times(self.predictor, 1, 5))

    def wait(self):
        self.checks += 1
        start = time.perf_counter()
        seen = float("inf")
        while True:
            t = self.sample()
            seen = min(seen, t)
            self.best = min(self.best, t)
            if t <= self.best * self.tol:
                gave_up = False
                break
            if time.perf_counter() - start > self.max_wait_s:
                self.gave_up += 1
                gave_up = True
                break
            time.sleep(0.2)
        self.waited_s += time.perf_counter() - start
        self._recent = (self._recent + [gave_up])[-self.window:]
        if sum(self._recent) >= self.rebase_after:
            self.best, self._recent = seen, []
            self.rebased += 1

    def summary(self):
        return (f"quiet gate: {self.checks} checks, {self.waited_s:.0f} s waited, "
                f"{self.gave_up} timings taken on a busy machine, reference reset "
                f"{self.rebased} times")


_GATES = {}


def quiet_gate(threads=1, use_mkldnn=True):
    """The process's :class:`QuietGate` for this target (one reference predictor)."""
    key = (int(threads), bool(use_mkldnn))
    if key not in _GATES:
        _GATES[key] = QuietGate(threads, use_mkldnn)
    return _GATES[key]


_MAX_PIECES = 8


def _forget_stale_traces():
    """Drop paddle's record of parameters seen by programs traced outside ``to_static``
    (paddleslim's tracer in PruneGraph, FLOPs counts): it is keyed by ``id(program)``, so
    once such a program is freed a new one can reuse its id and ``jit.save`` then looks for
    the old model's parameters (``KeyError: 'conv1_bn_mean'`` after ~150 table entries).
    Nothing is being traced while this runs (one thread), so no live entry is lost."""
    from paddle.jit.dy2static.program_translator import ProgramTranslator
    recorder = getattr(ProgramTranslator.get_instance(), "_params_recorder", None)
    if recorder is not None and isinstance(getattr(recorder, "params_dict", None), dict):
        recorder.params_dict.clear()


@contextlib.contextmanager
def _exported(specs):
    """``(model file, params file, inputs)`` of the pieces saved as a legacy program (as
    deployed), in a temporary folder that lives as long as the context."""
    paddle.seed(0)
    net = _Pieces(specs)
    net.eval()
    spec_in = [paddle.static.InputSpec([1, s["in"], *s["hw"]], "float32", f"x{i}")
               for i, s in enumerate(specs)]
    rng = np.random.RandomState(0)
    inputs = [rng.randn(1, s["in"], *s["hw"]).astype("float32") for s in specs]
    _forget_stale_traces()
    with tempfile.TemporaryDirectory(prefix="latency_") as tmp:
        with paddle.pir_utils.DygraphOldIrGuard():
            static = paddle.jit.to_static(net, input_spec=spec_in, full_graph=True)
            paddle.jit.save(static, os.path.join(tmp, "m"))
        yield os.path.join(tmp, "m.pdmodel"), os.path.join(tmp, "m.pdiparams"), inputs


def time_specs(specs, threads=1, use_mkldnn=True, warmup=5, repeats=30, gate=None):
    """Export the pieces once (legacy program, as deployed, at most 8 a program) and time
    them (after ``gate.wait()`` when a :class:`QuietGate` is given)."""
    if len(specs) > _MAX_PIECES:
        return sum(time_specs(specs[i:i + _MAX_PIECES], threads, use_mkldnn, warmup, repeats,
                              gate)
                   for i in range(0, len(specs), _MAX_PIECES))
    with _exported(specs) as (model_file, params_file, inputs):
        if gate is not None:
            gate.wait()
        return time_program(model_file, params_file, inputs, threads, use_mkldnn, warmup,
                            repeats)


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
    size (at its size every piece is its ``base``); ``calib``: whole-model measurements
    ``[{"plan": {group: kept}, "ms": ms}]``, the unpruned model (``plan {}``) first;
    ``passes``: ``{item id: timings kept}`` (:func:`item_id`), each value the fastest."""

    def __init__(self, key, entries=None, full_ms=None, sizes=None, path=None, base=None,
                 calib=None, passes=None):
        self.key = key
        self.calib = calib or None
        self.entries = {g: {int(k): {u: float(v) for u, v in p.items()} for k, p in e.items()}
                        for g, e in (entries or {}).items()}
        self.base = {u: float(v) for u, v in (base or {}).items()}
        self.full_ms = full_ms
        self.sizes = {g: int(s) for g, s in (sizes or {}).items()}
        self.path = path
        self.passes = {str(i): int(n) for i, n in (passes or {}).items()}
        self.members = {}                     # group key -> conv paths, from its entries
        self._fit = None

    # persistence
    def to_json(self):
        return {"format": FORMAT, "key": self.key, "full_ms": self.full_ms,
                "sizes": self.sizes, "base": self.base, "calib": self.calib,
                "passes": self.passes,
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
        fmt = data.get("format") if isinstance(data, dict) else None
        if fmt in OLD_FORMATS:
            raise LatencyTableError(f"{path} is a latency table of an older format ({fmt}, "
                                    f"single timings, one calibration plan): delete it and "
                                    f"build it again with slim/prune/latency_table.py")
        if fmt != FORMAT:
            raise LatencyTableError(f"{path} is not a latency table ({FORMAT}): build it "
                                    f"with slim/prune/latency_table.py")
        table = cls(data["key"], data.get("entries"), data.get("full_ms"),
                    data.get("sizes"), path, data.get("base"), data.get("calib"),
                    data.get("passes"))
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

    def fit(self):
        """``(fixed, scale)``: ``latency = fixed + scale * raw(plan)``, through the unpruned
        measurement (so the table's own points stay exact), the scale the median of the
        other whole-model measurements' slopes; ``(full_ms - raw({}), 1)`` without them.
        The median, not least squares: one calibration plan can sit off the line (on the
        tiny model, every group at 20% measured slower than every group at 50%), and least
        squares let that one point halve the scale (bench/HISTORY.md, "Session 6: table v2")."""
        if self._fit is None:
            s0 = self._raw({})
            scale = 1.0
            if self.calib and self.full_ms is not None:
                slopes = []
                for c in self.calib:
                    if c["plan"]:
                        ds = self._raw({g: int(k) for g, k in c["plan"].items()}) - s0
                        if abs(ds) > 1e-9:
                            slopes.append((c["ms"] - self.full_ms) / ds)
                if slopes and float(np.median(slopes)) > 0:
                    scale = float(np.median(slopes))
            full = self.full_ms if self.full_ms is not None else s0
            self._fit = (full - scale * s0, scale)
        return self._fit

    @property
    def scale(self):
        """How much a conv costs inside the whole model per ms it costs alone (data layout
        reorders and the like make one-conv programs dearer): fitted on whole-model
        measurements (:meth:`fit`); 1 without them."""
        return self.fit()[1]

    @property
    def fixed_ms(self):
        """Everything no group changes: decode, NMS, untouched layers."""
        return self.fit()[0]

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
        fixed, scale = self.fit()
        return fixed + scale * self._raw(kept)

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


def item_id(a, b):
    """The id of a work item in ``passes``: ``base@<conv>`` or ``<group>@<kept>``."""
    return f"{a}@{b}"


def calibration_plans(table, fractions=CALIB_FRACTIONS):
    """Whole-model plans the scale is fitted on: every group at the measured count nearest
    each fraction of its size (uniform pruning at three depths)."""
    return [{g: min(table.counts(g), key=lambda k, g=g: (abs(k - table.sizes[g] * f), -k))
             for g in table.sizes} for f in fractions]


def measure_plans(graph, cfg, plans, image_size, threads=1, use_mkldnn=True, repeats=30,
                  rounds=CALIB_ROUNDS, gate=None):
    """ms of the whole exported model under each plan (``{group: kept}``): exported once
    each, then measured in turn for ``rounds`` rounds (a new predictor each time, after
    ``gate.wait()`` when a :class:`QuietGate` is given), the fastest per plan, so a slow
    minute or a slow predictor weighs on no plan alone."""
    from ppdet.engine.export import export_model
    from ppdet.engine.latency import measure_latency
    from ppdet.slim.plan import ChannelPlan, apply_plan
    best = [float("inf")] * len(plans)
    with tempfile.TemporaryDirectory(prefix="latency_whole_") as tmp:
        dirs = []
        for i, plan in enumerate(plans):
            applied = apply_plan(graph, ChannelPlan({g: np.arange(int(k))
                                                     for g, k in plan.items()}))
            try:
                _forget_stale_traces()
                d = os.path.join(tmp, str(i))
                export_model(graph.model, cfg, d,
                             ["c"] * int(cfg.get("num_classes", 1) or 1))
            finally:
                applied.restore()
            dirs.append(d)
        for _ in range(max(int(rounds), 1)):
            for i, d in enumerate(dirs):
                if gate is not None:
                    gate.wait()
                best[i] = min(best[i], measure_latency(
                    d, image_size, use_mkldnn=use_mkldnn, warmup=5, repeats=repeats,
                    threads=threads, stat=STAT))
    return best


def build_table(graph, cfg, path, image_size, threads=1, use_mkldnn=True, step=8,
                max_counts=None, extra_counts=None, groups=None, repeats=30, progress=True,
                on_entry=None, log=print, passes=None, rounds=CALIB_ROUNDS, quiet=True):
    """Measure what ``path`` lacks and return the table. Resumable: entries already in the
    file are kept (a file for another target is refused before anything is measured).
    Each conv is timed on its own (a one-conv program), every entry ``passes`` times
    (default :data:`PASSES`), one pass over the whole table after another, the fastest
    kept: a burst of load on the machine then spoils one pass of an entry, not the entry.
    Then the whole model, unpruned and at :func:`calibration_plans`, in ``rounds`` rounds.
    ``extra_counts``: ``{group key: [counts]}`` measured too; ``groups``: only these keys (tests);
    ``on_entry(n)`` is called after each timing of an entry; ``quiet``: every timing waits
    for a quiet machine first (:class:`QuietGate`)."""
    key = target_key(graph, image_size, threads, use_mkldnn, cfg.get("filename", ""))
    have = LatencyTable.load(path, key) if os.path.isfile(path) else LatencyTable(key)
    chosen, items = work_items(graph, step, max_counts, extra_counts, groups)
    passes = PASSES if passes is None else max(int(passes), 1)
    todo = [(p, a, b) for p in range(1, passes + 1) for a, b in items
            if have.passes.get(item_id(a, b), 0) < p]
    sizes = {g.key: g.size for g in chosen}
    table = _locked_update(path, key, lambda t: t.sizes.update(sizes))
    need_whole = table.calib is None
    if todo or need_whole:
        log(f"latency table {path}: {len(todo)} timings to take ({passes} per entry, "
            f"{len(items) * passes - len(todo)} already there)")
    shapes = _input_shapes(graph, image_size) if todo else {}
    bar = None
    if progress and todo:
        from tqdm import tqdm
        bar = tqdm(total=len(todo), desc="latency table", unit="entry")

    gate = quiet_gate(threads, use_mkldnn) if quiet and (todo or need_whole) else None
    overhead = run_overhead(threads, use_mkldnn) if todo else 0.0

    def one(spec):                       # the conv's own time, without the run overhead
        return max(time_specs([spec], threads, use_mkldnn, repeats=repeats, gate=gate)
                   - overhead, 0.0)

    def keep_base(t, conv, ms, n):
        t.base[conv] = min(t.base.get(conv, ms), ms)
        t.passes[item_id("base", conv)] = max(t.passes.get(item_id("base", conv), 0), n)

    def keep_entry(t, group, kept, pieces, n):
        have = t.entries.setdefault(group, {}).setdefault(kept, {})
        for u, ms in pieces.items():
            have[u] = min(have.get(u, ms), ms)
        t.passes[item_id(group, kept)] = max(t.passes.get(item_id(group, kept), 0), n)
    try:
        for n, (p, a, b) in enumerate(todo, 1):
            if a == "base":
                g = next(g for g in chosen if b in g.producers or b in g.consumers)
                ms = one(group_specs(graph, g, g.size, shapes)[b])
                table = _locked_update(path, key, lambda t, b=b, ms=ms, p=p:
                                       keep_base(t, b, ms, p))
            else:
                g = graph.group(a)
                pieces = {u: one(spec) for u, spec in
                          group_specs(graph, g, b, shapes).items()}
                table = _locked_update(path, key, lambda t, a=a, b=b, pc=pieces, p=p:
                                       keep_entry(t, a, b, pc, p))
            if bar is not None:
                bar.update(1)
            if on_entry is not None:
                on_entry(n)
    finally:
        if bar is not None:
            bar.close()
    if need_whole:
        plans = [{}, *calibration_plans(table)]
        ms = measure_plans(graph, cfg, plans, image_size, threads, use_mkldnn, repeats,
                           rounds, gate)

        def keep_whole(t):
            t.full_ms = ms[0]
            t.calib = [{"plan": pl, "ms": m} for pl, m in zip(plans, ms)]
        table = _locked_update(path, key, keep_whole)
    if gate is not None:
        log(gate.summary())
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
