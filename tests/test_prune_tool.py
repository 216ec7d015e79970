"""slim/prune/prune.py: ratio choices, FLOPs targets, pruned checkpoints used by the tools."""
import os
import pickle
import subprocess
import sys

import pytest

from ppdet.core.config import load_config
from ppdet.engine.builder import build_model
from ppdet.engine.checkpoint import load_weights
from ppdet.slim.pipelines.prune import choose_ratios
from ppdet.slim.pipelines.requests import PruneRequest
from ppdet.slim.prune.pruner import FilterPruner, model_flops
from ppdet.slim.prune.ratios import align_ratios
from ppdet.utils.cli import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = os.path.join(ROOT, "configs/shapes/yolov3_mobilenet_v1_shapes.yml")
SIZE = [160, 160]


def _run(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_prune_then_eval_and_export_without_repeating_ratios(tmp_path, trained):
    save = str(tmp_path)
    r = _run("slim/prune/prune.py", "-c", CFG, "-o", f"weights={trained}", f"save_dir={save}",
             "--pruned_params", "yolo_block.0.0.0.conv.weights,conv6_sep_weights",
             "--pruned_ratios", "0.5", "--no_finetune")
    assert r.returncode == 0, r.stderr
    assert "FLOPs" in r.stdout and "| yolo_block.0.0.0.conv.weights | 128 | 64 |" in r.stdout
    pruned = os.path.join(save, "yolov3_mobilenet_v1_shapes_pruned", "pruned")
    r = _run("tools/eval.py", "-c", CFG, "-o", f"weights={pruned}", "EvalDataset.sample_num=16")
    assert r.returncode == 0, r.stderr
    assert "mAP(0.50, 11point)" in r.stdout
    r = _run("tools/export_model.py", "-c", CFG, "-o", f"weights={pruned}", "--output_dir",
             str(tmp_path / "exp"))
    assert r.returncode == 0, r.stderr
    model = build_model(load_config(CFG))
    load_weights(model, pruned)
    shapes = {p.name: p.shape for p in model.parameters()}
    assert shapes["yolo_block.0.0.0.conv.weights"][0] == 64
    assert shapes["conv6_dw_weights"][0] == 256                    # fed by conv5_6_sep: intact
    assert shapes["yolo_block.0.0.0.conv.weights"][1] == 128       # conv6_sep lost half


def test_uniform_ratio_meets_the_flops_target():
    model = build_model(load_config(CFG))
    names = "conv[2-5]_[1-6]_sep_weights"
    ratios, how = choose_ratios(model, SIZE, PruneRequest(pruned_params=names, target_ratio=0.2))
    assert len(set(ratios.values())) == 1 and len(ratios) == 12
    base = model_flops(model, SIZE)
    FilterPruner(model).prune(ratios)
    assert abs((1 - model_flops(model, SIZE) / base) - 0.2) <= 0.01


def test_flops_target_from_sensitivities(tmp_path):
    model = build_model(load_config(CFG))
    names = [p.name for p in model.parameters() if p.name.startswith("yolo_block")
             and p.name.endswith("conv.weights")]
    sens = {n: {r / 10: (r / 10) ** (1 + i % 3) for r in range(1, 10)}
            for i, n in enumerate(names)}
    f = tmp_path / "s.data"
    f.write_bytes(pickle.dumps(sens))
    ratios, how = choose_ratios(model, SIZE,
                                PruneRequest(sensitivities_file=str(f), target_flops=0.3))
    base = model_flops(model, SIZE)
    FilterPruner(model).prune(ratios)
    assert abs((1 - model_flops(model, SIZE) / base) - 0.3) <= 0.01, how


def test_flops_target_below_what_a_zero_loss_threshold_removes(tmp_path):
    # a well-trained model: pruning several convs raises the mAP (negative losses) up to
    # 0.5, so threshold 0 alone removes more than 15% of the FLOPs
    model = build_model(load_config(CFG))
    names = [p.name for p in model.parameters() if p.name.startswith("yolo_block")
             and p.name.endswith("conv.weights")]
    sens = {n: {r / 10: (r / 10 - 0.5) * (0.01 + 0.01 * (i % 4)) for r in range(1, 10)}
            for i, n in enumerate(names)}
    f = tmp_path / "s.data"
    f.write_bytes(pickle.dumps(sens))
    base = model_flops(model, SIZE)
    ratios, how = choose_ratios(model, SIZE,
                                PruneRequest(sensitivities_file=str(f), target_flops=0.15))
    FilterPruner(model).prune(ratios)
    assert abs((1 - model_flops(model, SIZE) / base) - 0.15) <= 0.01, how
    assert "-" in how.split("loss threshold")[1].split()[0], how   # a negative threshold
    for empty in ({}, {names[0]: {}}):
        f.write_bytes(pickle.dumps(empty))
        with pytest.raises(UserError, match="holds no measurements"):
            choose_ratios(model, SIZE, PruneRequest(sensitivities_file=str(f), target_flops=0.15))


def test_align_rounds_kept_filters():
    model = build_model(load_config(CFG))
    r = align_ratios(model, {"yolo_block.0.0.0.conv.weights": 0.33}, 8)
    kept = 128 * (1 - r["yolo_block.0.0.0.conv.weights"])
    assert abs(kept - round(kept)) < 1e-6 and round(kept) % 8 == 0


@pytest.mark.parametrize("kwargs, message", [
    (dict(pruned_params="yolo_block.0.0.0.conv.weights", target_ratio=0.9), "cannot be met"),
    (dict(pruned_params="yolo_block.0.0.0.conv.weights", pruned_ratios="0.2,0.3"), "1 params"),
    (dict(pruned_params="conv6_dw_weights", pruned_ratios="0.2"), "conv5_6_sep_weights"),
    (dict(), "say what to prune"),
])
def test_bad_choices_are_errors(kwargs, message):
    with pytest.raises(UserError, match=message):
        choose_ratios(build_model(load_config(CFG)), SIZE, PruneRequest(**kwargs))


def test_sensitivity_file_missing_a_param(tmp_path):
    f = tmp_path / "s.data"
    f.write_bytes(pickle.dumps({"conv6_sep_weights": {0.1: 0.0}}))
    with pytest.raises(UserError, match="no measurements for 'yolo_block.0.tip"):
        choose_ratios(build_model(load_config(CFG)), SIZE,
                      PruneRequest(pruned_params="yolo_block.0.tip.conv.weights,conv6_sep_weights",
                      sensitivities_file=str(f), loss=0.1))


def test_ratio_that_empties_a_layer_writes_nothing(tmp_path, trained):
    r = _run("slim/prune/prune.py", "-c", CFG, "-o", f"weights={trained}",
             f"save_dir={tmp_path}", "--pruned_params", "yolo_transition.1.conv.weights",
             "--pruned_ratios", "0.99", "--no_finetune")
    assert r.returncode == 2 and "would empty" in r.stderr, r.stderr
    assert not os.listdir(tmp_path)


def test_fine_tuning_resumes_from_a_pruned_checkpoint(tmp_path, trained):
    small = ["TrainDataset.sample_num=16", "TrainReader.batch_size=8", "snapshot_epoch=1"]
    r = _run("slim/prune/prune.py", "-c", CFG, "-o", f"weights={trained}", f"save_dir={tmp_path}",
             "epoch=1", *small, "--pruned_params", "yolo_block.1.tip.conv.weights",
             "--pruned_ratios", "0.5")
    assert r.returncode == 0, r.stderr[-2000:]
    run_dir = tmp_path / "yolov3_mobilenet_v1_shapes_pruned"
    r = _run("slim/prune/prune.py", "-c", CFG, "-o", f"save_dir={tmp_path}", "epoch=2", *small,
             "-r", str(run_dir / "1"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "next epoch 2" in r.stdout
    model = build_model(load_config(CFG))
    load_weights(model, str(run_dir / "model_final"))
    shapes = {p.name: p.shape for p in model.parameters()}
    assert shapes["yolo_block.1.tip.conv.weights"][0] == 64    # still pruned (128 -> 64)
