"""Data-parallel training on CPU through paddle.distributed.launch (2 processes)."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = os.path.join(ROOT, "configs/shapes/yolov3_mobilenet_v1_shapes.yml")


def test_two_cpu_processes_train_one_model(tmp_path, shapes_root):
    opts = ["epoch=1", "TrainDataset.sample_num=32", "TrainReader.batch_size=4",
            "TrainReader.worker_num=0", "save_dir=" + str(tmp_path / "out")]
    env = dict(os.environ, DDP_SAVE=str(tmp_path / "out"))
    r = subprocess.run([sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node",
                        "2", "--log_dir", str(tmp_path / "log"),
                        os.path.join(ROOT, "tests/scripts/ddp_checksum.py"), CFG, *opts],
                       cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    logs = "".join(open(tmp_path / "log" / f).read() for f in sorted(os.listdir(tmp_path / "log"))
                   if f.startswith("workerlog"))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:] + logs[-2000:]
    found = {rank: (checksum, steps) for rank, checksum, steps in
             re.findall(r"rank (\d)/2 checksum ([\d.]+) steps (\d+)", logs)}
    assert set(found) == {"0", "1"}, logs[-2000:]
    # each rank saw half the data (32 images / 2 ranks / batch 4 = 4 steps) ...
    assert found["0"][1] == found["1"][1] == "4"
    # ... and the gradients were averaged: both ranks hold the same weights
    assert found["0"][0] == found["1"][0]
