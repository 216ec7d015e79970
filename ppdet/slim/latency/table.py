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
(input/output layout reorders), so the sum is scaled by ``scale``, fitted on whole-model
measurements: unpruned and three uniform calibration plans (every group at about 75, 50
and 25% width; the scale is the median of their slopes, :meth:`LatencyTable.fit`):
``latency = fixed + scale * sum(...)``, ``fixed = full_ms - scale * sum of base``. A plan
that changes one group is predicted exactly from its measured points
(``full_ms + scale * (T(g, k) - T(g, size))``); counts between measured ones are
interpolated linearly per conv, below the smallest measured count extrapolated. Not
modelled: cache effects between layers and the layers' own overheads in a bigger program;
bench/bench_latency.py measures how far the model goes.

The table is a JSON file beside the model, keyed by device, threads, input size, precision
(``fp32``, or ``int8``: every program timed is quantized and run with the INT8 predictor
config) and the config's structure (a digest of the groups and conv shapes); one from
another key is refused with one line. The key also records the CPU's INT8 features.
Building is resumable: each entry is written as it is measured, under the lock the
sensitivities file uses, atomically (temp + fsync + rename).
"""
import hashlib
import json
import os
import platform

import numpy as np

from ppdet.core.errors import UserError
from ppdet.utils.atomic import atomic_write_bytes

__all__ = ["FORMAT", "OLD_FORMATS", "PRECISIONS", "LatencyTableError", "device_name",
           "structure_digest", "target_key", "key_precision", "table_precision", "table_path",
           "counts_for", "LatencyTable", "load_latency_table"]


FORMAT = "ppdet-latency/2"


OLD_FORMATS = ("ppdet-latency/1",)


class LatencyTableError(UserError):
    """A table that does not fit this config, target or size; one line."""


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


PRECISIONS = ("fp32", "int8")


def target_key(graph, image_size, threads=1, use_mkldnn=True, config="", precision="fp32"):
    """What a table was measured for; ``cpu_features`` (the INT8-relevant flags) is
    recorded, not checked (``device`` names the CPU already)."""
    from ppdet.engine.cpu_features import cpu_features
    return {"config": os.path.basename(str(config)), "structure": structure_digest(graph),
            "device": device_name(use_mkldnn), "threads": int(threads),
            "input_size": [int(image_size[0]), int(image_size[1])],
            "precision": str(precision), "cpu_features": cpu_features()}


def key_precision(key):
    """A key's precision; tables from before precisions were recorded are FP32."""
    return (key or {}).get("precision", "fp32")


def table_precision(path):
    """The precision a table file records (fp32 for one that records none, or that cannot
    be read: loading it says what is wrong)."""
    try:
        with open(path) as f:
            return key_precision(json.load(f).get("key"))
    except (OSError, ValueError, AttributeError):
        return "fp32"


def table_path(weights, image_size, threads=1, use_mkldnn=True, precision="fp32"):
    """``<weights folder>/latency_<cpu|cpu-onednn>[-int8]_t<N>_<H>x<W>.json``."""
    folder = os.path.dirname(os.path.abspath(str(weights))) if weights else "output"
    dev = ("cpu-onednn" if use_mkldnn else "cpu") + ("-int8" if precision == "int8" else "")
    return os.path.join(folder, f"latency_{dev}_t{threads}_{image_size[0]}x{image_size[1]}"
                                f".json")


def counts_for(size, step=8, extra=(), max_counts=None):
    """Channel counts a group of ``size`` is measured at: multiples of ``step``, ``size``,
    and ``extra``; ``max_counts`` keeps that many multiples, evenly spread."""
    mult = list(range(step, size, step)) or [max(1, size // 2)]
    if max_counts and len(mult) > max_counts - 1:
        idx = np.unique(np.linspace(0, len(mult) - 1, max(max_counts - 1, 1)).round()
                        .astype(int))
        mult = [mult[i] for i in idx]
    return sorted({*mult, size, *[int(c) for c in extra if 0 < int(c) <= size]})


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

    @property
    def precision(self):
        return key_precision(self.key)

    def check(self, key):
        have, want = self.precision, key_precision(key)
        if have != want:
            raise LatencyTableError(
                f"{self.path}: latency table measured in {have.upper()}, {want.upper()} "
                f"asked: pass --precision {have} to use it, or build a {want} table with "
                f"slim/prune/latency_table.py --precision {want}")
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
        squares let that one point halve the scale (bench/HISTORY.md, "Session 6: table
        v2")."""
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


def load_latency_table(cfg, graph, path=None, threads=1, required=False, precision="fp32"):
    """The latency table of this config (default: beside its weights, for its test size,
    ``threads`` and ``precision``), checked against the model and target; None when absent
    and not ``required`` (then a one-line error says how to build it)."""
    from ppdet.engine.builder import image_size_for
    size = image_size_for(cfg, "test")
    path = path or table_path(cfg.get("weights"), size, threads, precision=precision)
    if not os.path.isfile(path):
        if required:
            raise UserError(f"no latency table at {path}: build it with python "
                            f"slim/prune/latency_table.py -c CONFIG"
                            f" -o weights={cfg.get('weights')} --threads {threads}"
                            + (f" --precision {precision}" if precision != "fp32" else ""))
        return None
    try:
        table = LatencyTable.load(path, target_key(graph, size, threads,
                                                   precision=precision))
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
