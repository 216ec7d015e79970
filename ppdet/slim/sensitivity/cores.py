"""How many CPU cores a sensitivity process may use, sharing the machine with its peers.

A process uses ``cores // peers`` predictor workers, where the peers are

- under ``paddle.distributed.launch``: the processes of this node (``PADDLE_LOCAL_SIZE``,
  else ``PADDLE_TRAINERS_NUM``), fixed;
- otherwise: the sensitivity processes of this user alive now on this machine (the nohup
  recipe: one process per ratio set), each registered by a file named after its pid in
  ``$TMPDIR/ppdet_sensitive_<uid>/``. The count is read again before every measurement, so
  when a peer finishes the others take its cores.
"""
import os
import tempfile
import time

from ppdet.utils.atomic import pid_alive

__all__ = ["cpu_cores", "launch_local_size", "CoreShare"]


def cpu_cores():
    """Cores this process may run on (its affinity mask, e.g. under taskset or a container)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:      # not Linux
        return os.cpu_count() or 1


def launch_local_size():
    """Processes of this node under paddle.distributed.launch, or None outside it."""
    for key in ("PADDLE_LOCAL_SIZE", "PADDLE_TRAINERS_NUM"):
        value = os.environ.get(key)
        if value and value.isdigit() and int(value) > 0:
            return int(value)
    return None


class CoreShare:
    """``with CoreShare() as share: share.workers()`` -> workers this process should run now
    (at least 1, at most ``limit``)."""

    def __init__(self, limit=None, folder=None, cores=None):
        self.cores = cores or cpu_cores()
        self.limit = limit or self.cores
        self.local = launch_local_size()
        self.folder = folder or os.path.join(tempfile.gettempdir(),
                                             f"ppdet_sensitive_{os.getuid()}")
        self.mine = None
        self._seen, self._when = 1, 0.0

    def __enter__(self):
        if self.local is None:
            os.makedirs(self.folder, exist_ok=True)
            self.mine = os.path.join(self.folder, str(os.getpid()))
            with open(self.mine, "w") as f:
                f.write(str(time.time()))
        return self

    def __exit__(self, *exc):
        if self.mine:
            try:
                os.remove(self.mine)
            except FileNotFoundError:
                pass
            self.mine = None

    def peers(self):
        """Sensitivity processes sharing the cores, this one included (cached for 1 s)."""
        if self.local is not None:
            return self.local
        if time.time() - self._when < 1.0:
            return self._seen
        n = 0
        for name in os.listdir(self.folder) if os.path.isdir(self.folder) else []:
            if not name.isdigit():
                continue
            if pid_alive(int(name)):
                n += 1
            else:                       # a peer killed with -9 left its file
                try:
                    os.remove(os.path.join(self.folder, name))
                except FileNotFoundError:
                    pass
        self._seen, self._when = max(1, n), time.time()
        return self._seen

    def workers(self):
        return max(1, min(self.limit, self.cores // self.peers()))
