"""The sensitivities file: crash-safe, resumable, shared by several writers.

File ``F``: a pickle of ``{param_name: {ratio: loss}}``, exactly what
``paddleslim.prune.load_sensitivities``/``merge_sensitive``/``get_ratios_by_loss`` read.
Sidecar ``F.meta.json``: the baseline and a fingerprint of config, weights, eval set and
reader, metric (and map_type) and criterion, so a restart skips the baseline and numbers
measured any other way are refused (see ``SensitivityStore``).

Pairs that ``--stop_loss`` decided not to measure are listed in the sidecar under
``skipped`` (``{param: {ratio: stop_loss}}``), never written into the pickle.

Every update takes an exclusive lock (``F.lock``), re-reads the file, adds the new
records without overwriting any, and replaces the file atomically (temp + fsync +
rename): ``kill -9`` at any instant leaves a loadable file missing at most the
measurement in flight, and concurrent writers lose nothing.
"""
import json
import os
import pickle

from ppdet.core.errors import UserError
from ppdet.utils.atomic import atomic_write_bytes, file_lock

__all__ = ["norm_ratio", "SensitivityStore", "load_sensitivities_file", "merge_files",
           "merge_with_sidecars", "read_meta", "META_SUFFIX"]

META_SUFFIX = ".meta.json"
FORMAT = "ppdet-sensitivity/1"
# fingerprint keys added later, and what a sidecar written before them means
DEFAULTS = {"bn_calib": "none"}


def _fp_get(fp, key):
    return fp.get(key, DEFAULTS.get(key))


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
    """Measurements of one model, added by one or more processes.

    The sidecar's fingerprint is checked when the store opens, and again under the lock
    whenever a baseline is taken or a record is written, so two processes started at once
    with different weights (or metric, eval set, ...) cannot mix their numbers in one file:
    the first to write claims it, the other is refused with nothing written. A data file
    without a sidecar (written by PaddleSlim's or PaddleOCR's scripts) is read freely but
    only written to with ``adopt=True`` (``--adopt``), which gives it this run's sidecar.
    """

    def __init__(self, path, fingerprint, adopt=False):
        self.path = os.path.abspath(path)
        self.meta_path = self.path + META_SUFFIX
        self.fingerprint = fingerprint
        self.adopt = adopt
        self.data = {}
        self.baseline = None
        self.skipped = {}
        if os.path.isdir(self.path):
            raise UserError(f"sensitivities file {path} is a folder: give a file path")
        if os.path.exists(self.path):
            self.data = load_sensitivities_file(self.path)
        meta = self._read_meta()
        if meta is None:
            self._check_adoptable(self.data)
        else:
            self._check(meta)
            self.baseline = meta.get("baseline")
            self.skipped = _skipped_of(meta)

    # --- sidecar ---------------------------------------------------------------------
    def _read_meta(self):
        return read_meta(self.meta_path)

    def _check_adoptable(self, on_disk):
        if on_disk and not self.adopt:
            raise UserError(
                f"{self.path} has no sidecar {os.path.basename(self.meta_path)}, so its "
                f"records cannot be checked against this model: pass --adopt to add to it "
                f"anyway, or use another --sensitivities_file")

    # keys of the fingerprint before the metric, map_type and eval reader entered it: such
    # a sidecar is compared on these (its eval set by the old digest) and then upgraded
    _LEGACY_KEYS = ("model config", "weights", "criterion")

    def _legacy(self, theirs):
        """Whether ``theirs`` is an older sidecar's fingerprint that matches this run: it was
        written when only the VOC metric could be measured and map_type was not recorded."""
        if "metric" in theirs or "_legacy eval set" not in self.fingerprint:
            return False
        return (all(theirs.get(k) == self.fingerprint.get(k) for k in self._LEGACY_KEYS)
                and theirs.get("eval set") == self.fingerprint["_legacy eval set"]
                and self.fingerprint.get("metric") == "VOC"
                and self.fingerprint.get("bn_calib", "none") == "none")

    def _check(self, meta):
        theirs = meta.get("fingerprint") or {}
        if self._legacy(theirs):
            return "legacy"
        for key, value in self._stored_fingerprint().items():
            if _fp_get(theirs, key) != value:
                def short(v):
                    return "absent" if v is None else str(v)[:40 if key == "bn_calib" else 12]
                raise UserError(
                    f"{self.path} was measured with another {key} ({short(_fp_get(theirs, key))} "
                    f"there, {short(value)} now): use another --sensitivities_file, or delete "
                    f"it and its {META_SUFFIX} to start over")

    def _stored_fingerprint(self):
        return {k: v for k, v in self.fingerprint.items() if not k.startswith("_")}

    def _write_meta(self, baseline, skipped=None):
        meta = {"format": FORMAT, "fingerprint": self._stored_fingerprint(),
                "baseline": baseline}
        if skipped:
            meta["skipped"] = {n: {str(r): v for r, v in sorted(d.items())}
                               for n, d in sorted(skipped.items()) if d}
        atomic_write_bytes(self.meta_path, json.dumps(meta, indent=1).encode())

    def _claim(self):
        """Under the lock: the sidecar agrees with this run, or this run writes it (for a
        new file, or an adopted one). Returns the sidecar."""
        meta = self._read_meta()
        if meta is None:
            on_disk = load_sensitivities_file(self.path) if os.path.exists(self.path) else {}
            self._check_adoptable(on_disk)
            self._write_meta(self.baseline)
            return {"baseline": self.baseline}
        if self._check(meta) == "legacy":     # upgrade the older sidecar, keep its baseline
            self._write_meta(meta.get("baseline"))
            print(f"note: upgraded {os.path.basename(self.meta_path)} written by an older "
                  f"version; it did not record map_type, taken as "
                  f"{self.fingerprint.get('map_type')}")
            meta = self._read_meta()
        return meta

    def set_baseline(self, value):
        value = float(value)
        if not value > 0:
            raise UserError(f"baseline {value} is not above 0: nothing to measure losses "
                            f"against; {self.path} was not written")
        with self._locked():
            meta = self._claim()
            if meta.get("baseline") is None:
                self.baseline = value
                self._write_meta(value, _skipped_of(meta))
            else:
                self.baseline = float(meta["baseline"])

    # --- records ---------------------------------------------------------------------
    def _locked(self):
        return file_lock(self.path)

    def has(self, name, ratio):
        return norm_ratio(ratio) in self.data.get(name, {})

    def is_skipped(self, name, ratio):
        return norm_ratio(ratio) in self.skipped.get(name, {})

    def refresh(self):
        """Re-read what other writers added (the file is replaced atomically: no lock)."""
        if os.path.exists(self.path):
            _merge_into(self.data, load_sensitivities_file(self.path))
        meta = self._read_meta()
        if meta is not None:
            self._check(meta)
            self.skipped = _skipped_of(meta)

    def add(self, name, ratio, loss):
        """Record one measurement: lock, check the sidecar, re-read, merge, atomic replace.
        A pair listed as skipped before is taken off that list."""
        with self._locked():
            meta = self._claim()
            on_disk = load_sensitivities_file(self.path) if os.path.exists(self.path) else {}
            _merge_into(on_disk, {name: {norm_ratio(ratio): float(loss)}})
            _merge_into(on_disk, self.data)
            atomic_write_bytes(self.path, pickle.dumps(on_disk, protocol=2))
            self.data = on_disk
            skipped = _skipped_of(meta)
            if norm_ratio(ratio) in skipped.get(name, {}):
                del skipped[name][norm_ratio(ratio)]
                self._write_meta(meta.get("baseline"), skipped)
            self.skipped = skipped

    def skip(self, name, ratio, stop_loss):
        """Record in the sidecar that ``(name, ratio)`` was not measured: a smaller ratio of
        ``name`` already lost more than ``stop_loss``."""
        with self._locked():
            meta = self._claim()
            skipped = _skipped_of(meta)
            skipped.setdefault(name, {})[norm_ratio(ratio)] = float(stop_loss)
            self._write_meta(meta.get("baseline"), skipped)
            self.skipped = skipped


def _skipped_of(meta):
    return {n: {norm_ratio(r): float(v) for r, v in d.items()}
            for n, d in (meta.get("skipped") or {}).items()}


def read_meta(meta_path):
    """A sidecar's contents, None when there is none; a corrupt one is a one-line error."""
    if not os.path.exists(meta_path):
        return None
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"{meta_path} is unreadable ({str(e).splitlines()[0]}): delete it to "
                        f"measure the baseline again") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"{meta_path} is not a sidecar written by this tool")
    return meta


def merge_with_sidecars(paths, output, adopt=False):
    """Merge files into ``output`` under its lock (the one sensitive.py takes), atomically.

    Sidecars must agree (same model, weights, eval set, metric). Records already in
    ``output`` are kept (the inputs win on equal keys), so nothing measured is lost; an
    ``output`` measured under another fingerprint, or without a sidecar while the inputs
    have one (unless ``adopt``), is refused with nothing written.
    """
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise UserError(f"sensitivities file not found: {missing[0]}")
    if os.path.isdir(output):
        raise UserError(f"-o {output} is a folder: give a file path")
    merged = merge_files(paths)
    metas = _agreeing_sidecars(paths, output, adopt)
    out = os.path.abspath(output)
    with file_lock(out):
        if os.path.exists(out) and out not in map(os.path.abspath, paths):
            _keep_output_records(out, output, metas, merged, adopt)
        if metas:
            atomic_write_bytes(out + META_SUFFIX,
                               json.dumps(_merged_meta(out, metas, merged), indent=1).encode())
        atomic_write_bytes(out, pickle.dumps(merged, protocol=2))
    return merged


def _agreeing_sidecars(paths, output, adopt):
    """``[(path, sidecar)]`` of the inputs that have one, checked: all of one fingerprint,
    and no input without one beside them (or beside ``output``'s) unless ``adopt``."""
    metas = [(p, read_meta(p + META_SUFFIX)) for p in paths]
    bare = [p for p, m in metas if m is None]
    metas = [(p, m) for p, m in metas if m is not None]
    out_meta = read_meta(os.path.abspath(output) + META_SUFFIX) \
        if os.path.exists(os.path.abspath(output) + META_SUFFIX) else None
    if bare and (metas or out_meta is not None) and not adopt:
        # records nothing can check would join files whose origin is known
        raise UserError(f"{bare[0]} has no sidecar, so its records cannot be checked against "
                        f"the other files: pass --adopt to merge it anyway, or leave it out")
    for p, meta in metas[1:]:
        for key, value in meta.get("fingerprint", {}).items():
            first = _fp_get(metas[0][1].get("fingerprint", {}), key)
            if first is not None and first != value:
                raise UserError(f"{p} was measured with another {key} than {metas[0][0]}: "
                                f"these files cannot be merged")
    return metas


def _keep_output_records(out, output, metas, merged, adopt):
    """Add the records already in ``out`` to ``merged`` (the inputs win), once its sidecar
    is found to agree with the inputs'."""
    old = load_sensitivities_file(out)
    old_meta = read_meta(out + META_SUFFIX)
    if metas and old_meta is not None:
        for key, value in metas[0][1].get("fingerprint", {}).items():
            if _fp_get(old_meta.get("fingerprint", {}), key) != value:
                raise UserError(f"{output} was measured with another {key} than "
                                f"{metas[0][0]}: merge into another -o file")
    elif metas and old and not adopt:
        raise UserError(f"{output} has no sidecar, so its records cannot be checked "
                        f"against the inputs: pass --adopt, or merge into another "
                        f"-o file")
    for name, losses in old.items():
        for r, loss in losses.items():
            merged.setdefault(name, {}).setdefault(r, loss)


def _merged_meta(out, metas, merged):
    """The first input's sidecar, listing as skipped every pair skipped in any sidecar
    (``out``'s too) that no file measured."""
    meta = dict(metas[0][1])
    skipped = {}
    old_meta = read_meta(out + META_SUFFIX) if os.path.exists(out) else None
    for m in [old_meta or {}] + [m for _, m in metas]:
        for n, d in _skipped_of(m).items():
            for r, v in d.items():
                if r not in merged.get(n, {}):
                    skipped.setdefault(n, {})[r] = v
    meta.pop("skipped", None)
    if skipped:
        meta["skipped"] = {n: {str(r): v for r, v in sorted(d.items())}
                           for n, d in sorted(skipped.items())}
    return meta
