"""Atomic file writes: temp file in the same directory + fsync + rename.

A reader (or a crash with ``kill -9``) sees either the old file or the new one, never
a half-written one. The new file gets the permissions a plain ``open()`` would give it
(0666 less the umask; an existing file keeps its mode), not ``mkstemp``'s 0600. Temp
files are named ``.NAME.<pid>.<random>.tmp``; those left by a killed writer (its process
gone) are removed by the next write of the same file. A failed write (full disk, no
permission) raises ``WriteError`` with one line, and the previous file is left intact.

Folders (an export: several files that only make sense together) are written with
``atomic_dir``: built whole in a temporary folder beside the target, checked, then swapped
in, so the target is always either the previous folder exactly or the new one complete.
"""
import contextlib
import errno
import fcntl
import os
import re
import shutil
import tempfile

from ppdet.core.errors import UserError, WriteError

__all__ = ["atomic_write", "atomic_write_bytes", "default_mode", "remove_stale_temps",
           "pid_alive", "file_lock", "atomic_dir", "recover_dir", "write_reason",
           "atomic_imwrite"]


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


_REASONS = {
    errno.ENOSPC: "no space left on the device: free some space or write elsewhere",
    errno.EDQUOT: "disk quota exceeded: free some space or write elsewhere",
    errno.EROFS: "the file system is read-only: write elsewhere",
    errno.EACCES: "permission denied: write elsewhere or fix the permissions",
    errno.EPERM: "operation not permitted: write elsewhere or fix the permissions",
    errno.EFBIG: "the file is too large for this file system",
}


def write_reason(exc):
    """What an ``OSError`` from a write means, in words, with the usual fix."""
    reason = _REASONS.get(exc.errno)
    if reason is None:
        reason = exc.strerror or str(exc) or type(exc).__name__
    return reason


def _error(path, exc):
    kept = "the previous file is unchanged" if os.path.exists(path) else "nothing was written"
    return WriteError(f"cannot write {path}: {write_reason(exc)} ({kept})", path=path,
                      reason=write_reason(exc))


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


def atomic_imwrite(path, image_bgr):
    """``cv2.imwrite``, atomically, and an error (not a silent ``False``) when it fails."""
    import cv2
    ext = os.path.splitext(path)[1] or ".png"
    ok, data = cv2.imencode(ext, image_bgr)
    if not ok:
        raise WriteError(f"cannot write {path}: OpenCV cannot encode '{ext}' images",
                         path=path, reason="cannot encode")
    atomic_write_bytes(path, data.tobytes())


# --- folders -------------------------------------------------------------------------------
RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a, b):
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the
    system or the file system cannot."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                   ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), b)


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root):
    for dirpath, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(dirpath)


def _side_names(target):
    parent, name = os.path.split(os.path.abspath(target))
    return parent, name, re.compile(r"^\." + re.escape(name) + r"\.(tmp|old)-(\d+)$")


def recover_dir(target):
    """Finish what a killed ``atomic_dir`` left beside ``target`` (its process gone): a
    half-built temporary folder is removed; a previous folder moved aside (a kill between
    the two renames of the fallback swap) is put back when ``target`` is missing, else
    removed. Returns the list of paths removed or restored."""
    parent, _, pattern = _side_names(target)
    try:
        names = sorted(os.listdir(parent))
    except OSError:
        return []
    done = []
    # backups first: the previous folder goes back before anything else is looked at
    for name in sorted(names, key=lambda n: ".old-" not in n):
        m = pattern.match(name)
        if not m or int(m.group(2)) == os.getpid() or pid_alive(int(m.group(2))):
            continue
        path = os.path.join(parent, name)
        with contextlib.suppress(OSError):
            if m.group(1) == "old" and not os.path.lexists(target):
                os.rename(path, target)
            else:
                shutil.rmtree(path)
            done.append(path)
    return done


def _shown(path, tmp, target):
    """A path inside the temporary folder, as the user will know it: inside ``target``."""
    path = os.fspath(path)
    if path == tmp or path.startswith(tmp + os.sep):
        return target + path[len(tmp):]
    return path


@contextlib.contextmanager
def atomic_dir(target, verify=None):
    """Write a folder whole or not at all::

        with atomic_dir("output_inference/NAME") as tmp:
            ...write every file into tmp...

    The body writes into ``tmp`` (``.NAME.tmp-<pid>`` beside ``target``, same file system,
    created with the umask's permissions like ``os.makedirs``). On a clean exit
    ``verify(tmp)`` runs when given (it raises to refuse the folder), every file is fsynced,
    and ``tmp`` replaces ``target`` in one step (``renameat2(RENAME_EXCHANGE)``; where that
    is missing, ``target`` is renamed ``.NAME.old-<pid>``, ``tmp`` renamed into place and the
    old one removed). An exception (a full disk, a failed verification, Ctrl-C) removes
    ``tmp`` and leaves ``target`` exactly as it was. After ``kill -9`` the next
    ``atomic_dir`` (or ``recover_dir``) of the same target cleans up (see ``recover_dir``).
    An ``OSError`` becomes a one-line ``WriteError`` naming the file as it would have been
    called inside ``target``. The whole folder is replaced: a caller that must keep other
    files of ``target`` checks that first. Every export (tools/export_model.py,
    slim/prune/export_model.py, INT8 exports) goes through this function.
    """
    target = os.path.abspath(os.fspath(target))
    parent, name, _ = _side_names(target)
    tmp = os.path.join(parent, f".{name}.tmp-{os.getpid()}")
    existed = os.path.isdir(target)
    kept = "the previous folder is unchanged" if existed else "nothing was written"
    if os.path.lexists(target) and not existed:
        raise WriteError(f"cannot write {target}: it is a file, not a folder", path=target,
                         reason="a file")
    _make_tmp(target, parent, tmp, kept)
    try:
        yield tmp
        if verify is not None:
            verify(tmp)
        _fsync_tree(tmp)
        _swap_into_place(tmp, target, parent, name)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        error = _as_one_line(e, tmp, target, kept)
        if error is not None:
            raise error from e
        raise


def _make_tmp(target, parent, tmp, kept):
    """An empty ``tmp`` beside ``target``, after the leftovers of killed runs are gone."""
    try:
        os.makedirs(parent, exist_ok=True)
        recover_dir(target)
        if os.path.lexists(tmp):          # this process's own leftover
            shutil.rmtree(tmp)
        os.mkdir(tmp)
    except OSError as e:
        where = e.filename if e.filename is not None else parent
        raise WriteError(f"cannot write {_shown(where, tmp, target)}: {write_reason(e)} "
                         f"({kept})", path=target, reason=write_reason(e)) from e


def _swap_into_place(tmp, target, parent, name):
    """``tmp`` becomes ``target`` in one step where the kernel can, else by two renames."""
    if not os.path.lexists(target):
        os.rename(tmp, target)
    elif _exchange(tmp, target):
        shutil.rmtree(tmp, ignore_errors=True)       # now the previous folder
    else:
        backup = os.path.join(parent, f".{name}.old-{os.getpid()}")
        os.rename(target, backup)
        os.rename(tmp, target)
        shutil.rmtree(backup, ignore_errors=True)
    _fsync_dir(parent)


def _as_one_line(e, tmp, target, kept):
    """The one-line error to raise instead of ``e`` (paths shown inside ``target``, what
    was kept said), or None: re-raise ``e`` as it is."""
    if isinstance(e, WriteError) and getattr(e, "path", None):
        where = _shown(e.path, tmp, target)
        return WriteError(f"cannot write {where}: {e.reason} ({kept})", path=where,
                          reason=e.reason)
    if isinstance(e, OSError) and not isinstance(e, FileNotFoundError):
        where = _shown(e.filename, tmp, target) if e.filename is not None else target
        return WriteError(f"cannot write {where}: {write_reason(e)} ({kept})",
                          path=where, reason=write_reason(e))
    if isinstance(e, UserError) and tmp in str(e):      # e.g. a refused verification
        return UserError(f"{str(e).replace(tmp, target)} ({kept})")
    return None
