"""YAML configs with ``_BASE_`` inheritance, ``-o`` overrides and validation.

A config is a plain nested dict. ``_BASE_`` lists files (relative to the including
file) that are deep-merged in order, later ones winning, before the file's own keys.
Datasets may be written PaddleDetection-style as ``TrainDataset: !VOCDataSet {...}``;
the tag becomes a ``name`` key so the dict stays plain. As in PaddleDetection, a tagged
object given again later (a later ``_BASE_`` file, the including file, or ``-o``)
replaces the earlier one whole, while plain mappings merge key by key: a config can
inherit a shipped one and swap its dataset without keeping the old dataset's keys.
"""
import copy
import difflib
import os

import yaml

from ppdet.core import registry
from ppdet.core.errors import ConfigError

__all__ = ["ConfigError", "load_config", "apply_overrides", "parse_overrides",
           "merge_config", "validate_config", "TOP_LEVEL_KEYS"]

# Top-level keys every config may use (PaddleDetection 2.x names). Sections named after
# registered components (``MobileNetV1:``) are valid too.
TOP_LEVEL_KEYS = {
    "_BASE_", "architecture", "epoch", "snapshot_epoch", "save_dir", "weights",
    "pretrain_weights", "use_gpu", "log_iter", "metric", "map_type", "num_classes",
    "TrainReader", "EvalReader", "TestReader", "TrainDataset", "EvalDataset",
    "TestDataset", "LearningRate", "OptimizerBuilder", "worker_num", "seed",
    "use_xpu", "norm_type", "print_flops", "find_unused_parameters", "filename",
    "eval_size", "infer_cfg", "slim", "sparsity", "use_ema",
}


# Keys of the TrainReader / EvalReader / TestReader sections.
READER_KEYS = {"sample_transforms", "batch_transforms", "batch_size", "shuffle", "drop_last",
               "worker_num", "use_shared_memory", "inputs_def", "fuse_normalize",
               "skip_bad_images"}


class _Loader(yaml.SafeLoader):
    pass


class _Tagged(dict):
    """A mapping written with a ``!Tag``: one object. Given again later it replaces the
    earlier one whole instead of merging into it (PaddleDetection's rule), so swapping
    ``!VOCDataSet`` for ``!COCODataSet`` leaves none of the old dataset's keys behind."""


def _tagged_mapping(loader, tag_suffix, node):
    data = loader.construct_mapping(node, deep=True) if isinstance(node, yaml.MappingNode) \
        else {}
    return _Tagged({"name": tag_suffix, **data})


def _plain(node):
    """The config as plain dicts and lists (what the rest of the code and YAML dumps see)."""
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


_Loader.add_multi_constructor("!", _tagged_mapping)


def _read_yaml(path):
    """A config file as a mapping; anything else (a folder, a binary or non-UTF-8 file,
    YAML that is not a mapping, an unreadable file) is one ConfigError naming it."""
    if os.path.isdir(path):
        raise ConfigError(f"config {path} is a folder: give a YAML file, e.g. "
                          f"configs/shapes/yolov3_mobilenet_v1_shapes.yml")
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror or e}") from e
    if b"\0" in data:
        raise ConfigError(f"config {path} is a binary file, not YAML text: give the .yml "
                          f"file (weights go in -o weights=...)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"config {path} is not UTF-8 text (byte {data[e.start]:#04x} at "
                          f"offset {e.start}): save it as UTF-8 YAML") from e
    try:
        cfg = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot parse config {path}: {e}".splitlines()[0]) from e
    if cfg is None:
        return {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"config {path} holds a YAML {type(cfg).__name__}, not a mapping "
                          f"of options (key: value lines)")
    return cfg


def merge_config(base, extra):
    """Deep-merge ``extra`` into a copy of ``base``: plain mappings merge key by key; a
    tagged object (``!VOCDataSet {...}``) and anything else replaces what was there."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and not isinstance(value, _Tagged) \
                and isinstance(out.get(key), dict):
            out[key] = merge_config(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _load_with_bases(path, seen=()):
    path = os.path.abspath(path)
    if path in seen:
        raise ConfigError(f"_BASE_ cycle through {path}")
    own = _read_yaml(path)
    bases = own.pop("_BASE_", []) or []
    if isinstance(bases, str):
        bases = [bases]
    cfg = {}
    for base in bases:
        base_path = os.path.join(os.path.dirname(path), base)
        cfg = merge_config(cfg, _load_with_bases(base_path, seen + (path,)))
    return merge_config(cfg, own)


def parse_overrides(opts):
    """``['a=1', 'b.c=x']`` -> list of (['a'], 1), (['b', 'c'], 'x'); values are YAML."""
    pairs = []
    for item in opts or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not key=value (e.g. -o weights=out/model)")
        key, value = item.split("=", 1)
        keys = [k for k in key.strip().split(".")]
        if not all(keys):
            raise ConfigError(f"override key '{key}' has an empty part")
        try:
            parsed = yaml.load(value, Loader=_Loader) if value.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override '{item}': the value is not valid YAML "
                              f"({str(e).splitlines()[0]})") from e
        pairs.append((keys, parsed))
    return pairs


def _known_top_keys():
    names = set(TOP_LEVEL_KEYS)
    for reg in _component_registries():
        names.update(reg.names())
    return names


def _component_registries():
    return [getattr(registry, n) for n in registry.__all__
            if isinstance(getattr(registry, n), registry.Registry)]


def _registered(name):
    for reg in _component_registries():
        if isinstance(name, str) and name in reg:
            return reg.get(name)
    return None


def _suggest(key, candidates):
    close = difflib.get_close_matches(key, sorted(map(str, candidates)), n=3, cutoff=0.5)
    return f"; did you mean {', '.join(close)}?" if close else ""


def _allowed_children(section_name, node):
    """Keys a mapping may hold, or None when anything goes."""
    if section_name in ("TrainReader", "EvalReader", "TestReader"):
        return READER_KEYS
    cls = _registered(section_name)
    if cls is None and isinstance(node, dict):
        cls = _registered(node.get("name"))
    if cls is not None:
        params = registry._accepted_params(cls)
        if params is None:
            return None
        return set(params) | {"name"}
    return None


def apply_overrides(cfg, overrides):
    """Apply ``-o`` overrides one by one, so two under one prefix both survive."""
    cfg = copy.deepcopy(cfg)
    valid_top = _known_top_keys() | set(cfg)
    for keys, value in parse_overrides(overrides) if overrides and isinstance(
            overrides[0], str) else overrides or []:
        if keys[0] not in valid_top:
            raise ConfigError(f"unknown config key '{keys[0]}' in -o"
                              f"{_suggest(keys[0], valid_top)}")
        node, section = cfg, None
        for depth, key in enumerate(keys[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"cannot set '{'.'.join(keys)}': "
                                  f"'{'.'.join(keys[:depth + 1])}' is not a mapping")
            _check_child(section, node, key, keys[:depth + 1], depth)
            section, node = key, child
        _check_child(section, node, keys[-1], keys, len(keys) - 1)
        node[keys[-1]] = value
    return cfg


def _check_child(section, node, key, path, depth):
    if depth == 0:
        return
    allowed = _allowed_children(section, node)
    if allowed is None:
        allowed = set(node) if node else None
    if allowed is not None and key not in allowed:
        raise ConfigError(f"unknown config key '{'.'.join(path)}' in -o"
                          f"{_suggest(key, allowed)}")


def validate_config(cfg, source="config"):
    """A typo'd top-level key is an error naming it and the closest valid keys."""
    valid = _known_top_keys()
    for key in cfg:
        if key not in valid:
            raise ConfigError(f"unknown top-level key '{key}' in {source}"
                              f"{_suggest(key, valid)}")
    for key, node in cfg.items():
        allowed = _allowed_children(key, node) if isinstance(node, dict) else None
        if allowed is not None:
            for child in node:
                if child not in allowed:
                    raise ConfigError(f"unknown option '{key}.{child}' in {source}"
                                      f"{_suggest(child, allowed)}")
    return cfg


def load_config(path, overrides=None, validate=True):
    """Read ``path`` with its bases, apply ``-o`` overrides, validate; returns a dict."""
    import ppdet.data  # noqa: F401
    import ppdet.modeling  # noqa: F401  (registers components so sections validate)
    cfg = _load_with_bases(path)
    if validate:
        validate_config(cfg, source=path)
    cfg = apply_overrides(cfg, overrides or [])
    if validate and overrides:
        validate_config(cfg, source="-o")
    cfg = _plain(cfg)
    cfg["filename"] = os.path.splitext(os.path.basename(path))[0]
    return cfg
