"""Can a pruning score be trusted? Rank agreement with the accuracy after fine-tuning.

    python bench/bench_trust.py -o weights=output/test_cache/KEY/model_final

On the shapes set: a sensitivity file of the head convs (fast mode), then pruned candidates
that all remove the same share of FLOPs (``--target_flops``): plans from the sensitivities
at several loss thresholds (each scaled to the target) and random plans (scaled the same
way). Every candidate is scored three ways before training:

(a) the summed sensitivity loss of its ratios (interpolated in the measured curves; lower
    should mean better);
(b) plain evaluation of the pruned model (mAP with the BN statistics it inherited);
(c) evaluation after BN recalibration on ``--bn_calib`` training batches (adaptive BN);

then fine-tuned with the same short schedule (``--epochs``, same seed) and evaluated. The
table gives each score's Spearman rank correlation with the fine-tuned mAP (for (a), with
minus the loss, so that 1 is perfect agreement for every column).
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def spearman(x, y):
    """Spearman's rho with average ranks for ties."""
    def ranks(v):
        v = np.asarray(v, float)
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for value in np.unique(v):
            same = v == value
            r[same] = r[same].mean()
        return r
    a, b = ranks(x), ranks(y)
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den else float("nan")


def curve_loss(curve, ratio):
    """Loss at ``ratio`` interpolated in ``{ratio: loss}`` (0 at ratio 0, last value past
    the end)."""
    pts = sorted(curve.items())
    xs = [0.0] + [r for r, _ in pts]
    ys = [0.0] + [v for _, v in pts]
    return float(np.interp(ratio, xs, ys))


def scale_to_flops(costs, shape, target, cap=0.9):
    """``{name: s * shape[name]}`` (capped) with s bisected so that ``target`` of the FLOPs
    goes."""
    from ppdet.slim.prune.search import flops_reduction
    base = costs.flops()
    lo, hi = 0.0, 1.0 / max(min(shape.values()), 1e-3)
    for _ in range(40):
        mid = (lo + hi) / 2
        got = flops_reduction(costs, {n: min(cap, mid * v) for n, v in shape.items()}, base)
        lo, hi = (mid, hi) if got < target else (lo, mid)
    ratios = {n: round(min(cap, hi * v), 4) for n, v in shape.items()}
    return ratios, flops_reduction(costs, ratios, base)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", default="configs/shapes/yolov3_mobilenet_v1_shapes.yml")
    parser.add_argument("-o", "--opt", nargs="+", default=[])
    parser.add_argument("--target_flops", type=float, default=0.35)
    parser.add_argument("--thresholds", default="0.01 0.03 0.06 0.1 0.2")
    parser.add_argument("--random", type=int, default=5, help="random plans")
    parser.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs each")
    parser.add_argument("--lr", type=float, default=0.0003)
    parser.add_argument("--bn_calib", type=int, default=20, help="batches of 8 for (c)")
    parser.add_argument("--ratios", default="0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()

    import paddle

    from ppdet.core.config import load_config
    from ppdet.engine.builder import build_dataset, build_metric_for, build_model
    from ppdet.engine.checkpoint import load_weights
    from ppdet.engine.trainer import Trainer, set_seed
    from ppdet.slim.pipelines.requests import SensitivityRequest
    from ppdet.slim.pipelines.sensitivity import analyse_sensitivity
    from ppdet.slim.prune.costs import Costs
    from ppdet.slim.prune.graph import PruneGraph
    from ppdet.slim.prune.ratios import prune_model
    from ppdet.slim.prune.search import ratios_by_loss
    from ppdet.slim.sensitivity import bn_calib
    from ppdet.slim.sensitivity.analysis import CachedEvaluator
    from ppdet.slim.sensitivity.cache import EvalCache

    tic0 = time.time()
    work = args.workdir or tempfile.mkdtemp(prefix="bench_trust_")
    cfg = load_config(os.path.join(ROOT, args.config), args.opt)
    model = build_model(cfg)
    names = [g.name for g in PruneGraph.of(model).prunable if g.name.startswith("yolo")]
    sens_file = os.path.join(work, "sens.data")
    req = SensitivityRequest(sens_file, ",".join(names),
                             [float(r) for r in args.ratios.split()], progress=False).check()
    res = analyse_sensitivity(cfg, req, log=lambda *_: None)
    sens = {n: res.sensitivities[n] for n in names}
    t_sens = time.time() - tic0
    size = [160, 160]
    costs = Costs(PruneGraph.of(model), size)

    cands = []
    for t in [float(x) for x in args.thresholds.split()]:
        shape = ratios_by_loss(sens, t)
        if len(shape) < 2:
            continue
        ratios, got = scale_to_flops(costs, shape, args.target_flops)
        cands.append((f"sensitivity, loss {t:g}", ratios, got))
    rng = np.random.RandomState(0)
    for k in range(args.random):
        shape = {n: float(rng.uniform(0.05, 1.0)) for n in names}
        ratios, got = scale_to_flops(costs, shape, args.target_flops)
        cands.append((f"random {k}", ratios, got))

    cache = EvalCache(build_dataset(cfg, "eval"), cfg["EvalReader"]["sample_transforms"],
                      progress=False)
    calib = bn_calib.CalibSet(build_dataset(cfg, "train"),
                              cfg["EvalReader"]["sample_transforms"], args.bn_calib, 8,
                              progress=False)
    rows = []
    for label, ratios, got in cands:
        tic = time.time()
        set_seed(0)
        m = build_model(cfg)
        load_weights(m, cfg["weights"])
        prune_model(m, ratios)
        ev = CachedEvaluator(m, cache, build_metric_for(cfg, cache.dataset), 8)
        summed = sum(curve_loss(sens[n], r) for n, r in ratios.items())
        plain = ev()
        with bn_calib.using_stats(m, bn_calib.calibrated_stats(m, calib)):
            calibrated = ev()
        ft_cfg = load_config(os.path.join(ROOT, args.config), args.opt + [
            f"epoch={args.epochs}", f"snapshot_epoch={args.epochs}", "log_iter=1000",
            f"LearningRate.base_lr={args.lr}",
            "LearningRate.schedulers=[{name: PiecewiseDecay, milestones: [1000]}, "
            "{name: LinearWarmup, start_factor: 0.1, steps: 30}]"])
        set_seed(0)
        Trainer(ft_cfg, model=m, save_dir=os.path.join(work, f"ft{len(rows)}")).train()
        tuned = ev()
        rows.append((label, got, summed, plain, calibrated, tuned))
        print(f"{label}: FLOPs -{got:.1%}, summed loss {summed:.3f}, plain {plain * 100:.2f}, "
              f"BN-recalibrated {calibrated * 100:.2f}, fine-tuned {tuned * 100:.2f} "
              f"({time.time() - tic:.0f} s)", flush=True)
        paddle.device.cuda.empty_cache() if paddle.is_compiled_with_cuda() else None

    tuned = [r[5] for r in rows]
    print(f"\n{len(rows)} candidates at FLOPs -{args.target_flops:.0%} "
          f"(+-{max(abs(r[1] - args.target_flops) for r in rows):.1%}), {len(names)} head "
          f"convs, {args.epochs} fine-tuning epoch(s) each at lr {args.lr}, BN recalibration "
          f"on {args.bn_calib} x 8 training images; sensitivity analysis {t_sens:.0f} s, "
          f"total {time.time() - tic0:.0f} s\n")
    print("| candidate | FLOPs removed | summed loss | plain mAP | BN-recal. mAP | "
          "fine-tuned mAP |\n|---|---|---|---|---|---|")
    for label, got, summed, plain, cal, tn in rows:
        print(f"| {label} | {got:.1%} | {summed:.3f} | {plain * 100:.2f} | {cal * 100:.2f} | "
              f"{tn * 100:.2f} |")
    print("\n| predictor of the fine-tuned mAP | Spearman rho |\n|---|---|")
    print(f"| (a) minus summed sensitivity loss | {spearman([-r[2] for r in rows], tuned):.2f} |")
    print(f"| (b) plain eval of the pruned model | {spearman([r[3] for r in rows], tuned):.2f} |")
    print(f"| (c) BN-recalibrated eval | {spearman([r[4] for r in rows], tuned):.2f} |")


if __name__ == "__main__":
    main()
