"""The errors a user can fix, in one place.

Every script wraps its ``main`` with ``ppdet.utils.cli.run_main``: these errors end the
process with one line on stderr (``error: ...``) and exit status 2, never a traceback.
Each message names the offending value, option or file and says how to fix it.
``ValueError`` stays a base of the config and data errors so older ``except ValueError``
code keeps working.
"""

__all__ = ["UserError", "ConfigError", "DataError", "WriteError"]


class UserError(Exception):
    """Bad input: printed as one line, exit status 2."""


class ConfigError(UserError, ValueError):
    """A config or override that cannot be used; the message says how to fix it."""


class DataError(UserError, ValueError):
    """A dataset defect (unreadable image, malformed annotation); the message names the
    file and, where there is one, the field."""


class WriteError(UserError):
    """An output that could not be written (full disk, no permission); the previous file,
    if any, is left as it was. ``path``: the file or folder; ``reason``: why, in words."""

    def __init__(self, message, path=None, reason=None):
        super().__init__(message)
        self.path, self.reason = path, reason
