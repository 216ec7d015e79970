"""Timing saved programs under Paddle Inference (CPU, oneDNN), as they are deployed.

A spec list becomes a legacy program of independent conv(+BN+act) pieces, exported once and
timed with the fastest of a few predictors (one now and then runs 1.5-2x slower for its
whole life); :func:`run_overhead` is what an almost empty program costs.
"""
import contextlib
import json
import os
import tempfile
import time

import numpy as np
import paddle

__all__ = ["STAT", "INSTANCES", "time_program", "time_specs", "run_overhead",
           "Int8Pieces"]


class _Pieces(paddle.nn.Layer):
    """Independent conv(+BN+act) pieces, one input each: what one table entry times."""

    def __init__(self, specs):
        super().__init__()
        self.specs = specs
        self.convs = paddle.nn.LayerList()
        self.bns = paddle.nn.LayerList()
        for s in specs:
            self.convs.append(paddle.nn.Conv2D(
                s["in"], s["out"], s["k"], stride=s["stride"], padding=s["padding"],
                dilation=s["dilation"], groups=s["groups"],
                bias_attr=None if s["bias"] else False))
            self.bns.append(paddle.nn.BatchNorm(s["out"]) if s["bn"] else paddle.nn.Identity())

    def forward(self, x0, x1=None, x2=None, x3=None, x4=None, x5=None, x6=None, x7=None):
        # explicit arguments: to_static cannot take *args
        xs = [x0, x1, x2, x3, x4, x5, x6, x7]
        outs = []
        for s, conv, bn, x in zip(self.specs, self.convs, self.bns, xs):
            y = bn(conv(x))
            if s["act"] == "relu":
                y = paddle.nn.functional.relu(y)
            elif s["act"] == "relu6":
                y = paddle.nn.functional.relu6(y)
            elif s["act"] == "leaky":
                y = paddle.nn.functional.leaky_relu(y, 0.1)
            outs.append(y)
        return outs


STAT = "p0"    # the minimum: other processes on a shared machine only ever add time


INSTANCES = 2  # predictors per timing, the fastest kept (see time_program)


@contextlib.contextmanager
def _quiet_fds():
    """stdout and stderr of the C++ side to /dev/null (oneDNN's INT8 passes print a page
    per predictor, even with glog off)."""
    import sys
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


def _predictor(model_file, params_file, inputs, threads=1, use_mkldnn=True, precision="fp32"):
    """A predictor as deployed: the INT8 config of ``legacy_ir`` for ``precision`` int8."""
    from paddle import inference

    from ppdet.engine.legacy_ir import configure_predictor
    config = inference.Config(model_file, params_file)
    config.disable_gpu()
    config.set_cpu_math_library_num_threads(int(threads))
    if precision == "int8":
        from ppdet.engine.cpu_features import log_int8_support
        log_int8_support()                  # once, before the C++ side is silenced
    configure_predictor(config, precision, use_mkldnn)
    config.disable_glog_info()
    with _quiet_fds() if precision == "int8" else contextlib.nullcontext():
        predictor = inference.create_predictor(config)
    for name, value in zip(predictor.get_input_names(), inputs):
        predictor.get_input_handle(name).copy_from_cpu(np.ascontiguousarray(value))
    return predictor


def _run_times(predictor, warmup, repeats):
    for _ in range(warmup):
        predictor.run()
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        predictor.run()
        times.append((time.perf_counter() - tic) * 1000)
    return times


def time_program(model_file, params_file, inputs, threads=1, use_mkldnn=True, warmup=5,
                 repeats=30, instances=INSTANCES, precision="fp32"):
    """ms (:data:`STAT` of ``repeats``) of a saved legacy program under Paddle Inference
    with numpy ``inputs``, the fastest of ``instances`` predictors (one now and then runs
    1.5-2x slower for its whole life); ``precision`` int8: a quantized program, run with
    the INT8 predictor config."""
    from ppdet.engine.latency import summarise
    best, alive = float("inf"), []
    for _ in range(max(int(instances), 1)):
        predictor = _predictor(model_file, params_file, inputs, threads, use_mkldnn,
                               precision)
        alive.append(predictor)          # kept alive: the next one gets other buffers
        best = min(best, summarise(_run_times(predictor, warmup, repeats), STAT))
    return best


_MAX_PIECES = 8


def _forget_stale_traces():
    """Drop paddle's record of parameters seen by programs traced outside ``to_static``
    (paddleslim's tracer in PruneGraph, FLOPs counts): it is keyed by ``id(program)``, so
    once such a program is freed a new one can reuse its id and ``jit.save`` then looks for
    the old model's parameters (``KeyError: 'conv1_bn_mean'`` after ~150 table entries).
    Nothing is being traced while this runs (one thread), so no live entry is lost."""
    from paddle.jit.dy2static.program_translator import ProgramTranslator
    recorder = getattr(ProgramTranslator.get_instance(), "_params_recorder", None)
    if recorder is not None and isinstance(getattr(recorder, "params_dict", None), dict):
        recorder.params_dict.clear()


def _save_pieces(specs, prefix):
    """Save the pieces as a legacy program at ``prefix`` (.pdmodel/.pdiparams); returns
    the numpy inputs they are timed with."""
    paddle.seed(0)
    net = _Pieces(specs)
    net.eval()
    spec_in = [paddle.static.InputSpec([1, s["in"], *s["hw"]], "float32", f"x{i}")
               for i, s in enumerate(specs)]
    rng = np.random.RandomState(0)
    inputs = [rng.randn(1, s["in"], *s["hw"]).astype("float32") for s in specs]
    _forget_stale_traces()
    with paddle.pir_utils.DygraphOldIrGuard():
        static = paddle.jit.to_static(net, input_spec=spec_in, full_graph=True)
        paddle.jit.save(static, prefix)
    return inputs


@contextlib.contextmanager
def _exported(specs):
    """``(model file, params file, inputs)`` of the pieces saved as a legacy program (as
    deployed), in a temporary folder that lives as long as the context."""
    with tempfile.TemporaryDirectory(prefix="latency_") as tmp:
        inputs = _save_pieces(specs, os.path.join(tmp, "m"))
        yield os.path.join(tmp, "m.pdmodel"), os.path.join(tmp, "m.pdiparams"), inputs


class Int8Pieces:
    """One-conv programs quantized for INT8 timing, cached by spec for a table build: each
    spec is exported once (FP32, legacy), quantized with a cheap calibration (``abs_max``
    on its own timing input: only the speed matters) in one child process per
    :meth:`prepare` call (``legacy_ir.quantize_programs``), then timed with the INT8
    predictor config as often as the build asks."""

    def __init__(self, folder):
        self.folder, self.ready, self.inputs = folder, {}, {}

    @staticmethod
    def _key(spec):
        return json.dumps(spec, sort_keys=True)

    def prepare(self, specs):
        """Quantize every spec not done yet, all in one child process."""
        from ppdet.engine.legacy_ir import quantize_programs
        jobs = []
        for spec in specs:
            key = self._key(spec)
            if key in self.ready or any(j["key"] == key for j in jobs):
                continue
            d = os.path.join(self.folder, str(len(self.ready) + len(jobs)))
            inputs = _save_pieces([spec], os.path.join(d, "fp32", "model"))
            np.savez(os.path.join(d, "calib.npz"), x0=inputs[0])
            jobs.append({"key": key, "fp32_dir": os.path.join(d, "fp32"), "batch_size": 1,
                         "out_dir": os.path.join(d, "int8"),
                         "calib": os.path.join(d, "calib.npz"), "inputs": inputs})
        quantize_programs([{k: v for k, v in j.items() if k not in ("key", "inputs")}
                           for j in jobs])
        for j in jobs:
            self.ready[j["key"]], self.inputs[j["key"]] = j["out_dir"], j["inputs"]
        return len(jobs)

    def time(self, spec, threads=1, warmup=5, repeats=30, gate=None):
        """ms of the spec's INT8 program (quantized first if :meth:`prepare` missed it)."""
        key = self._key(spec)
        if key not in self.ready:
            self.prepare([spec])
        d = self.ready[key]
        if gate is not None:
            gate.wait()
        return time_program(os.path.join(d, "model.pdmodel"),
                            os.path.join(d, "model.pdiparams"), self.inputs[key], threads,
                            True, warmup, repeats, precision="int8")


def time_specs(specs, threads=1, use_mkldnn=True, warmup=5, repeats=30, gate=None):
    """Export the pieces once (legacy program, as deployed, at most 8 a program) and time
    them (after ``gate.wait()`` when a :class:`QuietGate` is given)."""
    if len(specs) > _MAX_PIECES:
        return sum(time_specs(specs[i:i + _MAX_PIECES], threads, use_mkldnn, warmup, repeats,
                              gate)
                   for i in range(0, len(specs), _MAX_PIECES))
    with _exported(specs) as (model_file, params_file, inputs):
        if gate is not None:
            gate.wait()
        return time_program(model_file, params_file, inputs, threads, use_mkldnn, warmup,
                            repeats)


_OVERHEAD = {}


OVERHEAD_SPEC = {"in": 1, "out": 1, "k": [1, 1], "stride": [1, 1], "padding": 0,
                 "dilation": [1, 1], "groups": 1, "bias": False, "bn": False, "act": None,
                 "hw": [1, 1]}


def run_overhead(threads=1, use_mkldnn=True, repeats=30, int8=None):
    """ms of running a program that does (almost) nothing: a 1x1 conv on one pixel. Every
    one-conv timing carries it once; the whole model carries it once too (in ``fixed``).
    ``int8``: an :class:`Int8Pieces`, the program quantized and run as INT8 (its
    quantize/dequantize reorders are overhead too)."""
    key = (int(threads), bool(use_mkldnn), int8 is not None)
    if key not in _OVERHEAD:
        if int8 is not None:
            _OVERHEAD[key] = min(int8.time(OVERHEAD_SPEC, threads, repeats=repeats)
                                 for _ in range(3))
        else:
            _OVERHEAD[key] = min(time_specs([OVERHEAD_SPEC], threads, use_mkldnn,
                                            repeats=repeats) for _ in range(3))
    return _OVERHEAD[key]
