"""Every touch of the legacy IR and of Paddle's quantization internals (paddle 3.3.1).

Measured facts this module is built on (shared/notes/stack-facts.md, INT8 section):

- ``PostTrainingQuantization`` works on a legacy ``model.pdmodel`` only, and only in a
  process where ``FLAGS_enable_pir_api=0`` was in the environment before ``import paddle``
  (on PIR it fails in ``framework._get_var``). ``quantize`` therefore refuses to run
  anywhere else; ``child_env`` is the environment the parent starts that process with.
- It takes ``data_loader=`` (a callable yielding feed dicts); ``sample_generator`` is refused.
- Paddle Inference runs the quantized program as INT8 only with ``enable_mkldnn()`` AND
  ``enable_mkldnn_int8()``; otherwise the fake-quant ops run in FP32, 6-9x slower than the
  FP32 model. ``configure_predictor`` is the one place a predictor config is set for a
  precision, and it refuses the slow combination.
"""
import os

import numpy as np

from ppdet.core.errors import ConfigError, UserError

__all__ = ["ALGOS", "PRECISIONS", "PIR_FLAG", "child_env", "pir_disabled", "quantize",
           "configure_predictor", "read_program", "conv_weight_shapes", "quantized_ops",
           "QUANT_OPS", "quantize_programs"]

# PostTrainingQuantization's algorithm names
ALGOS = ("hist", "KL", "avg", "mse", "abs_max")
PRECISIONS = ("fp32", "int8")
PIR_FLAG = "FLAGS_enable_pir_api"
QUANTIZABLE = ["conv2d", "depthwise_conv2d"]
# ops a quantized program holds (onnx_format=True writes the *_linear pair)
QUANT_OPS = ("quantize_linear", "dequantize_linear", "fake_quantize_abs_max",
             "fake_quantize_moving_average_abs_max", "fake_channel_wise_dequantize_max_abs",
             "fake_dequantize_max_abs")
_CONVS = ("conv2d", "depthwise_conv2d")


def child_env(base=None):
    """The environment of a process that may quantize: PIR off before paddle is imported."""
    env = dict(os.environ if base is None else base)
    env[PIR_FLAG] = "0"
    return env


def pir_disabled():
    """Whether this process runs the legacy IR (the flag held when paddle was imported)."""
    import paddle
    return os.environ.get(PIR_FLAG) == "0" and not paddle.framework.use_pir_api()


def quantize(fp32_dir, out_dir, calib, algo="hist", batch_size=8, skip_tensors=()):
    """Calibrate the legacy program in ``fp32_dir`` on ``calib`` (``{input name: array}``,
    first axis = samples) and write the quantized ``model.pdmodel|.pdiparams`` to
    ``out_dir``. Convs whose weight (or input) names are in ``skip_tensors`` stay FP32.
    Returns the number of calibration batches used."""
    if algo not in ALGOS:
        raise UserError(f"--algo {algo} is not one of {', '.join(ALGOS)}")
    if not pir_disabled():
        raise RuntimeError(f"quantize() needs {PIR_FLAG}=0 in the environment before paddle "
                           f"is imported: run it in a child process started with child_env()")
    n = len(next(iter(calib.values())))
    batches = n // batch_size
    if batches < 1:
        raise UserError(f"{n} calibration samples are fewer than one batch of {batch_size}")
    import paddle
    from paddle.static.quantization import PostTrainingQuantization
    paddle.enable_static()

    def feeds():
        for b in range(batches):
            yield {k: np.ascontiguousarray(v[b * batch_size:(b + 1) * batch_size])
                   for k, v in calib.items()}

    exe = paddle.static.Executor(paddle.CPUPlace())
    ptq = PostTrainingQuantization(
        executor=exe, model_dir=fp32_dir, model_filename="model.pdmodel",
        params_filename="model.pdiparams", data_loader=feeds, batch_size=batch_size,
        batch_nums=batches, algo=algo, quantizable_op_type=list(QUANTIZABLE),
        onnx_format=True, is_full_quantize=False, optimize_model=False,
        skip_tensor_list=list(skip_tensors) or None)
    ptq.quantize()
    ptq.save_quantized_model(out_dir, model_filename="model.pdmodel",
                             params_filename="model.pdiparams")
    return batches


def configure_predictor(config, precision, use_mkldnn=True, simulate=False):
    """Set a ``paddle.inference.Config`` for ``precision`` (``fp32`` or ``int8``).

    INT8 runs as INT8 only with oneDNN and its INT8 passes: both are switched on, and an
    INT8 model with oneDNN off is refused (it would run its fake-quant ops in FP32, several
    times slower than the FP32 model). ``simulate=True`` is that FP32 simulation on purpose
    (tests compare INT8 against it); nothing else may ask for it.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision '{precision}' is not one of {', '.join(PRECISIONS)}")
    if precision == "int8" and not simulate:
        if not use_mkldnn:
            raise UserError("this model is INT8 (infer_cfg.yml precision: int8): it runs as "
                            "INT8 only with oneDNN; without it, it would run in FP32 several "
                            "times slower than the FP32 model. Drop the option that turns "
                            "oneDNN off")
        from ppdet.engine.cpu_features import log_int8_support
        log_int8_support()
        config.enable_mkldnn()
        config.enable_mkldnn_int8()
        config.switch_ir_optim(True)
    elif use_mkldnn and not simulate:
        config.enable_mkldnn()
    else:
        config.disable_mkldnn()
    return config


def int8_load_hint(error):
    """What to tell a user whose INT8 predictor failed with ``error`` (the message), for the
    oneDNN failures measured here; None for the others."""
    if "after requantize should have input scale" in error:
        # Paddle 3.3.1: cpu_quantize_squash_pass leaves a requantize before an op whose
        # scale it never set, then refuses its own graph. Measured on every MobileNetV1-SSD
        # INT8 model here (head convs kept in FP32 too); run without that pass, the model
        # loads but detects nothing (mAP 0.0): no way round it in this Paddle.
        return ("this Paddle's oneDNN INT8 passes cannot run this model's graph (a known "
                "cpu_quantize_squash_pass failure, seen on MobileNetV1-SSD): deploy it in "
                "FP32 (tools/export_model.py), or try another Paddle Inference version")
    return None


# --- reading a saved legacy program --------------------------------------------------------
def read_program(path):
    """A saved ``.pdmodel`` as a ``core.ProgramDesc``."""
    from paddle.base import core
    with open(path, "rb") as f:
        return core.ProgramDesc(f.read())


def _ops(program):
    block = program.block(0)
    return [block.op(i) for i in range(block.op_size())]


def conv_weight_shapes(model_dir):
    """``{conv weight name: shape}`` of every conv in ``model_dir/model.pdmodel`` (the
    weight a quantized conv reads through a dequantize op is traced back to its name)."""
    program = read_program(os.path.join(model_dir, "model.pdmodel"))
    block = program.block(0)
    producer = {}
    ops = _ops(program)
    for op in ops:
        for name in op.output_arg_names():
            producer[name] = op
    shapes = {}
    for op in ops:
        if op.type() not in _CONVS:
            continue
        name = op.input("Filter")[0]
        src = producer.get(name)
        while src is not None and src.type() in QUANT_OPS:      # back to the parameter
            name = src.input("X")[0]
            src = producer.get(name)
        var = block.find_var(name.encode())
        shapes[name] = list(var.shape())
    return shapes


def quantized_ops(model_dir):
    """``(quantized convs, quant op counts)``: names of the conv weights fed through a
    quantize/dequantize pair, and ``{op type: count}`` of the quant ops."""
    program = read_program(os.path.join(model_dir, "model.pdmodel"))
    ops = _ops(program)
    producer = {n: op for op in ops for n in op.output_arg_names()}
    counts, convs = {}, []
    for op in ops:
        if op.type() in QUANT_OPS:
            counts[op.type()] = counts.get(op.type(), 0) + 1
        if op.type() in _CONVS:
            src = producer.get(op.input("Filter")[0])
            if src is not None and src.type() in QUANT_OPS:
                convs.append(src.input("X")[0])
    return convs, counts


# --- the one child process that quantizes ----------------------------------------------
def quantize_programs(jobs, algo="abs_max"):
    """Quantize each job's legacy program in ONE child process, started with
    :func:`child_env` (PIR off there; this process is never switched). ``jobs`` is
    ``[{"fp32_dir", "out_dir", "calib" (an .npz of feeds, first axis = samples),
    "batch_size", "skip" (optional: conv weights kept FP32)}]``. Returns the number of
    calibration batches of each job. Bad input in the child (a ``UserError`` there) comes
    back as ``UserError`` with its one line; a crash as RuntimeError with the child's
    last output. Used by post_quant (one job, real calibration) and by the INT8 latency
    tables (many programs, a cheap ``abs_max`` calibration: only their speed matters)."""
    import json
    import subprocess
    import sys
    import tempfile

    from ppdet.engine.builder import REPO_ROOT
    if not jobs:
        return []
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO_ROOT, env.get("PYTHONPATH")) if p)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"algo": algo, "jobs": list(jobs)}, f)
    try:
        proc = subprocess.run([sys.executable, "-m", "ppdet.engine.legacy_ir", f.name],
                              env=env, cwd=REPO_ROOT, capture_output=True, text=True)
    finally:
        os.unlink(f.name)
    if proc.returncode == 2:
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
        raise UserError(lines[-1][len("error: "):] if lines else proc.stderr.strip()[-300:])
    if proc.returncode != 0:
        raise RuntimeError(f"quantizing {len(jobs)} program(s) failed in the child process "
                           f"(exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _quantize_jobs(path):
    """The child's side of :func:`quantize_programs`: exit 2 with one ``error:`` line on
    bad input (the flag missing included), 1 with a traceback on a crash, else 0 and the
    batch counts as a JSON list on the last stdout line."""
    import json
    import sys
    if os.environ.get(PIR_FLAG) != "0":
        print(f"error: start this with {PIR_FLAG}=0 in its environment", file=sys.stderr)
        return 2
    with open(path) as f:
        spec = json.load(f)
    batches = []
    try:
        for job in spec["jobs"]:
            with np.load(job["calib"]) as data:
                calib = {k: data[k] for k in data.files}
            batches.append(quantize(job["fp32_dir"], job["out_dir"], calib, spec["algo"],
                                    int(job.get("batch_size", 1)), job.get("skip", ())))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(batches))
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(_quantize_jobs(sys.argv[1]))
