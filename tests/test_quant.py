"""Post-training INT8 (ppdet.slim.quant, slim/quant/post_quant.py): the INT8 program holds
quantized convs and the pruned shapes, INT8 outputs agree with the fake-quant simulation,
the skip list keeps convs in FP32, and bad input is one line with files left intact.
Structure and numerics only, never times (CI may lack VNNI)."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml
from helpers import script, snapshot

from ppdet.core.config import load_config
from ppdet.engine import cpu_features as cpu
from ppdet.engine import legacy_ir
from ppdet.engine.builder import build_model
from ppdet.engine.checkpoint import load_weights, save_checkpoint
from ppdet.engine.export import Predictor, read_image
from ppdet.slim.quant.pipeline import QuantRequest, post_quant
from ppdet.utils.cli import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = os.path.join(ROOT, "configs/shapes/yolov3_mobilenet_v1_shapes.yml")
SMALL = ["EvalDataset.sample_num=16", "EvalReader.worker_num=0", "worker_num=0"]
PRUNED = {"yolo_block.0.0.0.conv.weights": 0.5, "conv6_sep_weights": 0.5,
          "yolo_block.1.tip.conv.weights": 0.25}
SKIP = ("conv1_weights", "yolo_output.0.conv.weights")


def _one_error_line(capsys, excinfo, *needles):
    assert excinfo.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:"), err
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]


@pytest.fixture(scope="module")
def pruned(tmp_path_factory, trained):
    """A pruned checkpoint of the trained tiny YOLOv3 (its plan saved in it) and its conv
    weight shapes."""
    cfg = load_config(CFG, SMALL)
    model = build_model(cfg)
    load_weights(model, trained)
    from ppdet.slim.prune.pruner import FilterPruner
    pruner = FilterPruner(model)
    pruner.prune(PRUNED)
    pruner.drop_backups()
    folder = tmp_path_factory.mktemp("pruned") / "yolov3_mobilenet_v1_shapes_pruned"
    folder.mkdir()
    path = str(folder / "model_final")
    save_checkpoint(model, path)
    shapes = {p.name: list(p.shape) for p in model.parameters() if len(p.shape) == 4}
    return path, shapes


@pytest.fixture(scope="module")
def int8(tmp_path_factory, pruned):
    """post_quant of the pruned checkpoint (8 calibration images, abs_max, with mAPs)."""
    out = tmp_path_factory.mktemp("int8")
    cfg = load_config(CFG, SMALL)
    result = post_quant(QuantRequest(cfg, pruned[0], output_dir=str(out), algo="abs_max",
                                     calib_samples=8, calib_batch_size=4))
    return cfg, result


def test_int8_program_holds_quantized_convs_and_the_pruned_shapes(int8, pruned):
    cfg, result = int8
    _, shapes = pruned
    reference = build_model(load_config(CFG))
    full = {p.name: list(p.shape) for p in reference.parameters() if len(p.shape) == 4}
    assert os.path.basename(result.out_dir) == "yolov3_mobilenet_v1_shapes_pruned_int8"
    assert sorted(os.listdir(result.out_dir)) == ["infer_cfg.yml", "model.pdiparams",
                                                  "model.pdmodel"]
    with open(os.path.join(result.out_dir, "infer_cfg.yml")) as f:
        infer_cfg = yaml.safe_load(f)
    assert infer_cfg["precision"] == "int8"
    assert infer_cfg["quantization"]["algo"] == "abs_max"
    assert infer_cfg["quantization"]["calib_samples"] == 8
    # every conv of the saved INT8 program has the pruned model's weight shape ...
    got = legacy_ir.conv_weight_shapes(result.out_dir)
    assert got == shapes
    assert got["yolo_block.0.0.0.conv.weights"][0] == full["yolo_block.0.0.0.conv.weights"][0] // 2
    assert sum(got[n] != full[n] for n in got) >= 4          # the cuts, and their consumers
    # ... and is fed through a quantize/dequantize pair
    convs, counts = legacy_ir.quantized_ops(result.out_dir)
    assert sorted(convs) == sorted(shapes)
    assert counts.get("quantize_linear", 0) > 0 and counts.get("dequantize_linear", 0) > 0
    # INT8 weights: the parameters file is well under the FP32 size (4 bytes a weight)
    fp32_bytes = 4 * sum(int(np.prod(s)) for s in shapes.values())
    assert os.path.getsize(os.path.join(result.out_dir, "model.pdiparams")) < 0.5 * fp32_bytes
    # the staging folder is gone
    assert [n for n in os.listdir(os.path.dirname(result.out_dir)) if n.startswith(".")] == []


def test_oneDNN_runs_the_convs_in_int8(int8, tmp_path):
    """What Paddle Inference actually runs: the quant ops folded into INT8 convs."""
    from collections import Counter

    from paddle import inference
    _, result = int8
    config = inference.Config(os.path.join(result.out_dir, "model.pdmodel"),
                              os.path.join(result.out_dir, "model.pdiparams"))
    config.disable_gpu()
    legacy_ir.configure_predictor(config, "int8")
    config.disable_glog_info()
    config.enable_save_optim_model(True)
    config.set_optim_cache_dir(str(tmp_path))
    inference.create_predictor(config)
    program = legacy_ir.read_program(str(tmp_path / "_optimized.pdmodel"))
    block = program.block(0)
    ops = [block.op(i) for i in range(block.op_size())]
    types = Counter(op.type() for op in ops)
    assert types["quantize_linear"] == 0 and types["dequantize_linear"] == 0
    int8_convs = [op for op in ops if op.type() == "fused_conv2d"
                  and op.has_attr("mkldnn_data_type") and op.attr("mkldnn_data_type") == "int8"]
    assert len(int8_convs) == len(result.quantized_convs), types     # every one of them


def _heads(predictor, images):
    return [predictor.predict_image(read_image(f), raw=True) for f in images]


def _rel_l2(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_int8_outputs_agree_with_the_fake_quant_simulation(int8, tmp_path):
    """oneDNN's INT8 kernels against the same quantized program run in FP32 (the fake-quant
    ops simulating the rounding). They cannot agree bit for bit: oneDNN requantizes between
    fused ops (conv + BN + leaky_relu as one INT8 op, outputs rounded to u8/s8 with their own
    scale), where the simulation rounds only the conv inputs. Measured on the tiny model (4
    images x 3 heads): a relative L2 difference of 0.06-0.20 per head output, the same size
    as the quantization error itself (simulation vs FP32: 0.05-0.14; INT8 vs FP32 0.03-0.17).
    So: INT8 must be within 0.25 of the
    simulation (relative L2) and no further from it than twice the simulation's own
    distance from FP32 plus 0.05; the same detections lead (top class and box)."""
    _, result = int8
    images = [os.path.join(ROOT, f"dataset/shapes/voc/JPEGImages/val_{i:05d}.jpg")
              for i in range(4)]
    real = _heads(Predictor(result.out_dir), images)
    sim = _heads(Predictor(result.out_dir, simulate_int8=True), images)
    for (b_int8, _, h_int8), (b_sim, _, h_sim) in zip(real, sim):
        assert [h.shape for h in h_int8] == [h.shape for h in h_sim] and len(h_int8) == 3
        for a, b in zip(h_int8, h_sim):
            assert _rel_l2(a, b) < 0.25
    # against the FP32 program the INT8 one was calibrated from: same order of error
    fp32_dir = tmp_path / "fp32"
    cfg = load_config(CFG, SMALL)
    model = build_model(cfg)
    load_weights(model, _weights_of(result))
    from ppdet.engine.export import export_model
    export_model(model, cfg, str(fp32_dir), list("abcd"))
    fp32 = _heads(Predictor(str(fp32_dir)), images)
    for (_, _, h_int8), (_, _, h_sim), (b_fp, _, h_fp) in zip(real, sim, fp32):
        for a, s, f in zip(h_int8, h_sim, h_fp):
            assert _rel_l2(a, s) <= 2 * _rel_l2(s, f) + 0.05
    # the strongest detection of each image: same class, box within 10% of the image
    for path, (b_int8, _, _), (b_sim, _, _) in zip(images, real, sim):
        top_int8, top_sim = b_int8[np.argmax(b_int8[:, 1])], b_sim[np.argmax(b_sim[:, 1])]
        if top_sim[1] > 0.3:
            assert top_int8[0] == top_sim[0]
            side = max(read_image(path).shape[:2])
            assert np.abs(top_int8[2:] - top_sim[2:]).max() < 0.1 * side


def _weights_of(result):
    with open(os.path.join(result.out_dir, "infer_cfg.yml")) as f:
        return yaml.safe_load(f)["quantization"]["weights"]


def test_post_quant_reports_fp32_and_int8_map(int8):
    _, result = int8
    assert result.metric == "mAP(0.50, 11point)"
    assert result.fp32_map > 1.0                  # a trained model: real detections scored
    assert abs(result.int8_map - result.fp32_map) < 10.0


def test_skip_list_keeps_the_named_convs_in_fp32(pruned, tmp_path, capsys):
    main = script("slim/quant/post_quant.py").main
    result = main(["-c", CFG, "-o", f"weights={pruned[0]}", *SMALL, "--calib_samples", "8",
                   "--calib_batch_size", "8", "--algo", "avg", "--output_dir", str(tmp_path),
                   "--skip", *SKIP])
    out = capsys.readouterr().out
    assert "| FP32 (predictor) |" in out and "| INT8 (predictor) |" in out
    convs, _ = legacy_ir.quantized_ops(result.out_dir)
    assert set(SKIP).isdisjoint(convs)
    assert len(convs) == len(pruned[1]) - len(SKIP)
    # the FP32 convs read their weights directly, as in the FP32 export
    assert set(SKIP) <= set(legacy_ir.conv_weight_shapes(result.out_dir))
    with open(os.path.join(result.out_dir, "infer_cfg.yml")) as f:
        assert yaml.safe_load(f)["quantization"]["fp32_convs"] == list(SKIP)


# --- deployment that cannot fall into the slow trap ---------------------------------------
def test_int8_model_refused_where_it_would_run_in_fp32(int8, tmp_path, capsys):
    _, result = int8
    before = snapshot(result.out_dir)
    with pytest.raises(UserError, match="INT8"):
        Predictor(result.out_dir, use_mkldnn=False)
    from ppdet.engine.latency import measure_latency
    with pytest.raises(UserError, match="oneDNN"):
        measure_latency(result.out_dir, [160, 160], use_mkldnn=False, warmup=0, repeats=1)
    infer = script("deploy/python/infer.py").main
    image = os.path.join(ROOT, "dataset/shapes/voc/JPEGImages/val_00000.jpg")
    with pytest.raises(SystemExit) as e:
        infer(["--model_dir", result.out_dir, "--image_file", image, "--output_dir",
               str(tmp_path / "drawn"), "--no_mkldnn"])
    _one_error_line(capsys, e, "INT8", "oneDNN")
    assert not (tmp_path / "drawn").exists()
    assert snapshot(result.out_dir) == before
    # with oneDNN it runs, and says so
    infer(["--model_dir", result.out_dir, "--image_file", image, "--output_dir",
           str(tmp_path / "drawn")])
    assert "precision: int8" in capsys.readouterr().out


def test_unknown_precision_and_missing_infer_cfg(int8, tmp_path, capsys):
    _, result = int8
    bad = tmp_path / "bad"
    shutil.copytree(result.out_dir, bad)
    with open(bad / "infer_cfg.yml") as f:
        infer_cfg = yaml.safe_load(f)
    infer_cfg["precision"] = "int4"
    with open(bad / "infer_cfg.yml", "w") as f:
        yaml.safe_dump(infer_cfg, f)
    with pytest.raises(UserError, match="precision 'int4'"):
        Predictor(str(bad))
    os.remove(bad / "infer_cfg.yml")
    before = snapshot(bad)
    infer = script("deploy/python/infer.py").main
    image = os.path.join(ROOT, "dataset/shapes/voc/JPEGImages/val_00000.jpg")
    with pytest.raises(SystemExit) as e:
        infer(["--model_dir", str(bad), "--image_file", image, "--output_dir",
               str(tmp_path / "drawn")])
    _one_error_line(capsys, e, "infer_cfg.yml")
    with pytest.raises(UserError, match="infer_cfg.yml"):
        Predictor(str(bad))
    from ppdet.slim.quant.evaluation import exported_map
    with pytest.raises(UserError, match="infer_cfg.yml"):
        exported_map(load_config(CFG, SMALL), str(bad))
    assert snapshot(bad) == before


def test_cpu_features_and_advice(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni amx_int8\n")
    assert cpu.cpu_flags(str(info)) >= {"avx512_vnni", "amx_int8"}
    assert cpu.cpu_flags(str(tmp_path / "absent")) == set()
    assert cpu.cpu_features({"avx2", "amx_int8", "sse"}) == ["amx_int8", "avx2"]
    line, pays = cpu.int8_advice(["avx512_vnni", "avx512f", "avx2"])
    assert pays and "avx512_vnni" in line and not line.startswith("warning")
    line, pays = cpu.int8_advice(["avx512f", "avx2"])
    assert not pays and line.startswith("warning") and "no VNNI" in line
    line, pays = cpu.int8_advice(["avx2"])
    assert not pays and "not be faster" in line
    line, pays = cpu.int8_advice([])
    assert not pays and "none of" in line


# --- the legacy IR stays in its child process ---------------------------------------------
def test_quantize_refuses_a_pir_process_and_the_child_needs_the_flag(tmp_path):
    calib = {"image": np.zeros((8, 3, 160, 160), "float32")}
    with pytest.raises(RuntimeError, match="FLAGS_enable_pir_api=0"):
        legacy_ir.quantize(str(tmp_path), str(tmp_path / "out"), calib, "abs_max", 8)
    assert legacy_ir.pir_disabled() is False          # this (the training) process: PIR on
    assert legacy_ir.child_env({"A": "1"}) == {"A": "1", "FLAGS_enable_pir_api": "0"}
    env = {k: v for k, v in os.environ.items() if k != "FLAGS_enable_pir_api"}
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"algo": "abs_max", "jobs": [
        {"fp32_dir": str(tmp_path), "out_dir": str(tmp_path / "out"),
         "calib": str(tmp_path / "c.npz"), "batch_size": 8}]}))
    r = subprocess.run([sys.executable, "-m", "ppdet.engine.legacy_ir", str(spec)], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().startswith("error:")
    assert "FLAGS_enable_pir_api=0" in r.stderr
    assert not (tmp_path / "out").exists()


def test_the_childs_bad_input_comes_back_as_one_line(tmp_path):
    """The one launcher: a UserError raised in the child (here: fewer calibration samples
    than one batch) is a UserError here with the child's line, and nothing is written."""
    np.savez(tmp_path / "c.npz", image=np.zeros((3, 3, 32, 32), "float32"))
    job = {"fp32_dir": str(tmp_path), "out_dir": str(tmp_path / "out"),
           "calib": str(tmp_path / "c.npz"), "batch_size": 8}
    with pytest.raises(UserError, match="3 calibration samples are fewer than one batch of 8"):
        legacy_ir.quantize_programs([job])
    assert not (tmp_path / "out").exists()
    assert legacy_ir.quantize_programs([]) == []


# --- bad input: one line, exit 2, nothing written, nothing changed ------------------------
@pytest.fixture
def existing(tmp_path, pruned):
    """An output folder holding a previous INT8 model (fake files) that must survive."""
    out = tmp_path / "out"
    prev = out / "yolov3_mobilenet_v1_shapes_pruned_int8"
    prev.mkdir(parents=True)
    for name in ("model.pdmodel", "model.pdiparams", "infer_cfg.yml"):
        (prev / name).write_bytes(name.encode())
    return out


def _empty_list(tmp_path, lines=()):
    """A TrainDataset list file (absolute path: VOC joins it to dataset_dir)."""
    path = tmp_path / "train_list.txt"
    path.write_text("".join(f"{ln}\n" for ln in lines))
    return str(path)


@pytest.mark.parametrize("extra, needles", [
    (["--algo", "percentile"], ["--algo", "percentile"]),
    (["--calib_samples", "4"], ["--calib_samples 4", "one batch"]),
    (["--calib_samples", "0"], ["--calib_samples 0"]),
    (["-o", "TrainDataset.sample_num=5"], ["5 images", "one batch of 8"]),
    ("EMPTY", ["calibration set", "0 images"]),
    (["--skip", "no_such_conv"], ["--skip", "no_such_conv"]),
    (["-o", "weights=/nonexistent/model_final"], ["/nonexistent/model_final"]),
])
def test_bad_input_is_one_line_and_leaves_files_intact(extra, needles, pruned, existing,
                                                        tmp_path, capsys):
    weights_dir = os.path.dirname(pruned[0])
    before, weights_before = snapshot(str(existing)), snapshot(weights_dir)
    if extra == "EMPTY":
        extra = ["-o", f"TrainDataset.anno_path={_empty_list(tmp_path)}"]
    main = script("slim/quant/post_quant.py").main
    with pytest.raises(SystemExit) as e:
        main(["-c", CFG, "-o", f"weights={pruned[0]}", *SMALL, "--output_dir", str(existing),
              "--calib_samples", "8", "--calib_batch_size", "8", "--algo", "abs_max", *extra])
    _one_error_line(capsys, e, *needles)
    assert snapshot(str(existing)) == before
    assert sorted(os.listdir(existing)) == ["yolov3_mobilenet_v1_shapes_pruned_int8"]
    assert snapshot(weights_dir) == weights_before


def test_report_gains_int8_rows(pruned, tmp_path, capsys):
    main = script("slim/prune/report.py").main
    out = tmp_path / "report.md"
    main(["-c", CFG, "-o", *SMALL, "--models", f"pruned={pruned[0]}", "--int8",
          "--calib_samples", "8", "--algo", "abs_max", "--output", str(out)])
    lines = out.read_text().strip().splitlines()
    assert len(lines) == 4 and lines[2].startswith("| pruned |")
    assert lines[3].startswith("| pruned INT8 |")
    fp32, int8 = lines[2].split("|"), lines[3].split("|")
    assert fp32[3:5] == int8[3:5]                       # params, FLOPs: the same shapes
    assert float(int8[5]) < 0.5 * float(fp32[5])        # size (MB)
    assert float(int8[2]) > 1.0                         # a real mAP, through the predictor


# --- item 4: quantization sensitivity, resumable; --max_loss keeps the fewest convs FP32 ---
class _FakeSens:
    """``int8_map(skip)``: FP32 mAP 50, all-INT8 44; each conv kept FP32 buys back its
    ``value``; records every skip list asked for."""

    def __init__(self, values):
        self.values, self.asked = values, []

    def int8_map(self, skip):
        self.asked.append(list(skip))
        return 44.0 + sum(self.values[c] for c in skip)


def _fake_data(values):
    return {"fp32": 50.0, "int8": 44.0,
            "convs": {c: {"gain": v, "loss": 0.0} for c, v in values.items()}}


def test_choose_fp32_keeps_the_fewest_convs_largest_gain_first():
    from ppdet.slim.quant.sensitivity import choose_fp32
    values = {"a": 0.5, "b": 4.0, "c": 1.5, "d": 0.0}
    sens = _FakeSens(values)
    skip, got = choose_fp32(sens, _fake_data(values), max_loss=1.0, log=lambda *a: None)
    assert skip == ["b", "c"] and got == 49.5           # 44 + 4 = 48 < 49, then + 1.5
    assert sens.asked == [["b"], ["b", "c"]]             # each step measured
    skip, got = choose_fp32(_FakeSens(values), _fake_data(values), max_loss=6.0)
    assert skip == [] and got == 44.0                    # all-INT8 is within the budget
    unreachable = {**_fake_data(values), "fp32": 52.0}   # every conv FP32 gives 50 only
    with pytest.raises(UserError, match="no skip list"):
        choose_fp32(_FakeSens(values), unreachable, max_loss=1.0, log=lambda *a: None)


def test_sensitivity_file_resumes_and_refuses_another_measurement(trained, tmp_path, capsys):
    main = script("slim/quant/post_quant.py").main
    sens = tmp_path / "quant_sens.json"
    convs = ["yolo_output.0.conv.weights", "conv1_weights"]
    base = ["-c", CFG, "-o", f"weights={trained}", "EvalDataset.sample_num=8",
            "EvalReader.worker_num=0", "--calib_samples", "8", "--algo", "abs_max",
            "--sensitivities_file", str(sens), "--output_dir", str(tmp_path / "out")]
    main([*base, "--sensitive_convs", convs[0]])
    first = json.loads(sens.read_text())
    assert list(first["convs"]) == [convs[0]]
    entry = first["convs"][convs[0]]
    assert entry["gain"] == pytest.approx(entry["kept_fp32"] - first["int8"])
    assert entry["loss"] == pytest.approx(first["fp32"] - entry["only_quantized"])
    capsys.readouterr()
    main([*base, "--sensitive_convs", *convs])           # resumes: only the new conv is run
    out = capsys.readouterr().out
    assert convs[0] + ":" not in out and f"[2/2] {convs[1]}:" in out
    second = json.loads(sens.read_text())
    assert second["convs"][convs[0]] == entry and set(second["convs"]) == set(convs)
    assert not (tmp_path / "out").exists()               # measuring alone writes no model
    before = sens.read_bytes()
    with pytest.raises(SystemExit) as e:                 # measured for abs_max, asked avg
        main([*base[:-6], "--algo", "avg", *base[-4:], "--sensitive_convs", *convs])
    _one_error_line(capsys, e, "algo")
    assert sens.read_bytes() == before
    with pytest.raises(SystemExit) as e:
        main([*base, "--max_loss", "1", "--skip", "conv1_weights"])
    _one_error_line(capsys, e, "--skip and --max_loss")
    assert sens.read_bytes() == before


def test_ssd_int8_that_onednn_cannot_run_says_deploy_in_fp32(tmp_path, capsys, shapes_root):
    """Paddle 3.3.1's oneDNN INT8 passes refuse MobileNetV1-SSD's graph (a requantize left
    before an op without a scale): one line naming it and the way out, not "export again"."""
    ssd = os.path.join(ROOT, "configs/shapes/ssd_mobilenet_v1_shapes.yml")
    weights = str(tmp_path / "ssd" / "model")
    save_checkpoint(build_model(load_config(ssd)), weights)
    from ppdet.slim.quant.pipeline import int8_folder_name
    prev = tmp_path / "out" / int8_folder_name(load_config(ssd), weights)   # kept as it was
    prev.mkdir(parents=True)
    (prev / "model.pdmodel").write_bytes(b"previous")
    before = snapshot(str(tmp_path / "out"))
    main = script("slim/quant/post_quant.py").main
    with pytest.raises(SystemExit) as e:      # --no_eval: refused before the folder is replaced
        main(["-c", ssd, "-o", f"weights={weights}", *SMALL, "--calib_samples", "8",
              "--calib_batch_size", "8", "--output_dir", str(tmp_path / "out"), "--no_eval"])
    line = _one_error_line(capsys, e, "cpu_quantize_squash_pass", "deploy it in FP32")
    assert "export the model again" not in line
    assert snapshot(str(tmp_path / "out")) == before
