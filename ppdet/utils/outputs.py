"""Where tools put what they write, so that two tools' outputs never share a path."""
import os

__all__ = ["run_name"]


def run_name(cfg, weights, meta=None):
    """The name of the training run that produced ``weights``: its folder's name when that
    folder is one of this config's runs (``NAME``, ``NAME_pruned``, ``NAME_sparse``,
    ``NAME_slim``), else the config's name, with ``_pruned`` added for pruned weights.

    Exports go to ``<output_dir>/<run name>/``, so the pruned export never lands on the
    baseline's."""
    name = cfg.get("filename", "model")
    folder = os.path.basename(os.path.dirname(os.path.abspath(str(weights or ""))))
    if folder == name or folder.startswith(name + "_"):
        return folder
    from ppdet.engine.checkpoint import is_reshaped
    return name + "_pruned" if isinstance(meta, dict) and is_reshaped(meta) else name
