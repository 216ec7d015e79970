"""Atomic file writes: temp file in the same directory + fsync + rename.

A reader (or a crash with ``kill -9``) sees either the old file or the new one, never
a half-written one. The new file gets the permissions a plain ``open()`` would give it
(0666 less the umask; an existing file keeps its mode), not ``mkstemp``'s 0600. Temp
files are named ``.NAME.<pid>.<random>.tmp``; those left by a killed writer (its process
gone) are removed by the next write of the same file. A failed write (full disk, no
permission) raises ``WriteError`` with one line, and the previous file is left intact.
"""
import contextlib
import errno
import fcntl
import os
import tempfile

from ppdet.core.errors import WriteError

__all__ = ["atomic_write", "atomic_write_bytes", "default_mode", "remove_stale_temps",
           "pid_alive", "file_lock"]


def _umask():
    try:                                   # Linux: read it without changing it
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(path=None):
    """Mode for a new version of ``path``: the existing file's, else 0666 & ~umask."""
    if path is not None:
        with contextlib.suppress(OSError):
            return os.stat(path).st_mode & 0o7777
    return 0o666 & ~_umask()


def pid_alive(pid):
    """Whether process ``pid`` still runs (one owned by another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(path):
    """Remove temp files of ``path`` left by writers that no longer run."""
    directory = os.path.dirname(os.path.abspath(path))
    prefix = f".{os.path.basename(path)}."
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        pid = name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))


def _error(path, exc):
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        reason = "no space left on the device"
    kept = "the previous file is unchanged" if os.path.exists(path) else "nothing was written"
    return WriteError(f"cannot write {path}: {reason} ({kept})")


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Yield a file object; on clean exit it replaces ``path`` atomically."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        remove_stale_temps(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.{os.getpid()}.",
                                   suffix=".tmp", dir=directory)
    except OSError as e:
        raise _error(path, e) from e
    try:
        try:
            os.fchmod(fd, default_mode(path))
            f = os.fdopen(fd, mode)
        except BaseException:
            os.close(fd)
            raise
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        # make the rename itself durable
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, FileNotFoundError):
            raise _error(path, e) from e
        raise


def atomic_write_bytes(path, data):
    with atomic_write(path, "wb") as f:
        f.write(data)


@contextlib.contextmanager
def file_lock(path):
    """The exclusive lock (``PATH.lock``) every writer of a sensitivities file takes."""
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
