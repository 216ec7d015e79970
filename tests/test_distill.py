"""Distillation (issue 25): the teacher stays frozen, the losses measure student-teacher
distance, bad teachers are refused in one line before training, and a distilled run
resumes exactly. Tiny models (width 0.25) on 96-128 px shapes, untrained weights saved to
tmp_path: nothing here needs the trained fixture."""
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest
from helpers import (
    ROOT,
    assert_one_error_line,
    assert_same_checkpoint,
    assert_unchanged,
    launch_ddp_checksum,
    script,
    small_train,
    snapshot,
)

from ppdet.core.config import load_config
from ppdet.engine import checkpoint as ckpt
from ppdet.engine.builder import build_model
from ppdet.engine.distill import Distillation, TeacherSpec, build_teacher

CFG = os.path.join(ROOT, "configs/shapes/yolov3_mobilenet_v1_shapes.yml")
SSD_CFG = os.path.join(ROOT, "configs/shapes/ssd_mobilenet_v1_shapes.yml")
SMALL = small_train(16)


def _weights(tmp_path, name, config=CFG, seed=0, opts=()):
    """An untrained model of ``config`` saved as this toolkit's checkpoint (no suffix)."""
    paddle.seed(seed)
    path = str(tmp_path / name)
    ckpt.save_checkpoint(build_model(load_config(config, list(opts))), path)
    return path


def _state(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("config, opts", [
    (CFG, SMALL), (SSD_CFG, ["TrainDataset.sample_num=16", "TrainReader.worker_num=0"])],
    ids=["yolov3", "ssd"])
def test_teacher_never_changes_and_its_loss_is_logged_apart(tmp_path, shapes_root, config,
                                                            opts):
    from ppdet.engine.trainer import Trainer
    cfg = load_config(config, opts + ["epoch=1", f"save_dir={tmp_path / 'out'}"])
    spec = TeacherSpec(_weights(tmp_path, "t", config, seed=1) + ".pdparams", None, None)
    teacher = build_teacher(spec, cfg)
    before = _state(teacher)
    student = build_model(cfg)
    trainer = Trainer(cfg, model=student, hooks=[Distillation(teacher, student, spec)])
    start = _state(student)
    logs = []
    step = trainer.run_step
    trainer.run_step = lambda batch: logs.append(step(batch)) or logs[-1]
    trainer.train()
    after = _state(teacher)
    assert before.keys() == after.keys()
    for k in before:                  # parameters and BN statistics alike
        np.testing.assert_array_equal(before[k], after[k], err_msg=k)
    assert not teacher.training and all(p.stop_gradient for p in teacher.parameters())
    assert student.distill is None            # taken off after training
    assert any(not np.array_equal(start[k], v) for k, v in _state(student).items())
    assert not set(id(p) for p in teacher.parameters()) & set(id(p) for p in
                                                               student.parameters())
    assert len(logs) == 2
    for log in logs:                  # total = detection + weighted distillation
        assert log["loss_distill"] > 0
        assert log["loss"] == pytest.approx(log["loss_det"] + log["loss_distill"], rel=1e-5)
    meta = paddle.load(str(tmp_path / "out" / cfg["filename"] /
                           "model_final.pdparams"))[ckpt.META_KEY]
    assert meta["distill"]["weights"] == spec.weights and meta["distill"]["config"] is None


def test_a_failed_training_still_takes_the_teacher_off(tmp_path, shapes_root):
    """The after_train hooks run when a step raises: the student does not keep a teacher
    (and its memory) for the evaluation or export that a caller may still run."""
    from ppdet.engine.trainer import Trainer
    cfg = load_config(CFG, SMALL + ["epoch=1", f"save_dir={tmp_path / 'out'}"])
    spec = TeacherSpec(_weights(tmp_path, "t", seed=1) + ".pdparams", None, None)
    student = build_model(cfg)
    trainer = Trainer(cfg, model=student,
                      hooks=[Distillation(build_teacher(spec, cfg), student, spec)])
    seen = []

    def fail(batch):
        seen.append(student.distill)
        raise RuntimeError("out of memory")
    trainer.run_step = fail
    with pytest.raises(RuntimeError, match="out of memory"):
        trainer.train()
    assert seen and seen[0] is not None     # it was distilling when the step failed
    assert student.distill is None


@pytest.mark.parametrize("config, options", [(CFG, {}), (CFG, {"obj_target": "soft"}),
                                             (SSD_CFG, {})],
                         ids=["yolov3", "yolov3_soft_objectness", "ssd"])
def test_loss_is_zero_for_the_teacher_itself_and_grows_with_the_difference(config, options):
    paddle.seed(0)
    model = build_model(load_config(config))
    model.eval()
    with paddle.no_grad():
        outs = model.head_outputs(paddle.randn([2, 3, 96, 96]))
    gt = np.zeros([2, 20, 4], "float32")
    gt[:, 0] = [0.1, 0.1, 0.5, 0.6]          # normalised x1y1x2y2: SSD matches priors to it
    inputs = {"gt_bbox": paddle.to_tensor(gt)}
    loss = type(model.head).distill_loss(**options)
    assert float(loss(outs, outs, model.head, inputs)) == pytest.approx(0, abs=1e-6)
    noise = [paddle.randn(o.shape) for o in outs]
    values = [float(loss([o + s * n for o, n in zip(outs, noise)], outs, model.head, inputs))
              for s in (0.1, 0.5, 2.0)]
    assert 0 < values[0] < values[1] < values[2], values


def test_yolov3_loss_reduces_as_paddledetection_does():
    """Per level: mean over cells and anchors of (x + y + w + h) x teacher objectness, the
    class term's mean over classes too, plus the objectness hinge; summed over the levels.
    Written out in numpy from the formula, on two levels of random outputs."""
    from types import SimpleNamespace

    from ppdet.modeling.losses.distill_loss import DistillYOLOv3Loss
    rng = np.random.RandomState(0)
    head = SimpleNamespace(anchor_masks=[[0, 1], [2]], num_classes=3)
    shapes = [[2, 2 * 8, 3, 3], [2, 8, 5, 5]]
    s_outs = [rng.normal(0, 2, sh).astype("float32") for sh in shapes]
    t_outs = [rng.normal(0, 2, sh).astype("float32") for sh in shapes]

    def bce(x, p):
        return np.maximum(x, 0) - x * p + np.log1p(np.exp(-np.abs(x)))

    def sig(x):
        return 1 / (1 + np.exp(-x))

    expected = 0.
    for s, t, mask in zip(s_outs, t_outs, head.anchor_masks):
        b, _, h, w = s.shape
        s, t = s.reshape(b, len(mask), 8, h, w), t.reshape(b, len(mask), 8, h, w)
        soft = lambda i: bce(s[:, :, i], sig(t[:, :, i])) - bce(t[:, :, i], sig(t[:, :, i]))
        obj = sig(t[:, :, 4])
        box = soft(0) + soft(1) + np.abs(s[:, :, 2] - t[:, :, 2]) + np.abs(s[:, :, 3] - t[:, :, 3])
        cls = np.stack([soft(5 + c) for c in range(3)], axis=2) * obj[:, :, None]
        hard = (t[:, :, 4] > 0).astype("float32")
        objness = np.maximum(bce(s[:, :, 4], hard) - bce(t[:, :, 4], hard), 0)
        expected += (box * obj).mean() + cls.mean() + objness.mean()
    got = DistillYOLOv3Loss()([paddle.to_tensor(x) for x in s_outs],
                              [paddle.to_tensor(x) for x in t_outs], head)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def _teacher_config(tmp_path, body):
    path = tmp_path / "teacher.yml"
    path.write_text(f"_BASE_: ['{CFG}']\n{body}\n")
    return str(path)


@pytest.mark.parametrize("body, opts, words", [
    ("num_classes: 5", ["num_classes=5"], ["class count: 5, the student's: 4"]),
    ("YOLOv3Head:\n  anchor_masks: [[4, 5, 6, 7, 8], [2, 3], [0, 1]]",
     ["YOLOv3Head.anchor_masks=[[4, 5, 6, 7, 8], [2, 3], [0, 1]]"], ["anchor masks"]),
    (None, None, ["SSDHead", "YOLOv3Head"]),
], ids=["classes", "anchor_masks", "ssd_head"])
def test_teacher_of_other_classes_or_layout_is_refused_before_training(
        tmp_path, capsys, shapes_root, body, opts, words):
    if body is None:                     # an SSD teaching a YOLOv3
        tcfg, tw = SSD_CFG, _weights(tmp_path, "t", config=SSD_CFG)
    else:
        tcfg = _teacher_config(tmp_path, body)
        tw = _weights(tmp_path, "t", opts=opts)
    before = snapshot(str(tmp_path))
    with pytest.raises(SystemExit) as e:
        script("tools/train.py").main(["-c", CFG, "-o", *SMALL, f"save_dir={tmp_path / 'out'}",
                                       "--teacher_config", tcfg, "--teacher_weights", tw])
    assert e.value.code == 2
    assert_one_error_line(capsys.readouterr().err, ["cannot teach" if body else "head",
                                                    *words])
    assert_unchanged(before, snapshot(str(tmp_path)))


def test_prune_refuses_a_bad_teacher_before_pruning(tmp_path, shapes_root):
    weights = _weights(tmp_path, "w")
    tw = _weights(tmp_path, "t", opts=["num_classes=5"])
    tcfg = _teacher_config(tmp_path, "num_classes: 5")
    before = snapshot(str(tmp_path))
    r = subprocess.run([sys.executable, "slim/prune/prune.py", "-c", CFG, "-o",
                        f"weights={weights}", f"save_dir={tmp_path / 'out'}", "epoch=1", *SMALL,
                        "-p", "yolo_block.0.*", "--pruned_ratios", "0.5",
                        "--teacher_config", tcfg, "--teacher_weights", tw],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert_one_error_line(r.stderr, ["cannot teach", "class count"])
    assert_unchanged(before, snapshot(str(tmp_path)))     # no pruned.pdparams either


TRAIN, PRUNE, SLIM = "tools/train.py", "slim/prune/prune.py", "slim/prune/slim_prune.py"


@pytest.mark.parametrize("tool, folder", [(TRAIN, "yolov3_mobilenet_v1_shapes"),
                                          (PRUNE, "yolov3_mobilenet_v1_shapes_pruned")])
def test_a_teacher_in_the_runs_output_folder_is_refused_before_it_loads(tmp_path, tool,
                                                                        folder):
    """Its snapshots would overwrite the teacher (and -r would then refuse the changed
    teacher): refused in one line before the teacher is built; the file is intact."""
    weights = _weights(tmp_path, "w")
    (tmp_path / folder).mkdir()
    teacher = _weights(tmp_path / folder, "model_final")
    before = snapshot(str(tmp_path))
    r = subprocess.run([sys.executable, tool, "-c", CFG, "-o", f"weights={weights}",
                        f"pretrain_weights={weights}", f"save_dir={tmp_path}", "epoch=1",
                        *SMALL, *(["-p", "yolo_block.0.*", "--pruned_ratios", "0.5"]
                                  if tool == PRUNE else []),
                        "--teacher_config", CFG, "--teacher_weights", teacher],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert_one_error_line(r.stderr, ["lie in the output folder"])
    assert_unchanged(before, snapshot(str(tmp_path)))


@pytest.mark.parametrize("tool, argv, words", [
    (TRAIN, ["--distill_weight", "10"], ["--distill_weight needs --distill or --teacher_config"]),
    (TRAIN, ["--teacher_config", CFG], ["--teacher_config needs --teacher_weights"]),
    (TRAIN, ["--distill", "--distill_weight", "0"], ["--distill_weight 0 is out of range"]),
    (TRAIN, ["--distill"], ["there is none", "pretrain_weights"]),
    (TRAIN, ["--distill", "-r", "x"], ["-r x goes on with the teacher", "drop --distill"]),
    (PRUNE, ["-r", "x", "--distill"], ["-r x goes on with the teacher"]),
    (PRUNE, ["-p", "*", "--pruned_ratios", "0.5", "--no_finetune", "--distill"],
     ["drop --no_finetune"]),
    (SLIM, ["--distill"], ["add --finetune"]),
    (TRAIN, ["--distill", "--teacher_config", CFG, "--teacher_weights", "w"],
     ["--distill and --teacher_config exclude each other"]),
    (SLIM, ["--finetune", "--teacher_config", "no.yml", "--teacher_weights", "w"],
     ["--teacher_config no.yml: no such file"]),
])
def test_bad_distillation_options_are_one_line(tmp_path, capsys, tool, argv, words):
    with pytest.raises(SystemExit) as e:
        script(tool).main(["-c", CFG, "-o", f"save_dir={tmp_path}", *argv])
    assert e.value.code == 2
    assert_one_error_line(capsys.readouterr().err, words)
    assert not os.listdir(tmp_path)


def test_distilled_run_resumes_exactly(tmp_path, shapes_root):
    """2 epochs straight == 1 epoch, then -r for the second in a new process: same weights
    (the teacher comes back from the checkpoint's meta, with no --distill)."""
    start = _weights(tmp_path, "start")

    def train(save, epochs, *extra):
        r = subprocess.run([sys.executable, "tools/train.py", "-c", CFG, "-o", *SMALL,
                            f"epoch={epochs}", f"save_dir={save}", *extra], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        return r.stdout
    out_a = train(tmp_path / "a", 2, f"pretrain_weights={start}", "--distill")
    train(tmp_path / "b", 1, f"pretrain_weights={start}", "--distill")
    stem = "yolov3_mobilenet_v1_shapes"
    out_b = train(tmp_path / "b", 2, "-r", str(tmp_path / "b" / stem / "1"))
    assert "distillation: teacher self (start.pdparams)" in out_b
    line = lambda out: [ln for ln in out.splitlines() if ln.startswith("epoch 2/2")][0]
    assert "loss_distill" in line(out_b)
    assert line(out_a).split(", lr")[0] == line(out_b).split(", lr")[0]   # same losses
    a, b = assert_same_checkpoint(tmp_path / "a" / stem / "model_final.pdparams",
                                  tmp_path / "b" / stem / "model_final.pdparams")
    assert b[ckpt.META_KEY]["distill"] == a[ckpt.META_KEY]["distill"]


def test_report_table_names_the_teacher():
    from ppdet.slim.report import report_table, stage_table, teacher_of
    row = {"mAP": 70.0, "params": 1.0, "flops": 100.0, "size": 1.0, "latency": 2.0}
    taught = {**row, "teacher": teacher_of({"distill": {"weights": "/w/big.pdparams",
                                                        "config": "/c/wide.yml"}})}
    table = report_table([("plain", row), ("distilled", taught)])
    assert table.splitlines()[0].endswith("| teacher |")
    assert table.splitlines()[-1].endswith("| wide.yml (big.pdparams) |")
    assert "teacher" not in report_table([("plain", row)])
    assert "| teacher | - | wide.yml (big.pdparams) |" in stage_table([("a", row), ("b", taught)])


def test_two_cpu_processes_distil_one_model(tmp_path, shapes_root):
    """paddle.distributed.launch with a teacher: each rank runs its own frozen teacher on
    its half of the batches, the gradients (detection + distillation) are averaged."""
    teacher = _weights(tmp_path, "t", seed=1)
    opts = ["epoch=1", "TrainDataset.sample_num=16", "TrainReader.batch_size=4", *SMALL[2:4]]
    logs, found = launch_ddp_checksum(tmp_path, opts, env={"DDP_TEACHER": teacher})
    assert "loss_distill" in logs
    assert found["0"][1] == found["1"][1] == "2"
    assert found["0"][0] == found["1"][0]    # both ranks hold the same student
    meta = paddle.load(str(tmp_path / "out" / "model_final.pdparams"))[ckpt.META_KEY]
    assert meta["distill"]["weights"] == teacher
