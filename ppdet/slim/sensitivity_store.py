"""The sensitivities file: crash-safe, resumable, shared by several writers.

File ``F``: a pickle of ``{param_name: {ratio: loss}}``, exactly what
``paddleslim.prune.load_sensitivities``/``merge_sensitive``/``get_ratios_by_loss`` read.
Sidecar ``F.meta.json``: the baseline mAP and a fingerprint of config + weights + eval
set, so a restart skips the baseline and a file from another model is refused.

Every update takes an exclusive lock (``F.lock``), re-reads the file, adds the new
records without overwriting any, and replaces the file atomically (temp + fsync +
rename): ``kill -9`` at any instant leaves a loadable file missing at most the
measurement in flight, and concurrent writers lose nothing.
"""
import contextlib
import fcntl
import json
import os
import pickle

from ppdet.utils.atomic import atomic_write_bytes
from ppdet.utils.cli import UserError

__all__ = ["norm_ratio", "SensitivityStore", "load_sensitivities_file", "merge_files",
           "META_SUFFIX"]

META_SUFFIX = ".meta.json"
FORMAT = "ppdet-sensitivity/1"


def norm_ratio(r):
    """0.3, 0.30 and 0.30000000000000004 (np.arange) are one key."""
    return round(float(r), 6)


def load_sensitivities_file(path):
    """Read and check a sensitivities pickle; errors say what is wrong with it."""
    try:
        with open(path, "rb") as f:
            data = pickle.load(f)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise UserError(f"{path} is not a sensitivities file (expected a pickle of "
                        f"{{param: {{ratio: loss}}}}; {type(e).__name__}): use another "
                        f"--sensitivities_file") from e
    if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, dict) and
            all(isinstance(r, (int, float)) and isinstance(x, (int, float))
                for r, x in v.items()) for k, v in data.items()):
        raise UserError(f"{path} holds a {type(data).__name__} that is not "
                        f"{{param: {{ratio: loss}}}}: not a sensitivities file")
    return {k: {norm_ratio(r): float(x) for r, x in v.items()} for k, v in data.items()}


def _merge_into(base, extra):
    """Add records of ``extra`` missing from ``base``; never overwrite a measurement."""
    for name, losses in extra.items():
        slot = base.setdefault(name, {})
        for r, loss in losses.items():
            slot.setdefault(norm_ratio(r), loss)
    return base


def merge_files(paths):
    """Same result as ``paddleslim.prune.merge_sensitive`` (later files win on equal
    keys), with ratio keys normalised."""
    merged = {}
    for path in paths:
        for name, losses in load_sensitivities_file(path).items():
            merged.setdefault(name, {}).update(losses)
    return merged


class SensitivityStore:
    def __init__(self, path, fingerprint):
        self.path = os.path.abspath(path)
        self.meta_path = self.path + META_SUFFIX
        self.fingerprint = fingerprint
        self.data = {}
        self.baseline = None
        if os.path.exists(self.path):
            self.data = load_sensitivities_file(self.path)
        self._check_meta()

    # --- sidecar ---------------------------------------------------------------------
    def _read_meta(self):
        if not os.path.exists(self.meta_path):
            return None
        try:
            with open(self.meta_path) as f:
                meta = json.load(f)
        except (OSError, ValueError) as e:
            raise UserError(f"{self.meta_path} is unreadable ({e}): delete it to measure the "
                            f"baseline again") from e
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise UserError(f"{self.meta_path} is not a sidecar written by this tool")
        return meta

    def _check_meta(self):
        meta = self._read_meta()
        if meta is None:
            if self.data:
                print(f"warning: {self.path} has no sidecar ({os.path.basename(self.meta_path)})"
                      f": its records cannot be checked against this model; keeping them")
            return
        theirs = meta.get("fingerprint", {})
        for key, value in self.fingerprint.items():
            if key in theirs and theirs[key] != value:
                raise UserError(
                    f"{self.path} was measured with another {key} ({theirs[key][:12]} vs "
                    f"{str(value)[:12]}): use another --sensitivities_file, or delete it and "
                    f"its {META_SUFFIX} to start over")
        self.baseline = meta.get("baseline")

    def set_baseline(self, value):
        self.baseline = float(value)
        with self._locked():
            meta = self._read_meta()
            if meta is None or meta.get("baseline") is None:
                meta = {"format": FORMAT, "fingerprint": self.fingerprint,
                        "baseline": self.baseline}
                atomic_write_bytes(self.meta_path, json.dumps(meta, indent=1).encode())
            else:
                self.baseline = float(meta["baseline"])

    # --- records ---------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def has(self, name, ratio):
        return norm_ratio(ratio) in self.data.get(name, {})

    def add(self, name, ratio, loss):
        """Record one measurement: lock, re-read, merge, atomic replace."""
        with self._locked():
            on_disk = load_sensitivities_file(self.path) if os.path.exists(self.path) else {}
            _merge_into(on_disk, {name: {norm_ratio(ratio): float(loss)}})
            _merge_into(on_disk, self.data)
            atomic_write_bytes(self.path, pickle.dumps(on_disk, protocol=2))
            self.data = on_disk


def merge_with_sidecars(paths, output):
    """Merge files (and their sidecars, which must agree) into ``output``, atomically."""
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise UserError(f"sensitivities file not found: {missing[0]}")
    merged = merge_files(paths)
    metas = []
    for p in paths:
        if os.path.isfile(p + META_SUFFIX):
            with open(p + META_SUFFIX) as f:
                metas.append((p, json.load(f)))
    for p, meta in metas[1:]:
        for key, value in meta.get("fingerprint", {}).items():
            first = metas[0][1].get("fingerprint", {}).get(key)
            if first is not None and first != value:
                raise UserError(f"{p} was measured with another {key} than {metas[0][0]}: "
                                f"these files cannot be merged")
    atomic_write_bytes(output, pickle.dumps(merged, protocol=2))
    if metas:
        atomic_write_bytes(output + META_SUFFIX, json.dumps(metas[0][1], indent=1).encode())
    return merged
