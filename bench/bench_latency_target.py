"""Latency-target against FLOPs-target pruning at the same measured latency (issue 14).

    # 1. the latency table (timing: resumable, run it under `flock -x` in pieces)
    python bench/bench_latency_target.py table -c CFG [--size N] [--weights W] --out DIR
    # 2. prune to --speedup X from the table; find the FLOPs target whose model measures
    #    the same; measure unpruned / latency-target / FLOPs-target in interleaved rounds
    python bench/bench_latency_target.py match -c CFG ... --speedup X [--sensitivities S]
    # 3. (trained weights) fine-tune both as slim/prune/prune.py does; mAP before and after
    python bench/bench_latency_target.py finetune -c CFG ... --epochs 8 --lr 0.0006
    # the fine-tuned models measured again; what pruning cannot remove (every group at its
    # smallest count); the latency-target plan's groups one at a time, predicted vs measured
    python bench/bench_latency_target.py final|floor|groups -c CFG ...
    # two builds of one table: do they agree on which groups save time?
    python bench/bench_latency_target.py agree -c CFG ... --out DIR --other DIR2

Without --weights the model has random weights with the prediction convs biased to
background (as bench/bench_latency.py), and pruning is uniform over every prunable conv
(`prune.py --pruned_params "*" --target_speedup X` against `--target_ratio F`); with
--sensitivities both come from the file (`--target_speedup X` against `--target_flops F`).
The searches run on the table's steady fit (ppdet.slim.latency_search.steady); --raw_table searches
the raw table, for comparison. Paddle Inference, oneDNN, one thread, batch 1, minimum of
many runs, the models measured in turn for several rounds. Each step records into
DIR/state.json; `report` prints it again.
"""
import argparse
import json
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _setup(args):
    """The config at its size, the model (weights or random + background), its graph."""
    import paddle
    from bench_latency import _background, _cfg

    from ppdet.engine.builder import build_model, image_size_for
    from ppdet.engine.checkpoint import load_weights
    from ppdet.slim.prune.graph import PruneGraph
    cfg = _cfg(args.config, args.size)
    if args.weights:
        cfg["weights"] = args.weights
    size = image_size_for(cfg, "test")
    paddle.seed(0)
    model = build_model(cfg)
    if args.weights:
        load_weights(model, args.weights)
    graph = PruneGraph.of(model)
    if not args.weights:
        _background(graph)
    return cfg, size, model, graph


def _state(args, update=None):
    from ppdet.utils.atomic import atomic_write_bytes
    path = os.path.join(args.out, "state.json")
    state = {}
    if os.path.isfile(path):
        with open(path) as f:
            state = json.load(f)
    if update:
        state.update(update)
        atomic_write_bytes(path, json.dumps(state, indent=1).encode())
    return state


def _table_file(args, size):
    return os.path.join(args.out, f"latency_cpu-onednn_t1_{size[0]}x{size[1]}.json")


class Bench:
    """Ratios -> exported model -> measured ms, on one model and its latency table."""

    def __init__(self, args):
        from ppdet.slim.latency.search import steady
        from ppdet.slim.latency.table import LatencyTable, target_key
        from ppdet.slim.prune.costs import Costs
        self.args = args
        self.cfg, self.size, self.model, self.graph = _setup(args)
        path = _table_file(args, self.size)
        self.table = LatencyTable.load(path, target_key(self.graph, self.size))
        if not args.raw_table:                       # predict as the search does
            self.table = steady(self.table)
        self.costs = Costs(self.graph, self.size)
        self.flops0 = self.costs.flops()
        self.tmp = tempfile.mkdtemp(prefix="bench_lt_")
        # each measurement about 0.5 s of runs (at least 5): many short rounds, so that
        # every model gets several chances at a quiet moment of a shared machine
        self.repeats = int(min(150, max(5, 500 / self.table.full_ms)))

    def kept(self, ratios):
        from ppdet.slim.prune.costs import removed_for_ratios
        return {k: self.graph.group(k).size - v
                for k, v in removed_for_ratios(self.graph, ratios).items()}

    def row(self, ratios):
        from ppdet.slim.prune.costs import removed_for_ratios
        flops = self.costs.flops(removed_for_ratios(self.graph, ratios))
        return {"flops_removed": 1 - flops / self.flops0,
                "predicted": self.table.predict(self.kept(ratios))}

    def export(self, ratios, name):
        from ppdet.engine.export import export_model
        from ppdet.slim.prune.plan import apply_plan, make_plan
        applied = apply_plan(self.graph, make_plan(self.graph, ratios))
        d = os.path.join(self.tmp, name)
        export_model(self.model, self.cfg, d, ["c"] * int(self.cfg.get("num_classes", 1)))
        applied.restore()
        return d

    def measure(self, dirs, rounds):
        from ppdet.engine.latency import measure_latency
        from ppdet.slim.latency.timing import STAT
        best = [float("inf")] * len(dirs)
        for _ in range(rounds):          # in turn: every model sees the same machine load
            for i, d in enumerate(dirs):
                best[i] = min(best[i], measure_latency(d, self.size, warmup=3,
                                                       repeats=self.repeats, stat=STAT))
        return best


def step_table(args):
    from ppdet.slim.latency.build import build_table
    cfg, size, _, graph = _setup(args)
    table = build_table(graph, cfg, _table_file(args, size), size, step=args.count_step,
                        max_counts=args.max_counts, repeats=30, progress=sys.stderr.isatty(),
                        quiet=not args.no_quiet_gate,
                        passes=args.passes)
    print(f"table complete: {sum(len(e) for e in table.entries.values())} entries, full "
          f"{table.full_ms:.2f} ms, fixed {table.fixed_ms:.2f} ms, scale {table.scale:.2f}")


def _flops_ratios(b, sens, target):
    from ppdet.slim.prune import search as flops_search
    if sens is not None:
        return flops_search.loss_for_flops(b.costs, sens, target)[1]
    names = [g.name for g in b.graph.prunable]
    r, _ = flops_search.uniform_ratio_for_flops(b.costs, names, target, tol=0.0005)
    return {n: r for n in names}


def step_match(args):
    from ppdet.slim.latency import search as latency_search
    from ppdet.slim.sensitivity.store import load_sensitivities_file
    b = Bench(args)
    sens = load_sensitivities_file(args.sensitivities) if args.sensitivities else None
    target_ms = latency_search.latency_target(b.table, speedup=args.speedup)
    if sens is not None:
        lat, pred, _ = latency_search.ratios_for_latency(b.table, b.graph, sens, target_ms,
                                                 smooth=not args.raw_table, rule=args.rule)
    else:
        _, lat, pred = latency_search.uniform_ratio_for_latency(
            b.table, b.graph, [g.name for g in b.graph.prunable], target_ms,
            smooth=not args.raw_table, align=args.align)
    dirs = {"unpruned": b.export({}, "u"), "latency": b.export(lat, "l")}
    pred_of = lambda f: b.table.predict(b.kept(_flops_ratios(b, sens, f)))  # noqa: E731
    # start where the predictor says the FLOPs-target model is as fast, then measure
    f0 = latency_search._smallest_meeting(lambda f: pred_of(f) <= pred, 0.02, 0.9, 30)
    slope = (pred_of(f0 + 0.02) - pred_of(f0 - 0.02)) / 0.04 / pred
    tries = {}

    def gap(f):
        d = b.export(_flops_ratios(b, sens, f), f"f{len(tries)}")
        ms_f, ms_l = b.measure([d, dirs["latency"]], args.match_rounds)
        tries[f] = d
        print(f"FLOPs target {f:.4f}: {ms_f:.2f} ms against {ms_l:.2f} ms "
              f"({ms_f / ms_l - 1:+.1%})", flush=True)
        return ms_f / ms_l - 1
    latency_search.solve_measured(gap, f0, slope, 0.02, 0.95, tol=args.tol)
    # the final rounds measure every candidate again: the one nearest the latency-target
    # model there is the match (a candidate's try alone is a few rounds, noisier)
    cands = sorted(tries)
    dirs["unpruned (2nd export)"] = b.export({}, "u2")
    names = list(dirs) + [f"flops {f:.4f}" for f in cands]
    ms = dict(zip(names, b.measure(list(dirs.values()) + [tries[f] for f in cands],
                                   args.rounds)))
    f = min(cands, key=lambda c: abs(ms[f"flops {c:.4f}"] / ms["latency"] - 1))
    ms["flops"] = ms[f"flops {f:.4f}"]
    hist = [(c, ms[f"flops {c:.4f}"] / ms["latency"] - 1) for c in cands]
    rows = {"unpruned": {"ratios": {}}, "latency": {"ratios": lat},
            "flops": {"ratios": _flops_ratios(b, sens, f), "target_flops": f}}
    for k, r in rows.items():
        r.update(b.row(r["ratios"]), measured=ms[k])
    _state(args, {"config": args.config, "size": b.size, "speedup": args.speedup,
                  "search": ("raw" if args.raw_table else "steady")
                  + (f", {args.rule}" if sens is not None else ", uniform")
                  + (f", align {args.align}" if args.align and sens is None else ""),
                  "target_ms": target_ms, "rows": rows, "match": hist,
                  "noise": ms["unpruned (2nd export)"] / ms["unpruned"] - 1,
                  "repeats": b.repeats, "rounds": args.rounds})
    _print(_state(args))


def _cfg_for(args, save_dir):
    from ppdet.core.config import load_config
    return load_config(os.path.join(ROOT, args.config), [
        f"weights={args.weights}", f"save_dir={save_dir}", f"epoch={args.epochs}",
        f"LearningRate.base_lr={args.lr}"])


def _map(cfg, weights):
    from ppdet.engine.builder import build_metric_for, build_model, build_reader
    from ppdet.engine.checkpoint import load_weights
    from ppdet.engine.evaluate import evaluate
    model = build_model(cfg)
    load_weights(model, weights)
    loader = build_reader(cfg, "eval")
    return evaluate(model, loader, build_metric_for(cfg, loader.dataset),
                    progress=False)["mAP"] * 100


def step_finetune(args):
    """Both plans fine-tuned with the same schedule, once per seed in ``--seeds`` (the
    config's ``seed``: initialisation and data order); resumes, keeping finished seeds."""
    from ppdet.slim import pipelines
    state = _state(args)
    rows = state["rows"]
    rows["unpruned"]["mAP"] = _map(_cfg_for(args, args.out), args.weights)
    _state(args, {"rows": rows})
    for seed in [int(s) for s in args.seeds.split(",")]:
        for k in ("latency", "flops"):
            done = rows[k].setdefault("mAP_seeds", {})
            if seed == 0 and "mAP" in rows[k]:
                done.setdefault("0", rows[k]["mAP"])
            if str(seed) in done:
                continue
            # the plans measured in the match step, given as prune.py's --pruned_params and
            # --pruned_ratios (the same schedule and seed for both)
            ratios = rows[k]["ratios"]
            cfg = _cfg_for(args, os.path.join(args.out, k if seed == 0 else f"{k}_s{seed}"))
            cfg["seed"] = seed
            res = pipelines.prune_and_finetune(cfg, pipelines.PruneRequest(
                ",".join(ratios), ",".join(f"{r:.6f}" for r in ratios.values())))
            final = os.path.join(res.save_dir, "model_final")
            done[str(seed)] = _map(cfg, final)
            if seed == 0:
                rows[k].update(mAP_pruned=_map(cfg, res.pruned), finetuned=final,
                               mAP=done["0"])
            _state(args, {"rows": rows, "finetune": {"epochs": args.epochs, "lr": args.lr}})
    _print(_state(args))


def step_final(args):
    """The fine-tuned models (their own weights: NMS load as deployed) measured again."""
    from ppdet.engine.builder import build_model
    from ppdet.engine.checkpoint import load_weights
    from ppdet.engine.export import export_model
    b = Bench(args)
    state = _state(args)
    rows = state["rows"]
    dirs = [b.export({}, "u")]
    for k in ("latency", "flops"):
        model = build_model(b.cfg)
        load_weights(model, rows[k]["finetuned"])
        dirs.append(export_model(model, b.cfg, os.path.join(b.tmp, k), ["c"] * 4))
    for k, ms in zip(("unpruned", "latency", "flops"), b.measure(dirs, args.rounds)):
        rows[k]["measured_finetuned"] = ms
    _state(args, {"rows": rows})
    _print(_state(args))


def step_floor(args):
    """What pruning cannot remove: every prunable group at its smallest table count,
    measured against the unpruned model in the same rounds."""
    b = Bench(args)
    small = {g.name: 1 - min(b.table.counts(g.key)) / g.size for g in b.graph.prunable}
    ms = b.measure([b.export({}, "u"), b.export(small, "floor")], args.rounds)
    _state(args, {"floor": {"share": ms[1] / ms[0], "ms": ms,
                            "flops_removed": b.row(small)["flops_removed"]}})
    _print(_state(args))


def step_groups(args):
    """Why a plan misses: its groups one at a time (the rest full), the ``--top`` largest
    predicted savings, measured against the unpruned model in the same rounds; predicted
    savings from the raw table and from its steady fit."""
    from ppdet.slim.latency.search import steady
    from ppdet.slim.latency.table import LatencyTable, target_key
    b = Bench(args)
    raw = LatencyTable.load(_table_file(args, b.size), target_key(b.graph, b.size))
    fit = steady(raw)
    kept = b.kept(_state(args)["rows"]["latency"]["ratios"])
    save = lambda t, plan: t.predict({}) - t.predict(plan)        # noqa: E731
    top = sorted(kept, key=lambda g: -save(raw, {g: kept[g]}))[:args.top]
    dirs = [b.export({}, "u")] + [b.export({b.graph.group(g).name: 1 - kept[g] /
                                             b.graph.group(g).size}, f"g{i}")
                                  for i, g in enumerate(top)]
    ms = b.measure(dirs, args.rounds)
    print("| group | kept | predicted saving, raw table (ms) | steady table | measured |\n"
          "|---|---|---|---|---|")
    for g, m in zip(top, ms[1:]):
        print(f"| {g} | {kept[g]}/{b.graph.group(g).size} | {save(raw, {g: kept[g]}):.3f} | "
              f"{save(fit, {g: kept[g]}):.3f} | {ms[0] - m:+.3f} |")
    print(f"whole plan: raw {save(raw, kept):.3f}, steady {save(fit, kept):.3f} ms; "
          f"unpruned measured {ms[0]:.2f} ms")


def _print(state):
    rows, x = state["rows"], state["speedup"]
    m0 = rows["unpruned"]["measured"]
    print(f"\n{state['config']} at {state['size'][0]} px, search: "
          f"{state.get('search', 'steady')}, requested {x:g}x "
          f"({state['target_ms']:.2f} ms predicted); same model exported twice: "
          f"{state['noise']:+.1%}")
    print("FLOPs-target candidates, gap to the latency-target model in the final rounds: "
          + ", ".join(f"{f:.3f}: {g:+.1%}" for f, g in state["match"]))
    has_map = "mAP" in rows["unpruned"]
    print("| model | FLOPs removed | FLOPs ratio | predicted ms | measured ms | speed-up | "
          "speed-up / FLOPs ratio | requested | error |"
          + (" mAP pruned | mAP fine-tuned |" if has_map else "")
          + "\n|---|---|---|---|---|---|---|---|---|" + ("---|---|" if has_map else ""))
    for k, label in (("unpruned", "unpruned"), ("latency", f"--target_speedup {x:g}"),
                     ("flops", f"FLOPs target {rows['flops'].get('target_flops', 0):.3f}")):
        r = rows[k]
        fr = 1 / (1 - r["flops_removed"])
        su = m0 / r["measured"]
        req = f"{x:.2f}x | {su / x - 1:+.1%}" if k == "latency" else "- | -"
        print(f"| {label} | {r['flops_removed']:.1%} | {fr:.2f}x | {r['predicted']:.2f} | "
              f"{r['measured']:.2f} | {su:.2f}x | {su / fr:.2f} | {req} |"
              + (f" {r.get('mAP_pruned', r['mAP']):.2f} | {r['mAP']:.2f} |" if has_map
                 else ""))
    if "floor" in state:
        fl = state["floor"]["share"]
        print(f"every group at its smallest count ({state['floor']['flops_removed']:.1%} of "
              f"FLOPs removed) keeps {fl:.0%} of the unpruned time; were the rest to scale "
              f"with FLOPs, speed-up / FLOPs ratio would be at most " + ", ".join(
                  f"{1 / (fl + (1 - fl) / fr) / fr:.2f} at {fr:.2f}x" for fr in sorted(
                      {round(1 / (1 - rows[k]["flops_removed"]), 2)
                       for k in ("latency", "flops")})))
    for k in ("latency", "flops"):
        seeds = rows[k].get("mAP_seeds", {})
        if len(seeds) > 1:
            vals = [seeds[s] for s in sorted(seeds, key=int)]
            mean = sum(vals) / len(vals)
            sd = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5
            print(f"{k}: fine-tuned mAP over seeds {', '.join(sorted(seeds, key=int))}: "
                  f"{', '.join(f'{v:.2f}' for v in vals)}; mean {mean:.2f}, sd {sd:.2f}")
    if "measured_finetuned" in rows["latency"]:
        ft = {k: rows[k]["measured_finetuned"] for k in ("unpruned", "latency", "flops")}
        print("fine-tuned models measured again: " + ", ".join(
            f"{k} {ms:.2f} ms ({ft['unpruned'] / ms:.2f}x)" for k, ms in ft.items()))


def step_agree(args):
    """Two builds of the same table (``--out`` and ``--other``), compared where a search
    looks: each group's predicted saving with only that group at half its channels (steady
    fit). If two builds disagree there, the allocation between groups follows noise."""
    import numpy as np

    from ppdet.slim.latency.search import steady
    from ppdet.slim.latency.table import LatencyTable, target_key
    cfg, size, _, graph = _setup(args)
    key = target_key(graph, size)
    paths = [_table_file(args, size), os.path.join(args.other, os.path.basename(
        _table_file(args, size)))]
    tables = [steady(LatencyTable.load(p, key)) for p in paths]
    rows = []
    for g in graph.prunable:
        if any(g.key not in t.sizes for t in tables):
            continue
        half = [max([c for c in t.counts(g.key) if c <= g.size // 2] or [min(t.counts(g.key))])
                for t in tables]
        rows.append((g.key, g.size, *[t.predict({}) - t.predict({g.key: h})
                                     for t, h in zip(tables, half)]))
    a, b = np.array([r[2] for r in rows]), np.array([r[3] for r in rows])
    rank = lambda v: np.argsort(np.argsort(v))                       # noqa: E731
    print(f"{len(rows)} groups; unpruned predicted {tables[0].predict({}):.2f} / "
          f"{tables[1].predict({}):.2f} ms; a group's saving at half width: "
          f"{a.mean():.3f} / {b.mean():.3f} ms on average")
    print(f"agreement between the two builds: Spearman {np.corrcoef(rank(a), rank(b))[0, 1]:.2f},"
          f" Pearson {np.corrcoef(a, b)[0, 1]:.2f}; median |difference| "
          f"{np.median(np.abs(a - b)):.3f} ms")
    print("| group | channels | saving, build 1 (ms) | build 2 (ms) |\n|---|---|---|---|")
    for k, n, x, y in sorted(rows, key=lambda r: -abs(r[2] - r[3]))[:args.top]:
        print(f"| {k} | {n} | {x:.3f} | {y:.3f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("what", choices=["table", "match", "floor", "groups", "finetune",
                                                   "final", "report", "agree"])
    parser.add_argument("-c", "--config", default="configs/shapes/yolov3_mobilenet_v1_shapes.yml")
    parser.add_argument("--size", type=int, default=None, help="deploy size (default: config)")
    parser.add_argument("--weights", default=None, help="trained weights (default: random)")
    parser.add_argument("--sensitivities", default=None)
    parser.add_argument("--out", required=True)
    parser.add_argument("--other", default=None, help="agree: the second build's folder")
    parser.add_argument("--speedup", type=float, default=1.5)
    parser.add_argument("--count_step", type=int, default=8, help="table: multiples of N")
    parser.add_argument("--max_counts", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--match_rounds", type=int, default=5)
    parser.add_argument("--tol", type=float, default=0.02)
    parser.add_argument("--top", type=int, default=10, help="groups: how many")
    parser.add_argument("--raw_table", action="store_true",
                        help="search on the raw table, not its steady fit (comparison)")
    parser.add_argument("--passes", type=int, default=None,
                        help="table: timings per entry, the fastest kept (default: the "
                             "library's)")
    parser.add_argument("--no_quiet_gate", action="store_true",
                        help="table: time without waiting for a quiet machine (a noisy host "
                             "can make the gate wait most of the time)")
    parser.add_argument("--rule", default="sum", choices=["sum", "threshold"],
                        help="match, with --sensitivities: the latency search's rule")
    parser.add_argument("--align", type=int, default=None,
                        help="match, uniform: kept counts multiples of N (prune.py --align)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seeds", default="0", help="finetune: seeds, e.g. 0,1,2")
    parser.add_argument("--lr", default="0.0006")
    args = parser.parse_args()
    if args.what == "agree" and not (args.other and os.path.isdir(args.other)):
        parser.error("agree compares two builds: give the second one's folder, --other DIR")
    if args.passes is not None and args.passes < 1:
        parser.error(f"--passes {args.passes}: at least 1")
    os.makedirs(args.out, exist_ok=True)
    {"table": step_table, "match": step_match, "floor": step_floor, "groups": step_groups,
     "finetune": step_finetune, "final": step_final, "agree": step_agree,
     "report": lambda a: _print(_state(a))}[args.what](args)


if __name__ == "__main__":
    main()
