"""What a newcomer meets first: ratios paired as typed, warnings, numbering, plots."""
import json
import os
import re
import subprocess
import sys

import pytest

from ppdet.core.config import load_config
from ppdet.engine.builder import build_model
from ppdet.slim.pipelines.prune import choose_ratios
from ppdet.slim.pipelines.requests import PruneRequest
from ppdet.slim.prune.ratios import prune_model
from ppdet.utils.cli import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = os.path.join(ROOT, "configs/shapes/yolov3_mobilenet_v1_shapes.yml")
SIZE = [160, 160]
A, B = "yolo_block.0.0.0.conv.weights", "conv6_sep_weights"      # 128 and 256 filters


def _filters(model):
    return {p.name: p.shape[0] for p in model.parameters()}


@pytest.mark.parametrize("params, ratios, want", [
    (f"{A},{B}", "0.25,0.5", {A: 96, B: 128}),
    (f"{B},{A}", "0.25,0.5", {A: 64, B: 192}),
    (f"{B},{A}", "0.5", {A: 64, B: 128}),
    # a pattern gives every conv it matches its ratio, in the order typed
    ("yolo_block.0.tip.conv.weights,yolo_transition.*.conv.weights", "0.25,0.5",
     {"yolo_block.0.tip.conv.weights": 192, "yolo_transition.0.conv.weights": 32,
      "yolo_transition.1.conv.weights": 16}),
])
def test_ratios_pair_with_names_in_the_order_typed(params, ratios, want):
    model = build_model(load_config(CFG))
    chosen, how = choose_ratios(model, SIZE,
                                PruneRequest(pruned_params=params, pruned_ratios=ratios))
    assert "order typed" in how
    prune_model(model, chosen)
    got = _filters(model)
    assert {n: got[n] for n in want} == want


@pytest.mark.parametrize("params, ratios, message", [
    (f"{A},{B}", "0.2,0.3,0.4", "2 params .* 3 ratios"),
    (f"{A},yolo_block.0.*.conv.weights", "0.2,0.3", "matched by"),
])
def test_ratio_count_mismatch_and_conflicts_are_errors(params, ratios, message):
    with pytest.raises(UserError, match=message):
        choose_ratios(build_model(load_config(CFG)), SIZE, PruneRequest(pruned_params=params,
                      pruned_ratios=ratios))


def test_target_ratio_names_the_filter_ratio_and_warns(capsys):
    model = build_model(load_config(CFG))
    ratios, _ = choose_ratios(model, SIZE, PruneRequest(pruned_params="conv[2-5]_[1-6]_sep_weights",
                              target_ratio=0.2))
    out = capsys.readouterr().out
    r = next(iter(ratios.values()))
    assert f"filter ratio {r:g}" in out and "share of FLOPs" in out
    assert r > 0.8 and "warning: conv2_1_sep_weights keeps" in out
    choose_ratios(model, SIZE, PruneRequest(pruned_params="yolo_block.0.*.conv.weights",
                                            target_ratio=0.05))
    assert "warning" not in capsys.readouterr().out


def test_make_shapes_if_missing_says_it_did_nothing(shapes_root):
    r = subprocess.run([sys.executable, "dataset/shapes/make_shapes.py", "--if-missing"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "already there" in r.stdout and "wrote" not in r.stdout


def test_sparsity_plot_from_old_and_new_logs(tmp_path):
    from ppdet.slim.plots import plot_sparsity
    edges = [i / 10 for i in range(11)]
    for base, first in ((None, 0), (1, 1)):
        log = {"s": 0.001, "prune_mode": 1, "s_decay": "none", "edges": edges,
               "epochs": [{"epoch": first + i, "s": 0.001, "share_below_1e-2": 0.1 * i,
                           "mean_abs_gamma": 0.5, "hist": [i] * 10} for i in range(3)]}
        if base:
            log["epoch_base"] = base
        path = plot_sparsity(log, str(tmp_path / f"s{first}.png"))
        assert os.path.getsize(path) > 0
    json.dumps(log)


def test_labels_stay_inside_the_image():
    from ppdet.utils.visualize import _label_origin
    for box in [(0, 0, 40, 30), (180, 2, 200, 40), (60, 185, 120, 191), (-5, -5, 10, 10)]:
        x, y = _label_origin(box, (70, 14), (192, 192))
        assert 0 <= x and x + 70 <= 192 and 0 <= y and y + 14 <= 192, box
    assert _label_origin((50, 60, 90, 100), (30, 14), (192, 192)) == (50, 46)  # above the box


def test_exports_of_a_pruned_run_go_to_its_own_folder():
    from ppdet.utils.outputs import run_name
    cfg = {"filename": "yolov3_mobilenet_v1_shapes"}
    assert run_name(cfg, "output/yolov3_mobilenet_v1_shapes/model_final") == \
        "yolov3_mobilenet_v1_shapes"
    assert run_name(cfg, "output/yolov3_mobilenet_v1_shapes_pruned/model_final") == \
        "yolov3_mobilenet_v1_shapes_pruned"
    assert run_name(cfg, "/tmp/elsewhere/model_final") == "yolov3_mobilenet_v1_shapes"


def test_training_log_in_a_file_counts_epochs_from_1(tmp_path, shapes_root):
    r = subprocess.run([sys.executable, "tools/train.py", "-c", CFG, "--eval", "-o", "epoch=2",
                        "snapshot_epoch=1", "TrainDataset.sample_num=16",
                        "TrainReader.batch_size=8", "EvalDataset.sample_num=8",
                        f"save_dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    run = tmp_path / "yolov3_mobilenet_v1_shapes"
    assert sorted(p.name for p in run.glob("[0-9]*.pdparams")) == ["1.pdparams", "2.pdparams"]
    history = json.load(open(run / "eval_history.json"))
    assert [h["epoch"] for h in history] == [1, 2]
    assert "\r" not in r.stderr and "epoch 1/2: mean loss" in r.stdout, r.stderr[-500:]
    for mAP, epoch in re.findall(r"best mAP so far: ([\d.]+) \(epoch (\d+)\)", r.stdout):
        assert abs(history[int(epoch) - 1]["mAP"] * 100 - float(mAP)) < 0.01  # log == history
    assert r.stdout.strip().splitlines()[-1].startswith(f"checkpoints in {run}/")
