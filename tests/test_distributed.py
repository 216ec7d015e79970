"""Data-parallel training on CPU through paddle.distributed.launch (2 processes)."""
from helpers import launch_ddp_checksum


def test_two_cpu_processes_train_one_model(tmp_path, shapes_root):
    opts = ["epoch=1", "TrainDataset.sample_num=32", "TrainReader.batch_size=4",
            "TrainReader.worker_num=0"]
    logs, found = launch_ddp_checksum(tmp_path, opts)
    # each rank saw half the data (32 images / 2 ranks / batch 4 = 4 steps) ...
    assert found["0"][1] == found["1"][1] == "4"
    # ... and the gradients were averaged: both ranks hold the same weights
    assert found["0"][0] == found["1"][0]
