"""Command-line pieces shared by every script: ``-c CONFIG``, ``-o key=value ...``, option
checks, and ``run_main``.

Errors from bad input end the process with one line naming the problem and the fix
and a non-zero exit status (2), and no traceback. Options are checked with the helpers
here before any slow step (caching an eval set, a baseline evaluation, training).
"""
import argparse
import dataclasses
import errno
import functools
import os
import sys
import types

from ppdet.core.errors import ConfigError, DataError, UserError, WriteError

__all__ = ["ArgsRequest", "arg_field", "from_args", "ArgumentParser", "ArgsParser", "UserError",
           "ConfigError", "DataError",
           "WriteError", "run_main", "load_config_from_args", "check_range", "check_conflicts",
           "check_writable_file", "check_writable_dir", "check_not_inputs", "one_line",
           "os_error_line"]


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line (``error: ...``), not usage + error."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


class ArgsParser(ArgumentParser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument("-c", "--config", required=True, help="configuration file (YAML)")
        self.add_argument("-o", "--opt", nargs="+", action="append", default=[],
                          metavar="KEY=VALUE",
                          help="override config options, e.g. -o weights=out/model "
                               "TrainReader.batch_size=4 (repeatable)")

    def parse_args(self, argv=None):
        args = super().parse_args(argv)
        args.opt = [item for group in args.opt for item in group]
        return args


def load_config_from_args(args):
    from ppdet.core.config import load_config
    return load_config(args.config, args.opt)


# --- option checks (before any slow step) -------------------------------------------------
def check_range(name, value, low=None, high=None, low_open=False, high_open=False,
                integer=False):
    """``value`` of option ``name`` within [low, high] (open ends when asked); None passes."""
    if value is None:
        return value
    lo_ok = low is None or (value > low if low_open else value >= low)
    hi_ok = high is None or (value < high if high_open else value <= high)
    if not (lo_ok and hi_ok) or value != value:          # NaN fails too
        if low is not None and high is not None:
            want = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        elif low is not None:
            want = f"{'>' if low_open else '>='} {low:g}"
        else:
            want = f"{'<' if high_open else '<='} {high:g}"
        kind = "an integer " if integer else ""
        raise UserError(f"{name} {value:g} is out of range: it must be {kind}{want}")
    return value


def check_conflicts(args, *groups, needs=()):
    """``groups``: tuples of option names (dest) of which at most one may be given;
    ``needs``: (option, required option) pairs. All offending options are named at once."""
    def given(dest):
        v = getattr(args, dest, None)
        return v is not None and v is not False and v != []

    def flag(dest):
        return "--" + dest
    problems = []
    for group in groups:
        on = [d for d in group if given(d)]
        if len(on) > 1:
            problems.append(f"{' and '.join(map(flag, on))} exclude each other")
    for dest, required in needs:
        alternatives = (required,) if isinstance(required, str) else tuple(required)
        if given(dest) and not any(given(r) for r in alternatives):
            problems.append(f"{flag(dest)} needs {' or '.join(map(flag, alternatives))}")
    if problems:
        raise UserError("; ".join(problems))


def check_writable_dir(name, path):
    """A folder an option names must be creatable and writable (nothing is created here)."""
    if path is None:
        return path
    probe = os.path.abspath(path)
    if os.path.exists(probe) and not os.path.isdir(probe):
        raise UserError(f"{name} {path} is a file, not a folder")
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise UserError(f"{name} {path}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        try:
            read_only = bool(os.statvfs(probe).f_flag & os.ST_RDONLY)
        except (OSError, AttributeError):
            read_only = False
        why = "the file system is read-only" if read_only else "permission denied"
        raise UserError(f"{name} {path}: cannot write in {probe} ({why})")
    return path


def check_writable_file(name, path):
    """A file an option names must be writable: not a folder, in a writable folder."""
    if path is None:
        return path
    if os.path.isdir(path):
        raise UserError(f"{name} {path} is a folder: give a file path")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise UserError(f"{name} {path}: the file is not writable (permission denied)")
    check_writable_dir(name, os.path.dirname(os.path.abspath(path)))
    return path


def check_not_inputs(option, out_dir, inputs):
    """Drawn images keep their names: an ``out_dir`` holding an input image would overwrite
    it, so that is refused before anything runs."""
    out = os.path.abspath(out_dir)
    for path in inputs:
        if os.path.dirname(os.path.abspath(path)) == out:
            raise UserError(f"{option} {out_dir} holds the input image {path}: the drawn image "
                            f"would overwrite it; pick another {option}")


# --- requests: one dataclass a workflow takes, read from the parsed arguments ---------
def arg_field(name, invert=False, **kw):
    """A field read from the parsed argument ``name`` (negated when ``invert``)."""
    return dataclasses.field(metadata={"arg": name, "invert": invert}, **kw)


def from_args(cls, args, **overrides):
    """The ``cls`` request of the parsed ``args`` (attributes it lacks keep their
    defaults; ``overrides`` win), checked."""
    values = {}
    for f in dataclasses.fields(cls):
        name = f.metadata.get("arg", f.name)
        if f.name in overrides:
            values[f.name] = overrides[f.name]
        elif hasattr(args, name):
            v = getattr(args, name)
            values[f.name] = (not v) if f.metadata.get("invert") else v
    return cls(**values).check()


class ArgsRequest:
    """Base of a request dataclass: a ``check()`` returning ``self`` validates it."""

    def flags(self):
        """The request as the command line spells it: ``{flag dest: value}``, for
        :func:`ppdet.utils.cli.check_conflicts` to name the options as typed."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.metadata.get("arg", f.name)] = (not v) if f.metadata.get("invert") else v
        return types.SimpleNamespace(**out)


# --- main wrapper ---------------------------------------------------------------------------
def one_line(exc):
    """The first line of an error's message (its type name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _user_error_types():
    from ppdet.engine.checkpoint import CheckpointError
    return (UserError, CheckpointError, FileNotFoundError)


# errors of the machine, not of the code: a full disk, a read-only or forbidden folder
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                       errno.EFBIG, errno.EISDIR, errno.ENOTDIR, errno.ENAMETOOLONG,
                       errno.EMFILE, errno.ENFILE, errno.EIO}


def os_error_line(exc):
    """One line for an ``OSError`` of the machine (no space, read-only, permission): the
    path it names and what to do; None for one that is a bug (a traceback then)."""
    if exc.errno not in _ENVIRONMENT_ERRNOS:
        return None
    from ppdet.utils.atomic import write_reason
    where = exc.filename if exc.filename is not None else None
    if where is None:
        return f"{write_reason(exc)} (a write or read failed; no file was named)"
    return f"cannot write {where}: {write_reason(exc)}" if exc.errno in (
        errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG) else \
        f"cannot access {where}: {write_reason(exc)}"


def run_main(fn):
    """Decorator: turn expected user errors into one line on stderr and exit 2. So is an
    ``OSError`` of the machine (no space left, a read-only file system, no permission): one
    line naming the path (writes are atomic, so nothing half-written is left)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except _user_error_types() as e:
            print(f"error: {one_line(e)}", file=sys.stderr)
            sys.exit(2)
        except OSError as e:
            line = os_error_line(e)
            if line is None:
                raise
            print(f"error: {line}", file=sys.stderr)
            sys.exit(2)
    return wrapper
