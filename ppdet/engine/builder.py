"""Build model, datasets, loaders and metrics from a config (the seams every tool uses)."""
import os

from ppdet.core.config import ConfigError
from ppdet.core.registry import DATASETS
from ppdet.core.workspace import create

__all__ = ["REPO_ROOT", "build_model", "build_dataset", "check_num_classes", "build_reader",
           "build_metric_for", "check_metric_config", "resolve_path", "class_names_for",
           "image_size_for"]

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_MODES = {"train": ("TrainDataset", "TrainReader"), "eval": ("EvalDataset", "EvalReader"),
          "test": ("TestDataset", "TestReader")}


def resolve_path(path):
    """Relative paths are tried from the working directory, then from the repo root,
    so the seeds' commands work from ``slim/sensitive/`` too."""
    if not path or os.path.isabs(path) or os.path.exists(path):
        return path
    alt = os.path.join(REPO_ROOT, path)
    return alt if os.path.exists(alt) else path


def build_model(cfg):
    """A new model. Paddle refuses a parameter name twice in one name scope, and every
    parameter here has a fixed name, so each model gets a fresh scope."""
    import paddle
    if "architecture" not in cfg:
        raise ConfigError("config has no 'architecture' (e.g. architecture: YOLOv3)")
    with paddle.utils.unique_name.guard():
        model = create(cfg, cfg["architecture"])
    # what this config builds: checkpoints record it, loading compares it
    model.config_shapes = {p.name: list(p.shape) for p in model.parameters()}
    return model


def build_dataset(cfg, mode):
    key = _MODES[mode][0]
    section = cfg.get(key)
    if mode == "test" and not section:
        section = cfg.get("EvalDataset")
    if not section:
        raise ConfigError(f"config has no {key} section")
    section = dict(section)
    name = section.pop("name", None)
    if name is None:
        raise ConfigError(f"{key} needs a dataset type, e.g. '{key}: !VOCDataSet {{...}}'")
    if "dataset_dir" in section:
        raw = section["dataset_dir"]
        section["dataset_dir"] = resolve_path(raw)
        if not os.path.isdir(section["dataset_dir"]):
            hint = ("; create it with: python dataset/shapes/make_shapes.py"
                    if "shapes" in str(raw) else "")
            raise ConfigError(f"dataset directory not found: {raw}{hint}")
    try:
        dataset = DATASETS.build(name, section)
    except (TypeError, KeyError) as e:
        raise ConfigError(f"{key}: {e}".replace('"', "")) from e
    if mode in ("train", "eval"):
        check_num_classes(cfg, dataset, key)
    return dataset


def check_num_classes(cfg, dataset, key="dataset"):
    """The model's ``num_classes`` must be the dataset's class count (COCO categories, VOC
    label list or class_names). Categories without any box are allowed; they are counted."""
    want = cfg.get("num_classes")
    have = dataset.num_classes
    unused = getattr(dataset, "unused_classes", [])
    note = ""
    if unused:
        shown = ", ".join(f"'{n}'" for n in unused[:3]) + (" ..." if len(unused) > 3 else "")
        note = f" ({len(unused)} of them without any box: {shown})"
    if want is not None and have and int(want) != have:
        raise ConfigError(f"num_classes is {want} but {key} ({dataset.anno_path}) has {have} "
                          f"classes{note}: set num_classes: {have}, or give the dataset the "
                          f"{want} classes the model should learn")
    if unused:
        print(f"note: {key} {dataset.anno_path}: {have} classes{note}; they count in "
              f"num_classes")


def build_reader(cfg, mode, dataset=None, **kw):
    from ppdet.data.loader import build_loader
    dataset = dataset if dataset is not None else build_dataset(cfg, mode)
    reader_cfg = dict(cfg.get(_MODES[mode][1]) or {})
    if "worker_num" not in reader_cfg and "worker_num" in cfg:
        reader_cfg["worker_num"] = cfg["worker_num"]
    try:
        return build_loader(reader_cfg, dataset, mode, **kw)
    except (KeyError, ValueError, TypeError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{_MODES[mode][1]}: {str(e).strip(chr(34))}") from e


def check_metric_config(cfg):
    """``metric`` and ``map_type`` are usable (checked before any slow step)."""
    from ppdet.metrics.evaluator import METRIC_NAMES
    from ppdet.metrics.voc_map import MAP_TYPES
    metric = str(cfg.get("metric", "VOC"))
    if metric.upper() not in METRIC_NAMES:
        raise ConfigError(f"metric '{metric}' is not one of {', '.join(METRIC_NAMES)}")
    map_type = cfg.get("map_type", "11point")
    if metric.upper() == "VOC" and map_type not in MAP_TYPES:
        raise ConfigError(f"map_type '{map_type}' is not one of {', '.join(MAP_TYPES)}")
    return metric.upper()


def build_metric_for(cfg, dataset):
    from ppdet.metrics.evaluator import build_metric
    check_metric_config(cfg)
    return build_metric(cfg.get("metric", "VOC"), dataset,
                        map_type=cfg.get("map_type", "11point"))


def class_names_for(cfg):
    """Class names from the test dataset; numbered names (with a warning) if it is absent."""
    try:
        return list(build_dataset(cfg, "test").class_names)
    except (ConfigError, FileNotFoundError) as e:
        n = int(cfg.get("num_classes", 1))
        print(f"warning: class names unavailable ({e}); using 0..{n - 1}")
        return [str(i) for i in range(n)]


def image_size_for(cfg, mode="test"):
    """[H, W] of the network input for eval/test, from the reader's Resize."""
    key = {"test": "TestReader", "eval": "EvalReader"}[mode]
    for item in (cfg.get(key) or {}).get("sample_transforms", []):
        if "Resize" in item:
            size = item["Resize"].get("target_size")
            return [int(size), int(size)] if isinstance(size, (int, float)) else \
                [int(s) for s in size]
    raise ConfigError(f"{key} has no Resize with a fixed target_size")
