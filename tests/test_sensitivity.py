"""slim/sensitive/sensitive.py end to end: seed command lines, resume after kill -9,
shards + merge, distributed launch, bad input."""
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import masked_setup

from ppdet.core.config import load_config
from ppdet.engine.builder import build_dataset, build_metric_for, build_model
from ppdet.engine.checkpoint import load_weights
from ppdet.slim.prune.pruner import FilterPruner
from ppdet.slim.sensitivity.analysis import CachedEvaluator
from ppdet.slim.sensitivity.cache import EvalCache
from ppdet.slim.sensitivity.store import load_sensitivities_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SENS_DIR = os.path.join(ROOT, "slim", "sensitive")
CFG_REL = "../../configs/shapes/yolov3_mobilenet_v1_shapes.yml"
CFG = os.path.join(ROOT, "configs/shapes/yolov3_mobilenet_v1_shapes.yml")
NECK = "yolo_transition.0.conv.weights,yolo_block.1.tip.conv.weights"
EVAL_N = "40"


def sensitive(*args, wait=True, env=None):
    cmd = [sys.executable, "sensitive.py", "-c", CFG_REL, *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=SENS_DIR, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env)
    return subprocess.run(cmd, cwd=SENS_DIR, capture_output=True, text=True, timeout=600,
                          env=env)


def test_print_params_needs_neither_dataset_nor_weights():
    r = sensitive("-o", "weights=/nowhere/model", "EvalDataset.dataset_dir=/nowhere",
                  "--print_params")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[0] == "conv1_weights"
    assert any(line.startswith("yolo_block.0.0.0.conv.weights") and "prunable" in line
               for line in lines)
    assert any(line.startswith("yolo_output.0.conv.weights") and "not prunable" in line
               for line in lines)


def test_seed_command_records_losses_of_really_pruned_models(tmp_path, trained):
    out = str(tmp_path / "demo.data")
    r = sensitive("-o", f"weights={trained}", "--pruned_params", NECK, "--pruned_ratios",
                  "0.3 0.7", "--sensitivities_file", out, "--eval_samples", EVAL_N)
    assert r.returncode == 0, r.stdout + r.stderr
    from paddleslim.prune import load_sensitivities
    sens = load_sensitivities(out)
    assert set(sens) == set(NECK.split(","))
    assert all(set(v) == {0.3, 0.7} for v in sens.values())
    # recompute one pair by hand: prune, evaluate, compare with what the tool recorded
    cfg = load_config(CFG)
    model = build_model(cfg)
    load_weights(model, trained)
    cache = EvalCache(build_dataset(cfg, "eval"), cfg["EvalReader"]["sample_transforms"],
                      max_samples=int(EVAL_N), progress=False)
    evaluator = CachedEvaluator(model, cache, build_metric_for(cfg, cache.dataset))
    base = evaluator()
    pruner = FilterPruner(model)
    name = "yolo_transition.0.conv.weights"
    pruner.prune({name: 0.7})
    pruned = evaluator()
    assert abs((base - pruned) / base - sens[name][0.7]) < 1e-6
    assert any(abs(v) > 0 for d in sens.values() for v in d.values())   # not all 0.0


def test_restart_after_kill_9_resumes_with_nothing_lost(tmp_path, trained):
    out = str(tmp_path / "s.data")
    params = "yolo_block.0.0.0.conv.weights,yolo_block.0.tip.conv.weights,conv6_sep_weights"
    args = ["-o", f"weights={trained}", "--pruned_params", params, "--pruned_ratios",
            "0.1 0.2 0.3 0.4 0.5", "--sensitivities_file", out, "--eval_samples", EVAL_N]
    proc = sensitive(*args, wait=False)
    deadline = time.time() + 300
    while time.time() < deadline:
        time.sleep(0.2)
        if os.path.exists(out) and sum(len(v) for v in load_sensitivities_file(out).values()) >= 2:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = load_sensitivities_file(out)          # loadable right after the kill
    n_done = sum(len(v) for v in done.values())
    assert 2 <= n_done < 15
    r = sensitive(*args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"resuming: {n_done} of 15" in r.stdout or f"resuming: {n_done + 1} of 15" in r.stdout
    assert "baseline mAP" in r.stdout and "from s.data.meta.json" in r.stdout
    final = load_sensitivities_file(out)
    assert sum(len(v) for v in final.values()) == 15
    for name, losses in done.items():             # nothing measured before was changed
        for ratio, loss in losses.items():
            assert final[name][ratio] == loss


@pytest.mark.long
def test_shards_merged_equal_a_single_run(tmp_path, trained):
    common = ["-o", f"weights={trained}", "--pruned_params", NECK, "--pruned_ratios",
              "0.2 0.5 0.8", "--eval_samples", EVAL_N]
    single = str(tmp_path / "single.data")
    assert sensitive(*common, "--sensitivities_file", single).returncode == 0
    parts = []
    for k in range(2):
        part = str(tmp_path / f"part{k}.data")
        r = sensitive(*common, "--sensitivities_file", part, "--shards", "2", "--shard_id",
                      str(k))
        assert r.returncode == 0, r.stdout + r.stderr
        parts.append(part)
    sizes = [sum(len(v) for v in load_sensitivities_file(p).values()) for p in parts]
    assert sizes == [3, 3]
    merged = str(tmp_path / "merged.data")
    r = subprocess.run([sys.executable, "merge.py", *parts, "-o", merged], cwd=SENS_DIR,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    a, b = load_sensitivities_file(single), load_sensitivities_file(merged)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].keys() == b[name].keys()
        np.testing.assert_allclose([a[name][k] for k in a[name]],
                                   [b[name][k] for k in a[name]], atol=1e-6)


def test_distributed_launch_two_workers_share_one_file(tmp_path, trained):
    out = str(tmp_path / "dist.data")
    env = dict(os.environ)
    r = subprocess.run(
        [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
         "--log_dir", str(tmp_path / "log"), "sensitive.py", "-c", CFG_REL,
         "-o", f"weights={trained}", "--pruned_params", NECK, "--pruned_ratios", "0.3 0.6",
         "--sensitivities_file", out, "--eval_samples", EVAL_N],
        cwd=SENS_DIR, capture_output=True, text=True, timeout=600, env=env)
    logs = "".join(open(os.path.join(tmp_path, "log", f)).read()
                   for f in os.listdir(tmp_path / "log") if f.startswith("workerlog"))
    assert r.returncode == 0, r.stdout + r.stderr + logs
    assert "shard 1/2" in logs and "shard 2/2" in logs
    data = load_sensitivities_file(out)
    assert sum(len(v) for v in data.values()) == 4


@pytest.mark.parametrize("args, message", [
    (["--pruned_params", "yolo_block.0.0.0.conv.weight"], "did you mean"),
    (["--pruned_params", "conv9_.*_weights|nothing"], "matches no conv"),
    (["--pruned_params", "conv3_1_dw_weights"], "conv2_2_sep_weights instead"),
    (["--pruned_params", "conv6_sep_weights", "--pruned_ratios", "0.5 1.5"], "outside (0, 1)"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "s.data"
    r = sensitive("-o", "weights=/nowhere/m", *args, "--sensitivities_file", str(out))
    assert r.returncode == 2
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not out.exists()


def test_foreign_file_is_refused_untouched(tmp_path, trained):
    out = tmp_path / "s.data"
    out.write_bytes(pickle.dumps({"conv1": [0.1, 0.2]}))
    before = out.read_bytes()
    r = sensitive("-o", f"weights={trained}", "--pruned_params", "conv6_sep_weights",
                  "--sensitivities_file", str(out), "--eval_samples", EVAL_N)
    assert r.returncode == 2 and "not a sensitivities file" in r.stderr, r.stderr
    assert out.read_bytes() == before


def test_fast_masked_evaluation_equals_real_pruning(trained):
    from ppdet.slim.sensitivity.fast_eval import MaskedEvaluator
    _, model, cache, metric, pruner = masked_setup(CFG, trained, 32)
    fast = MaskedEvaluator(model, cache, metric, pruner)
    real = CachedEvaluator(model, cache, metric)
    assert abs(fast() - real()) < 1e-9
    changed = 0
    for name in ("yolo_transition.1.conv.weights", "conv5_5_sep_weights",
                 "yolo_block.0.tip.conv.weights"):
        masked = fast({name: 0.6})
        pruner.prune({name: 0.6})
        really = real()
        pruner.restore()
        assert abs(masked - really) < 1e-6, name
        changed += masked != fast()
    assert changed >= 1          # pruning did change the mAP somewhere


def test_analyze_plots_and_prints_ratios_prune_accepts(tmp_path):
    names = ["yolo_block.0.0.0.conv.weights", "yolo_block.1.0.0.conv.weights",
             "yolo_block.2.tip.conv.weights", "conv6_sep_weights"]
    sens = {n: {r / 10: (r / 10) ** (1 + i) for r in range(1, 10)} for i, n in enumerate(names)}
    f = tmp_path / "s.data"
    f.write_bytes(pickle.dumps(sens))
    r = subprocess.run([sys.executable, "analyze.py", str(f), "--loss", "0.05"], cwd=SENS_DIR,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert os.path.getsize(tmp_path / "s.png") > 10000
    line = next(x for x in r.stdout.splitlines() if "--pruned_ratios" in x)
    assert "conv6_sep_weights" in line          # loss r**4 stays under 0.05 up to r ~ 0.47
    r = subprocess.run([sys.executable, "analyze.py", str(f), "--target_flops", "0.2", "-c",
                        CFG_REL], cwd=SENS_DIR, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "removes 19." in r.stdout or "removes 20." in r.stdout or "removes 21." in r.stdout


SEED_PARAMS = ",".join(f"yolo_block.{i}.{t}.conv.weights" for i in range(3)
                       for t in ("0.0", "0.1", "1.0", "1.1", "2", "tip"))


@pytest.mark.long
def test_seed_commands_as_written_split_by_ratio_then_merged(tmp_path, trained):
    """seed 000: the 18-conv analysis, then one conv split over two processes by ratio."""
    out = str(tmp_path / "demo.data")
    r = sensitive("-o", f"weights={trained}", "--pruned_params", SEED_PARAMS,
                  "--pruned_ratios", "0.5", "--sensitivities_file", out,
                  "--eval_samples", EVAL_N)
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(load_sensitivities_file(out)) == 18
    one = "yolo_block.0.0.0.conv.weights"
    procs = [sensitive("-o", f"weights={trained}", "--pruned_params", one, "--pruned_ratios",
                       ratios, "--sensitivities_file", str(tmp_path / f"demo.data.{k}"),
                       "--eval_samples", EVAL_N, wait=False)
             for k, ratios in ((1, "0.1 0.2 0.3 0.4 0.5"), (2, "0.6 0.7 0.8 0.9"))]
    for p in procs:
        assert p.wait(timeout=600) == 0, p.stdout.read()
    from paddleslim.prune import load_sensitivities, merge_sensitive
    merged = merge_sensitive([load_sensitivities(str(tmp_path / f"demo.data.{k}"))
                              for k in (1, 2)])
    assert sorted(merged[one]) == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    # the 0.5 measured in the first run and in the split run agree
    assert abs(merged[one][0.5] - load_sensitivities_file(out)[one][0.5]) < 1e-9
