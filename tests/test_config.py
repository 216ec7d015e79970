"""Config loading: _BASE_ merging, -o overrides, validation, registry building."""
import os

import pytest
import yaml

from ppdet.core.config import ConfigError, apply_overrides, load_config, merge_config
from ppdet.core.registry import Registry
from ppdet.engine.builder import build_model
from ppdet.engine.checkpoint import CheckpointError, resolve_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = os.path.join(ROOT, "configs/shapes/yolov3_mobilenet_v1_shapes.yml")


def _write(path, data):
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_base_list_merges_in_order_later_wins(tmp_path):
    _write(tmp_path / "a.yml", {"epoch": 1, "TrainReader": {"batch_size": 2, "shuffle": True}})
    _write(tmp_path / "b.yml", {"epoch": 2, "TrainReader": {"batch_size": 4}})
    top = _write(tmp_path / "top.yml", {"_BASE_": ["a.yml", "b.yml"], "log_iter": 7})
    cfg = load_config(top)
    assert cfg["epoch"] == 2
    assert cfg["TrainReader"] == {"batch_size": 4, "shuffle": True}
    assert cfg["log_iter"] == 7 and "_BASE_" not in cfg


def test_own_keys_beat_bases_and_nested_siblings_survive():
    cfg = load_config(SHAPES)
    assert cfg["MobileNetV1"]["scale"] == 0.25                 # own file wins
    assert cfg["MobileNetV1"]["feature_maps"] == ["conv4_1", "conv5_5", "conv6"]  # from base
    assert cfg["YOLOv3Head"]["anchor_masks"] == [[6, 7, 8], [3, 4, 5], [0, 1, 2]]


def test_two_overrides_under_one_prefix_both_apply():
    cfg = load_config(SHAPES, ["TrainReader.batch_size=3", "TrainReader.shuffle=false",
                               "YOLOv3Loss.ignore_thresh=0.5"])
    assert cfg["TrainReader"]["batch_size"] == 3
    assert cfg["TrainReader"]["shuffle"] is False
    assert cfg["TrainReader"]["drop_last"] is True            # sibling kept
    assert cfg["YOLOv3Loss"] == {"ignore_thresh": 0.5, "label_smooth": False,
                                 "assign": "per_level"}   # own key kept beside the base


def test_override_values_are_yaml_and_deep_keys_work():
    cfg = load_config(SHAPES, ["YOLOv3Head.channels=[64, 32, 16]", "epoch=3",
                               "weights=out/x", "EvalDataset.anno_path=a.txt"])
    assert cfg["YOLOv3Head"]["channels"] == [64, 32, 16]
    assert cfg["epoch"] == 3 and cfg["weights"] == "out/x"
    assert cfg["EvalDataset"]["anno_path"] == "a.txt"
    assert cfg["EvalDataset"]["name"] == "VOCDataSet"          # !VOCDataSet tag kept


def test_override_of_a_component_option_not_written_in_the_file():
    cfg = load_config(SHAPES, ["YOLOBox.clip_bbox=false"])
    assert cfg["YOLOBox"] == {"conf_thresh": 0.005, "clip_bbox": False}


@pytest.mark.parametrize("opt, needle", [
    ("epochs=3", "did you mean epoch"),
    ("TrainReader.batchsize=3", "batch_size"),
    ("YOLOv3Loss.ignore_tresh=0.5", "ignore_thresh"),
])
def test_unknown_override_key_names_closest(opt, needle):
    with pytest.raises(ConfigError) as e:
        load_config(SHAPES, [opt])
    assert opt.split("=")[0].split(".")[-1] in str(e.value) and needle in str(e.value)


def test_typo_in_config_file_is_an_error(tmp_path):
    top = _write(tmp_path / "t.yml", {"_BASE_": [SHAPES], "snapshot_epochs": 2})
    with pytest.raises(ConfigError, match="snapshot_epochs.*snapshot_epoch"):
        load_config(top)


def test_unknown_component_option_in_file(tmp_path):
    top = _write(tmp_path / "t.yml", {"_BASE_": [SHAPES], "MobileNetV1": {"scal": 0.5}})
    with pytest.raises(ConfigError, match="MobileNetV1.scal.*scale"):
        load_config(top)


def test_merge_config_does_not_mutate_inputs():
    a = {"x": {"y": 1}}
    b = {"x": {"z": 2}}
    assert merge_config(a, b) == {"x": {"y": 1, "z": 2}}
    assert a == {"x": {"y": 1}}


def test_apply_overrides_rejects_bad_syntax():
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({"epoch": 1}, ["epoch"])


def test_registry_builds_with_shared_keys_and_rejects_unknown_options():
    reg = Registry("thing")

    @reg.register
    class Thing:
        def __init__(self, num_classes=1, size=3):
            self.num_classes, self.size = num_classes, size

    t = reg.build("Thing", {"size": 5}, shared={"num_classes": 7})
    assert (t.num_classes, t.size) == (7, 5)
    with pytest.raises(TypeError, match="sise.*size"):
        reg.build("Thing", {"sise": 5})
    with pytest.raises(KeyError, match="Thing"):
        reg.get("Thin")


def test_models_from_config_have_stable_names_and_num_classes():
    cfg = load_config(SHAPES, ["num_classes=6"])
    m1, m2 = build_model(cfg), build_model(cfg)     # twice in one process is fine
    names = [p.name for p in m1.parameters()]
    assert names == [p.name for p in m2.parameters()]
    assert "yolo_block.0.0.0.conv.weights" in names and "conv2_1_sep_weights" in names
    out = dict((p.name, p.shape) for p in m1.parameters())["yolo_output.0.conv.weights"]
    assert out[0] == 3 * (5 + 6)


def test_seed_param_list_names_real_parameters_of_voc_model():
    seed = [f"yolo_block.{i}.{t}.conv.weights" for i in range(3)
            for t in ("0.0", "0.1", "1.0", "1.1", "2", "tip")]
    model = build_model(load_config(os.path.join(ROOT, "configs/yolov3_mobilenet_v1_voc.yml")))
    shapes = {p.name: p.shape for p in model.parameters()}
    assert all(n in shapes for n in seed)
    assert shapes["yolo_block.0.0.0.conv.weights"] == [512, 1024, 1, 1]
    assert shapes["yolo_block.2.tip.conv.weights"] == [256, 128, 3, 3]


def test_weights_url_fails_offline_and_suffix_is_optional(tmp_path):
    with pytest.raises(CheckpointError, match="offline"):
        resolve_weights("https://paddlemodels.bj.bcebos.com/x.tar")
    (tmp_path / "m.pdparams").write_bytes(b"")
    assert resolve_weights(str(tmp_path / "m")) == str(tmp_path / "m")
    assert resolve_weights(str(tmp_path / "m.pdparams")) == str(tmp_path / "m")
    with pytest.raises(CheckpointError, match="not found"):
        resolve_weights(str(tmp_path / "nope"))
