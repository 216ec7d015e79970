"""The error a predicted latency can carry, and a table too coarse for its target.

A prediction is printed as ``ms ± err``, ``err = fit + interpolation + noise`` (each in ms,
added: a bound, not a standard deviation):

- ``fit``: how far the predictor misses the table's own whole-model measurements (its
  calibration plans, every group at about 75, 50 and 25% width): the largest relative
  miss, times the prediction. The fit goes through the unpruned point and the median slope,
  so it misses the other calibration plans by what the one-line model cannot explain.
  Zero for the unpruned model (measured, and the fit goes through it).
- ``interpolation``: for every group whose count lies between two measured counts, how far
  the whole model could be from the line between them if its time only grows with the
  count: the larger of the two distances from the prediction to the neighbours'
  predictions (below the smallest count: the distance to it). Zero on measured counts.
- ``noise``: the whole-model timings' spread: per calibration plan, the second fastest of
  its rounds against the fastest, the median of that over the plans, times the prediction.

A table is too coarse for a target (:func:`coarse_warning`) when the plan the search found
is faster than the target by more than :data:`COARSE_TOL` (the counts between that plan and
the next slower one were never measured, so nothing nearer could be priced), or when its
interpolation error alone is more than :data:`COARSE_TOL` of the prediction.
"""
from dataclasses import dataclass

import numpy as np

__all__ = ["COARSE_TOL", "Predicted", "fit_residual", "timing_noise", "interpolation_error",
           "predict_with_error", "predict_plan", "predicted_latency", "coarse_warning",
           "measured_line", "INT8_ALIGN", "int8_alignment_warning"]

COARSE_TOL = 0.05

# oneDNN's INT8 convs ran counts off multiples of 32 slowly here: full width, 320 px, every
# group at its size - 8 measured 17% SLOWER than unpruned; with every count a multiple of 32
# the latency target was met within 3% (bench/HISTORY.md, "INT8 latency target")
INT8_ALIGN = 32


@dataclass
class Predicted:
    """A predicted latency and the parts of the error it can carry (ms each)."""
    ms: float
    fit: float = 0.0
    interpolation: float = 0.0
    noise: float = 0.0

    @property
    def err(self):
        return self.fit + self.interpolation + self.noise

    def __str__(self):
        return f"{self.ms:.2f} ± {self.err:.2f} ms"

    def detail(self):
        return (f"± = fit {self.fit:.2f} + interpolation {self.interpolation:.2f} + noise "
                f"{self.noise:.2f} ms")

    def speedup(self, base):
        """``"X.XXx (lo-hi x)"`` against an unpruned :class:`Predicted`, errors at their
        worst on both sides."""
        lo = (base.ms - base.err) / (self.ms + self.err)
        hi = (base.ms + base.err) / max(self.ms - self.err, 1e-9)
        return f"{base.ms / self.ms:.2f}x ({lo:.2f}-{hi:.2f}x)"


def fit_residual(table):
    """Largest relative miss of ``table``'s predictor on its own calibration plans (0
    without any)."""
    misses = [abs(table.predict(c["plan"]) - c["ms"]) / c["ms"]
              for c in (table.calib or []) if c["plan"] and c["ms"] > 0]
    return max(misses, default=0.0)


def timing_noise(table):
    """Median over calibration plans of (second fastest round / fastest - 1); 0 when the
    table kept no rounds (tables built before they were recorded)."""
    spreads = []
    for c in table.calib or []:
        r = sorted(c.get("rounds") or [])
        if len(r) >= 2 and r[0] > 0:
            spreads.append(r[1] / r[0] - 1)
    return float(np.median(spreads)) if spreads else 0.0


def _neighbours(counts, kept):
    """The measured counts either side of ``kept`` (None where there is none), or
    ``None`` when ``kept`` is measured."""
    if kept in counts:
        return None
    below = [k for k in counts if k < kept]
    above = [k for k in counts if k > kept]
    return (max(below) if below else None), (min(above) if above else None)


def interpolation_error(table, kept):
    """ms: the sum over groups between measured counts of the farther neighbour's
    prediction distance (the rest of the plan as given)."""
    ms = table.predict(kept)
    total = 0.0
    for g, k in kept.items():
        near = _neighbours(table.counts(g), int(k))
        if near is None:
            continue
        gaps = [abs(table.predict({**kept, g: n}) - ms) for n in near if n is not None]
        total += max(gaps, default=0.0)
    return total


def predict_with_error(table, kept):
    """:class:`Predicted` of ``kept`` (``{group: count}``) on ``table`` (the one that
    predicts: the searches' steady one, or the raw one)."""
    ms = table.predict(kept)
    pruned = any(int(k) != table.sizes.get(g) for g, k in kept.items())
    # the unpruned model is measured, and the fit goes through it: only noise is left there
    return Predicted(ms, fit_residual(table) * ms if pruned else 0.0,
                     interpolation_error(table, kept), timing_noise(table) * ms)


def predict_plan(table, kept):
    """:class:`Predicted` of ``kept`` as every tool predicts a plan: on ``table``'s steady
    fit, the table the searches choose plans on (so prune.py, export, post_quant, report
    and analyze print one number for one model)."""
    from ppdet.slim.latency.search import steady
    return predict_with_error(steady(table), kept)


def predicted_latency(cfg, model, threads=1, precision="fp32"):
    """``(Predicted, table)`` of ``model`` (pruned or not) from the config's latency table
    of ``precision``, or ``(None, None)`` without one: kept counts are read off the model's
    master convs, on the graph of the unpruned model. A model with removed residual blocks
    gets ``(None, table)``: the table times the full-depth model's convs, so it would count
    the removed blocks' time."""
    from ppdet.engine.builder import build_model
    from ppdet.slim.latency.table import load_latency_table
    from ppdet.slim.prune.graph import PruneGraph
    graph = PruneGraph.of(build_model(cfg))
    table = load_latency_table(cfg, graph, threads=threads, precision=precision)
    if table is None or getattr(model, "removed_layers", None):
        return None, table
    layers = dict(model.named_sublayers())
    kept = {g.key: int(layers[g.key].weight.shape[0]) for g in graph.prunable
            if g.key in layers and g.key in table.sizes}
    return predict_plan(table, kept), table


def coarse_warning(table, kept, target_ms, predicted=None):
    """One warning line when ``table`` is too coarse for ``target_ms`` at plan ``kept``,
    naming the fix; None otherwise."""
    predicted = predicted or predict_with_error(table, kept)
    counts = max((len(table.counts(g)) for g in kept), default=0)
    fix = (f"build the table with more counts (slim/prune/latency_table.py --max_counts "
           f"{max(2 * counts, 8)}, or without --max_counts)")
    if target_ms is not None and predicted.ms < target_ms * (1 - COARSE_TOL):
        return (f"warning: latency table {table.path} is too coarse for this target: the "
                f"plan nearest {target_ms:.2f} ms it can price is {predicted.ms:.2f} ms "
                f"({1 - predicted.ms / target_ms:.0%} faster than asked; up to {counts} "
                f"counts per group): {fix}")
    if predicted.interpolation > COARSE_TOL * predicted.ms:
        return (f"warning: latency table {table.path} is too coarse where this plan lies: "
                f"interpolating between its counts can be off by "
                f"{predicted.interpolation:.2f} ms ({predicted.interpolation / predicted.ms:.0%}"
                f" of {predicted.ms:.2f} ms; up to {counts} counts per group): {fix}")
    return None


def measured_line(predicted, measured_ms, table):
    """``latency: measured M ms, predicted P ± E ms by TABLE (+x%, within its ±)``."""
    off = predicted.ms / measured_ms - 1
    inside = "within" if abs(predicted.ms - measured_ms) <= predicted.err else "OUTSIDE"
    return (f"{table.precision.upper()} latency: measured {measured_ms:.2f} ms, predicted "
            f"{predicted} by {table.path} ({off:+.1%}, {inside} its ±; {predicted.detail()})")


def int8_alignment_warning(kept, sizes, align=INT8_ALIGN):
    """One warning line when an INT8 plan keeps counts that are not multiples of ``align``
    (in groups whose size is one), naming the fix; None otherwise."""
    odd = [g for g, k in kept.items() if k < sizes.get(g, 0) and sizes[g] % align == 0
           and k % align]
    if not odd:
        return None
    return (f"warning: {len(odd)} pruned groups keep channel counts that are not multiples "
            f"of {align} (e.g. {odd[0]}: {kept[odd[0]]}); oneDNN's INT8 convs ran such "
            f"counts slower than the unpruned model here: build the table with --step "
            f"{align} and prune with --align {align}")
