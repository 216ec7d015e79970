"""A compiled program run over a cached set, in this process or in a worker process.

Paddle Inference's ``predictor.run`` keeps the GIL: two predictor clones in threads of one
process measured no faster than one (bench/HISTORY.md, "Issue 17, session 5"), while two processes
nearly doubled the rate. So every core beyond the first gets a worker process of its own:
it loads the exported programs (the whole one and the cut ones, see
:mod:`ppdet.slim.sensitivity.cuts`), maps the cached arrays from disk (shared page cache, no copy
per process) and answers "run every batch of program P with these constant inputs" over a
pipe.
"""
import os
import subprocess
import sys
import traceback
from multiprocessing.connection import Connection

import numpy as np

__all__ = ["make_predictor", "run_batches", "save_arrays", "Worker"]


def make_predictor(prefix, threads=1, device="cpu"):
    """A Paddle Inference predictor for ``prefix``.pdmodel/.pdiparams: oneDNN with
    ``threads`` threads on the CPU, or GPU 0."""
    from paddle import inference

    from ppdet.engine.export import check_model_dir
    check_model_dir(os.path.dirname(prefix), need=("program", "params"),
                    prefix=os.path.basename(prefix))
    config = inference.Config(prefix + ".pdmodel", prefix + ".pdiparams")
    if device == "gpu":
        config.enable_use_gpu(256, 0)
    else:
        config.disable_gpu()
        config.enable_mkldnn()
        config.set_cpu_math_library_num_threads(threads)
    config.disable_glog_info()
    return inference.create_predictor(config)


def run_batches(predictor, batched, constants, batch_size, n_out=2):
    """Run ``predictor`` over ``batched`` (``{input: array}``, split along the first axis)
    with ``constants`` (``{input: array}``, fed once); the first ``n_out`` outputs per
    batch."""
    handles = {n: predictor.get_input_handle(n) for n in predictor.get_input_names()}
    for name, value in constants.items():
        handles[name].copy_from_cpu(np.ascontiguousarray(value))
    n = len(next(iter(batched.values())))
    names = predictor.get_output_names()[:n_out]
    outs = []
    for s in range(0, n, batch_size):
        for name, value in batched.items():
            handles[name].copy_from_cpu(np.ascontiguousarray(value[s:s + batch_size]))
        predictor.run()
        outs.append(tuple(predictor.get_output_handle(o).copy_to_cpu() for o in names))
    return outs


def _serve(inbox, outbox):
    """The worker process: answer run requests until told to stop or the parent is gone."""
    try:
        programs, batch_size, threads = inbox.recv()
        predictors, batched = {}, {}
        for name, (prefix, arrays) in programs.items():
            predictors[name] = make_predictor(prefix, threads)
            batched[name] = {k: np.load(path, mmap_mode="r") for k, path in arrays.items()}
        outbox.send(("ready", None))
    except BaseException:
        outbox.send(("error", traceback.format_exc()))
        return
    while True:
        try:
            request = inbox.recv()
        except (EOFError, OSError):         # the parent died (kill -9): nothing to answer
            return
        if request is None:
            return
        name, constants = request
        try:
            outbox.send(("ok", run_batches(predictors[name], batched[name], constants,
                                           batch_size)))
        except BaseException:
            outbox.send(("error", traceback.format_exc()))


class Worker:
    """One worker process over ``programs`` (``{name: (prefix, {input: .npy path})}``: a
    predictor each, over its own arrays). Starts at once and loads in the background;
    :meth:`ready` says whether it can take work without waiting."""

    def __init__(self, programs, batch_size, threads=1):
        # a fresh interpreter (python -m), not multiprocessing: it never forks a process
        # running Paddle, and never re-imports the caller's main script
        from_parent, to_child = os.pipe()
        from_child, to_parent = os.pipe()
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, [root, os.environ.get("PYTHONPATH")])))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ppdet.slim.sensitivity.worker", str(from_parent),
             str(to_parent)],
            pass_fds=(from_parent, to_parent), env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL)
        os.close(from_parent)
        os.close(to_parent)
        self.outbox = Connection(to_child, readable=False)
        self.inbox = Connection(from_child, writable=False)
        self.outbox.send((programs, batch_size, threads))
        self._ready = False

    def ready(self):
        if not self._ready and self.inbox.poll():
            self._answer()
        return self._ready

    def _answer(self):
        try:
            status, value = self.inbox.recv()
        except EOFError:
            raise RuntimeError(f"evaluation worker {self.proc.pid} exited "
                               f"(code {self.proc.poll()})") from None
        if status == "error":
            raise RuntimeError(f"evaluation worker {self.proc.pid} failed:\n{value}")
        if status == "ready":
            self._ready = True
        return value

    def run(self, constants, program):
        """The first two outputs per batch of ``program``, with ``constants`` fed (blocks
        until loaded)."""
        while not self._ready:
            self._answer()
        self.outbox.send((program, constants))
        return self._answer()

    def close(self):
        if self.proc.poll() is None:
            try:
                self.outbox.send(None)
            except OSError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.outbox.close()
        self.inbox.close()


def save_arrays(folder, arrays):
    """``{input: array}`` -> ``{input: path}`` of ``.npy`` files in ``folder`` (for workers)."""
    paths = {}
    for name, value in arrays.items():
        paths[name] = os.path.join(folder, f"{name}.npy")
        np.save(paths[name], np.ascontiguousarray(value))
    return paths


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1]), writable=False),
           Connection(int(sys.argv[2]), readable=False))
