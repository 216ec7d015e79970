"""Sensitivity analysis speed: this toolkit vs paddleslim's own loop, same process.

    python bench/bench_sensitivity.py -o weights=output/demo/yolov3_mobilenet_v1_shapes/model_final

Same model, weights, eval set and convs:
(a) ppdet.slim.sensitivity.run_sensitivity as slim/sensitive/sensitive.py runs it (fast
    mode): eval set cached once, one oneDNN program fed channel masks from the pruning plan;
(b) the reference a user would otherwise write: paddleslim ``FilterPruner.sensitive`` (with
    the concat worker, so the same convs are pruned) and an ``eval_func`` that iterates the
    standard EvalReader data loader each time.
Also (c): one evaluation of the unpruned model over the cached set by the whole program
(no cut programs), what each measurement cost before them: (a) / (number of evaluations x
c) below 1 is what the cut programs save; (d) sensitive.py's default since issue 17:
one 1-thread predictor per core over disjoint pairs (this process and a worker process per
further core); (e) the same with ``--stop_loss``,
whose ratios at loss 0.05 and 0.1 must equal the full grid's (a); (f) the script itself,
end to end (start-up, export, baseline included): one ``sensitive.py`` process, then two
side by side split by ratio as the seed's nohup recipe does, then merged. paddleslim
divides by (baseline + 1e-3): its losses are rescaled by (baseline + 1e-3) / baseline
before comparing. Default: every prunable conv (``--convs "*"``).
"""
import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

RATIOS = [round(0.1 * i, 2) for i in range(1, 10)]     # paddleslim's fixed list


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-c", "--config", default="configs/shapes/yolov3_mobilenet_v1_shapes.yml")
    parser.add_argument("-o", "--opt", nargs="+", default=[])
    parser.add_argument("--convs", default="*", help="as sensitive.py --pruned_params")
    parser.add_argument("--stop_loss", type=float, default=0.15)
    parser.add_argument("--no_real", action="store_true", help="skip (a') --mode real")
    parser.add_argument("--no_cli", action="store_true", help="skip (f) the script runs")
    args = parser.parse_args()

    from ppdet.core.config import load_config
    from ppdet.engine.builder import build_dataset, build_metric_for, build_model, build_reader
    from ppdet.engine.checkpoint import load_weights
    from ppdet.engine.evaluate import evaluate
    from ppdet.slim import compat
    from ppdet.slim.prune.graph import _RawOutputs as RawOutputs
    from ppdet.slim.prune.pruner import FilterPruner
    from ppdet.slim.sensitivity.analysis import (
        CachedEvaluator,
        MaskedMeasure,
        RealPruneMeasure,
        run_sensitivity,
    )
    from ppdet.slim.sensitivity.cache import EvalCache
    from ppdet.slim.sensitivity.fast_eval import MaskedEvaluator
    from ppdet.slim.sensitivity.store import SensitivityStore
    cfg = load_config(os.path.join(ROOT, args.config), args.opt + ["EvalReader.worker_num=0"])
    from ppdet.slim.prune.params import select_params
    model = build_model(cfg)
    convs = select_params(model, args.convs)
    load_weights(model, cfg["weights"])
    tmp = tempfile.mkdtemp()

    # (a) this toolkit, including building the cache
    tic = time.perf_counter()
    cache = EvalCache(build_dataset(cfg, "eval"), cfg["EvalReader"]["sample_transforms"],
                      progress=False)
    pruner = FilterPruner(model)
    evaluator = MaskedEvaluator(model, cache, build_metric_for(cfg, cache.dataset), pruner)
    store = SensitivityStore(os.path.join(tmp, "a.data"), {"bench": "a"})
    ours = run_sensitivity(MaskedMeasure(evaluator), store, convs, RATIOS, progress=False,
                           log=lambda *_: None)
    t_a = time.perf_counter() - tic
    n_eval = evaluator.calls

    # (d) the default since issue 17: every core, one 1-thread predictor each
    from ppdet.slim.prune.search import ratios_by_loss
    from ppdet.slim.sensitivity.cores import CoreShare
    tic = time.perf_counter()
    with CoreShare() as share:
        ev_d = MaskedEvaluator(model, cache, build_metric_for(cfg, cache.dataset), pruner)
        measures = [MaskedMeasure(ev_d)] + [MaskedMeasure(ev_d.spawn())
                                            for _ in range(share.cores - 1)]
        n_workers = share.workers()
        all_d = run_sensitivity(measures, SensitivityStore(os.path.join(tmp, "d.data"),
                                                           {"bench": "d"}),
                                convs, RATIOS, progress=False, log=lambda *_: None,
                                workers=share.workers)
        t_d = time.perf_counter() - tic
        # (e) = (d) + --stop_loss
        tic = time.perf_counter()
        calls0 = sum(m.calls for m in measures)
        stopped = run_sensitivity(measures, SensitivityStore(os.path.join(tmp, "e.data"),
                                                             {"bench": "e"}),
                                  convs, RATIOS, progress=False, log=lambda *_: None,
                                  workers=share.workers, stop_loss=args.stop_loss)
        t_e = time.perf_counter() - tic
        n_e = sum(m.calls for m in measures) - calls0
        ev_d.close()
    same = {t: ratios_by_loss(stopped, t) == ratios_by_loss(ours, t) for t in (0.05, 0.1)}
    same_d = all(abs(all_d[n][r] - ours[n][r]) < 1e-6 for n in convs for r in RATIOS)

    # (c) one evaluation of the unpruned model over the cached set by the whole program
    # (cut_budget=0: no cut programs; what every measurement cost before them)
    ev_c = MaskedEvaluator(model, cache, build_metric_for(cfg, cache.dataset), pruner,
                           cut_budget=0)
    ev_c()
    tic = time.perf_counter()
    for _ in range(5):
        ev_c()
    t_c = (time.perf_counter() - tic) / 5
    ev_c.close()

    # (a') this toolkit in --mode real: dygraph prune / evaluate / restore per measurement
    tic = time.perf_counter()
    real = None
    if not args.no_real:
        store_r = SensitivityStore(os.path.join(tmp, "r.data"), {"bench": "r"})
        real = run_sensitivity(RealPruneMeasure(pruner, CachedEvaluator(
            model, cache, build_metric_for(cfg, cache.dataset))), store_r, convs, RATIOS,
            progress=False, log=lambda *_: None)
    t_r = time.perf_counter() - tic

    # (b) paddleslim's loop with a DataLoader-iterating eval function
    loader = build_reader(cfg, "eval")
    metric = build_metric_for(cfg, loader.dataset)

    def eval_func():
        return float(evaluate(model, loader, metric, progress=False)["mAP"])

    tic = time.perf_counter()
    ref_pruner = compat.make_pruner(RawOutputs(model), [1, 3, 64, 64], criterion="l1_norm")
    theirs = ref_pruner.sensitive(eval_func=eval_func, target_vars=list(convs), skip_vars=[])
    t_b = time.perf_counter() - tic

    # (f) the script end to end: 1 process, then 2 side by side split by ratio + merge
    cli = [] if args.no_cli else _script_runs(args, convs, tmp)

    base = store.baseline
    rescale = lambda n, r: theirs[n][r] * (base + 1e-3) / base
    diffs_real = [abs(real[n][r] - rescale(n, r)) for n in convs for r in RATIOS] if real \
        else [float("nan")]
    diffs = [abs(ours[n][r] - theirs[n][r] * (base + 1e-3) / base) for n in convs
             for r in RATIOS]
    worst = sorted(((d, n, r) for d, (n, r) in zip(diffs, [(n, r) for n in convs
                                                           for r in RATIOS])), reverse=True)
    for d, n, r in worst[:3]:
        if d > 1e-6:
            print(f"differs: {n} @ {r}: ours {ours[n][r]:.6f}, paddleslim (rescaled) "
                  f"{theirs[n][r] * (base + 1e-3) / base:.6f}")
    print(f"\n{len(convs)} convs x {len(RATIOS)} ratios = {len(convs) * len(RATIOS)} "
          f"measurements, {len(cache)} eval images, {n_eval} evaluations by (a)\n")
    print("| run | seconds | s / measurement | ratio |\n|---|---|---|---|")
    m = len(convs) * len(RATIOS)
    print(f"| (b) paddleslim FilterPruner.sensitive + DataLoader eval (reference) | {t_b:.1f} "
          f"| {t_b / m:.3f} | 1.00x |")
    print(f"| (a) slim/sensitive.py, fast mode (cached set, masked oneDNN program) | "
          f"{t_a:.1f} | {t_a / m:.3f} | {t_b / t_a:.2f}x faster (target >= 3x) |")
    if real:
        print(f"| (a') slim/sensitive.py --mode real (cached set, dygraph prune/restore) | "
              f"{t_r:.1f} | {t_r / m:.3f} | {t_b / t_r:.2f}x faster |")
    print(f"| (d) slim/sensitive.py default: {n_workers} 1-thread predictors (this process + "
          f"{n_workers - 1} worker process(es)) over disjoint pairs ({share.cores} cores) | "
          f"{t_d:.1f} | {t_d / m:.3f} | {t_b / t_d:.2f}x faster |")
    print(f"| (e) (d) + --stop_loss {args.stop_loss:g}: {n_e} of {m} pairs measured | "
          f"{t_e:.1f} | {t_e / m:.3f} | {t_b / t_e:.2f}x faster (goal >= 6x) |")
    for label, seconds in cli:
        print(f"| (f) {label} | {seconds:.1f} | {seconds / m:.3f} | {t_b / seconds:.2f}x "
              f"faster |")
    print(f"| (c) {n_eval} x one unpruned evaluation over the cache, whole program | "
          f"{n_eval * t_c:.1f} | {n_eval * t_c / m:.3f} | (a) / (c) = "
          f"{t_a / (n_eval * t_c):.2f} (cut programs: below 1) |")
    print(f"\nmax |loss(a) - loss(b)| = {max(diffs):.2e}, pairs over 1e-6: "
          f"{sum(d > 1e-6 for d in diffs)} of {m}; max |loss(a') - loss(b)| = "
          f"{max(diffs_real):.2e} (target <= 1e-6); baseline mAP {base * 100:.2f}")
    print(f"(d) losses equal (a)'s: {same_d}; (e) ratios at loss 0.05 / 0.1 equal the full "
          f"grid's (a): {same[0.05]} / {same[0.1]}")


def _script_runs(args, convs, tmp):
    """Wall-clock seconds of slim/sensitive/sensitive.py as a user runs it."""
    import subprocess
    script = os.path.join(ROOT, "slim", "sensitive", "sensitive.py")
    base = [sys.executable, script, "-c", os.path.join(ROOT, args.config),
            *(["-o", *args.opt] if args.opt else []), "-p", ",".join(convs)]

    def start(out, ratios):
        return subprocess.Popen(base + ["-r", " ".join(f"{r:g}" for r in ratios), "-s", out],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def wait(*procs):
        for p in procs:
            _, err = p.communicate()
            if p.returncode:
                raise SystemExit(f"sensitive.py failed:\n{err[-2000:]}")

    runs = []
    tic = time.perf_counter()
    wait(start(os.path.join(tmp, "f1.data"), RATIOS))
    runs.append(("one sensitive.py process (default: every core)", time.perf_counter() - tic))
    tic = time.perf_counter()
    parts = [os.path.join(tmp, f"f2.data.{k}") for k in (1, 2)]
    wait(start(parts[0], RATIOS[0::2]), start(parts[1], RATIOS[1::2]))
    subprocess.run([sys.executable, os.path.join(ROOT, "slim", "sensitive", "merge.py"),
                    *parts, "-o", os.path.join(tmp, "f2.data")], check=True,
                   stdout=subprocess.DEVNULL)
    runs.append(("two sensitive.py processes side by side (ratios split) + merge.py",
                 time.perf_counter() - tic))
    return runs


if __name__ == "__main__":
    main()
