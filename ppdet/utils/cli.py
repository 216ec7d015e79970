"""Command-line pieces shared by every script: ``-c CONFIG`` and ``-o key=value ...``.

Errors from bad input end the process with one line naming the problem and the fix
and a non-zero exit status, and no traceback.
"""
import argparse
import functools
import sys

__all__ = ["ArgsParser", "UserError", "run_main", "load_config_from_args"]


class UserError(Exception):
    """Bad input: printed as one line, exit status 2."""


class ArgsParser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
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


def _user_error_types():
    from ppdet.core.config import ConfigError
    from ppdet.engine.checkpoint import CheckpointError
    return (UserError, ConfigError, CheckpointError, FileNotFoundError)


def run_main(fn):
    """Decorator: turn expected user errors into one line on stderr and exit 2."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except _user_error_types() as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            print(f"error: {msg}", file=sys.stderr)
            sys.exit(2)
    return wrapper
