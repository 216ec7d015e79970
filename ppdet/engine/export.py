"""Export for Paddle Inference and run the exported model.

The model is saved with ``paddle.jit.save`` in the legacy program format (under
``OldIrGuard``): with oneDNN on, the PIR format crashes in a conv+BN+leaky_relu fusion
pass and cannot convert nearest ``interpolate`` (see shared/notes/stack-facts.md).
Inputs: ``image`` [N,3,H,W], ``im_shape`` [N,2], ``scale_factor`` [N,2]; outputs
``bbox`` [K,6] and ``bbox_num`` [N], then the raw head outputs (before decoding and NMS)
that ``verify_export`` compares. ``infer_cfg.yml`` beside it holds the
preprocessing and labels.

The saved program is then simplified where that lets Paddle Inference fuse more (see
``fold_conv_bias``); the outputs stay the same.

An export is written whole or not at all (``ppdet.utils.atomic.atomic_dir``): built in a
temporary folder beside the target, checked with ``check_model_dir`` (and the caller's
``verify``), then swapped in, so a full disk, a kill or a failed verification leaves the
previous export exactly as it was. Everything that loads an exported folder checks it with
``check_model_dir`` first: a missing, unreadable or truncated file is one line naming it,
not a Paddle C++ error.
"""
import json
import os
import re
import struct

import numpy as np
import paddle
import yaml

from ppdet.core.errors import ConfigError, DataError, UserError
from ppdet.utils.atomic import atomic_dir, atomic_write_bytes

__all__ = ["export_model", "fold_conv_bias", "simplify_saved_program", "Predictor",
           "ExportedDetector", "preprocess_image", "read_image", "verify_export",
           "VerifyResult", "check_model_dir", "ModelDirError", "EXPORT_FILES"]

# what an export folder may hold: export_model replaces such a folder whole
EXPORT_FILES = ("model.pdmodel", "model.json", "model.pdiparams", "model.pdiparams.info",
                "infer_cfg.yml")

_EXPORTED_TRANSFORMS = ("Resize", "NormalizeImage", "Permute")


class _ExportWrapper(paddle.nn.Layer):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image, im_shape, scale_factor):
        heads = self.model.head_outputs(image)
        out = self.model.predict_from_outputs(heads, im_shape, scale_factor)
        # the raw head outputs follow, for verify_export (deployment reads the first two)
        return (out["bbox"], out["bbox_num"], *_flatten(heads))


def _infer_cfg(cfg, class_names):
    steps = []
    for item in (cfg.get("TestReader") or {}).get("sample_transforms", []):
        name, kwargs = next(iter(item.items()))
        if name in _EXPORTED_TRANSFORMS:
            steps.append({"type": name, **(kwargs or {})})
    return {"mode": "paddle", "arch": cfg.get("architecture"), "min_subgraph_size": 3,
            "draw_threshold": 0.5, "metric": cfg.get("metric", "VOC"),
            "Preprocess": steps, "label_list": list(class_names)}


def fold_conv_bias(program):
    """Rewrite each conv bias of a legacy ``ProgramDesc`` into the form oneDNN fuses;
    returns how many were rewritten.

    Paddle 3 writes a conv's bias as ``reshape2(bias -> [1, C, 1, 1])`` then
    ``elementwise_add(axis=-1)``; Paddle Inference's ``conv_bias_onednn_fuse_pass`` only
    fuses ``elementwise_add(conv_out, bias [C], axis=1)`` (the static-era form), so the
    YOLOv3 and SSD prediction convs ran as a conv plus a separate add. Same arithmetic, so
    the same outputs.
    """
    block = program.block(0)
    ops = [block.op(i) for i in range(block.op_size())]
    producer, users = {}, {}
    for op in ops:
        for name in op.output_arg_names():
            producer[name] = op
        for name in op.input_arg_names():
            users.setdefault(name, []).append(op)
    reshapes = []
    for add in ops:
        if add.type() != "elementwise_add":
            continue
        x, y = add.input("X")[0], add.input("Y")[0]
        conv, reshape = producer.get(x), producer.get(y)
        if conv is None or conv.type() not in ("conv2d", "depthwise_conv2d") or \
                conv.attr("data_format") not in ("NCHW", "AnyLayout") or \
                reshape is None or reshape.type() != "reshape2" or len(users[y]) != 1:
            continue
        bias = block.find_var(reshape.input("X")[0].encode())
        channels = block.find_var(x.encode()).shape()[1]
        if bias is None or not bias.persistable() or bias.shape() != [channels] or \
                list(reshape.attr("shape")) != [1, channels, 1, 1]:
            continue
        add.set_input("Y", [bias.name()])
        add._set_attr("axis", 1)
        reshapes.append(reshape)
    for reshape in reshapes:
        # its output (whose one user now reads the bias) and its XShape, if nothing reads it
        dropped = [n for n in reshape.output_arg_names()
                   if n == reshape.output("Out")[0] or not users.get(n)]
        index = next(i for i in range(block.op_size()) if block.op(i).id() == reshape.id())
        block._remove_op(index, index + 1)      # frees the op: do not touch `reshape` now
        for name in dropped:
            block._remove_var(name.encode())
    return len(reshapes)


def simplify_saved_program(path):
    """Simplify a saved ``.pdmodel`` in place (``fold_conv_bias``)."""
    from paddle.base import core
    with open(path, "rb") as f:
        program = core.ProgramDesc(f.read())
    if fold_conv_bias(program):
        atomic_write_bytes(path, program.serialize_to_string())


def check_export_target(output_dir):
    """An export replaces ``output_dir`` whole: refuse one that holds anything else (the
    user's files would go with it). Nothing is written."""
    if not os.path.isdir(output_dir):
        return output_dir
    others = sorted(n for n in os.listdir(output_dir) if n not in EXPORT_FILES)
    if others:
        raise UserError(f"{output_dir} holds {others[0]}, which is not part of an export: "
                        f"an export replaces the whole folder; move it or export elsewhere")
    return output_dir


def export_model(model, cfg, output_dir, class_names, simplify=True, verify=None):
    """Write ``output_dir/model.pdmodel|.pdiparams`` and ``infer_cfg.yml``. ``simplify=False``
    keeps the program as ``paddle.jit.save`` wrote it (benchmarks compare the two).

    Atomic (``atomic_dir``): the files are written into a temporary folder beside
    ``output_dir``, checked with ``check_model_dir``, then ``verify(folder)`` (when given;
    it raises to refuse the export), and only then swapped in. Any failure leaves a previous
    export in ``output_dir`` byte-identical."""
    model.eval()
    from ppdet.engine.builder import image_size_for
    size = image_size_for(cfg, "test")
    spec = [paddle.static.InputSpec([None, 3, size[0], size[1]], "float32", "image"),
            paddle.static.InputSpec([None, 2], "float32", "im_shape"),
            paddle.static.InputSpec([None, 2], "float32", "scale_factor")]
    check_export_target(output_dir)

    def check(folder):
        check_model_dir(folder)
        if verify is not None:
            verify(folder)
    with atomic_dir(output_dir, verify=check) as tmp:
        # the old-IR flag only (OldIrGuard would also switch to static mode)
        with paddle.pir_utils.DygraphOldIrGuard():
            static = paddle.jit.to_static(_ExportWrapper(model), input_spec=spec,
                                          full_graph=True)
            paddle.jit.save(static, os.path.join(tmp, "model"))
        if simplify:
            simplify_saved_program(os.path.join(tmp, "model.pdmodel"))
        atomic_write_bytes(os.path.join(tmp, "infer_cfg.yml"),
                           yaml.safe_dump(_infer_cfg(cfg, class_names),
                                          sort_keys=False).encode())
    return output_dir


# --- checking an exported folder before Paddle sees it ------------------------------------
class ModelDirError(UserError):
    """An exported model folder that cannot be loaded; ``path`` is the broken file."""

    def __init__(self, message, path=None):
        super().__init__(message)
        self.path = path


_DTYPE_BYTES = {0: 1, 1: 2, 2: 4, 3: 8, 4: 2, 5: 4, 6: 8, 20: 1, 21: 1, 22: 2, 23: 8, 24: 16}
_AGAIN = "export the model again"


def _read(path, what):
    if not os.path.exists(path):
        raise ModelDirError(f"{path} not found: {what}", path)
    if not os.path.isfile(path):
        raise ModelDirError(f"{path} is not a file: {what}", path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ModelDirError(f"cannot read {path}: {e.strerror or e}", path) from e
    if not data:
        raise ModelDirError(f"{path} is empty: {what}", path)
    return data


def _legacy_program(path, what):
    from google.protobuf.message import DecodeError
    from paddle.base.proto import framework_pb2
    data = _read(path, what)
    try:
        program = framework_pb2.ProgramDesc.FromString(data)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise ModelDirError(f"{path} is truncated or corrupt (not a Paddle program): "
                            f"{what}", path) from e
    if not program.blocks:
        raise ModelDirError(f"{path} holds no program: {what}", path)
    ops = [op.type for op in program.blocks[0].ops]
    if "feed" not in ops or "fetch" not in ops:
        raise ModelDirError(f"{path} is truncated or not an inference program (no "
                            f"{'feed' if 'feed' not in ops else 'fetch'} op): {what}", path)
    kinds = framework_pb2.VarType.Type
    dense = kinds.Value("DENSE_TENSOR" if "DENSE_TENSOR" in kinds.keys() else "LOD_TENSOR")
    field = "dense_tensor" if "dense_tensor" in framework_pb2.VarType.DESCRIPTOR.fields_by_name \
        else "lod_tensor"
    classes = {a.i for op in program.blocks[0].ops if op.type == "yolo_box"
               for a in op.attrs if a.name == "class_num"}
    return [list(getattr(v.type, field).tensor.dims) for v in program.blocks[0].vars
            if v.persistable and v.type.type == dense], \
        (classes.pop() if len(classes) == 1 else None)


def _param_records(path, what):
    """Walk a combined ``.pdiparams`` (one ``save_dense_tensor`` record per parameter)
    without reading the data: the list of shapes; an error unless it ends exactly."""
    from paddle.base.proto import framework_pb2
    if not os.path.isfile(path):
        _read(path, what)                  # the right one-line error
    size = os.path.getsize(path)
    if size == 0:
        raise ModelDirError(f"{path} is empty: {what}", path)
    shapes = []
    bad = ModelDirError(f"{path} is truncated or corrupt (a parameter record ends past the "
                        f"file's end): {what}", path)
    try:
        with open(path, "rb") as f:
            while f.tell() < size:
                head = f.read(12)
                if len(head) < 12:
                    raise bad
                lod_levels = struct.unpack("<Q", head[4:])[0]
                if lod_levels > 8:
                    raise bad
                for _ in range(lod_levels):
                    (n,) = struct.unpack("<Q", f.read(8))
                    f.seek(n, 1)
                head = f.read(8)
                if len(head) < 8:
                    raise bad
                (desc_size,) = struct.unpack("<i", head[4:])
                if not 0 < desc_size < 1 << 20:
                    raise bad
                desc = framework_pb2.VarType.TensorDesc.FromString(f.read(desc_size))
                numel = int(np.prod(desc.dims)) if len(desc.dims) else 1
                step = numel * _DTYPE_BYTES.get(desc.data_type, 4)
                if f.tell() + step > size:
                    raise bad
                f.seek(step, 1)
                shapes.append(list(desc.dims))
    except ModelDirError:
        raise
    except OSError as e:
        raise ModelDirError(f"cannot read {path}: {e.strerror or e}", path) from e
    except Exception as e:             # a record that does not parse
        raise bad from e
    return shapes


def check_model_dir(model_dir, need=("program", "params", "infer_cfg"), prefix="model"):
    """Check an exported model folder before Paddle loads it; returns the program's path.

    ``need``: what the caller loads: ``program`` (``PREFIX.pdmodel``, or PIR
    ``PREFIX.json``), ``params`` (``PREFIX.pdiparams``), ``infer_cfg`` (``infer_cfg.yml``).
    Each must exist and be readable; the program must parse (the legacy protobuf, or JSON)
    and hold feed and fetch ops; the parameters file must hold whole records, one per
    persistable variable of the program with its shape; ``infer_cfg.yml`` must be YAML with
    a Preprocess list. Raises ``ModelDirError`` (a ``UserError``: one line, exit 2) naming
    the first broken file. Cheap: the parameters' data is skipped, not read."""
    what = f"{_AGAIN} (tools/export_model.py)"
    _check_folder(model_dir, what)
    base = os.path.join(model_dir, prefix)
    program_path, wanted, classes = base + ".pdmodel", None, None
    if "program" in need or "params" in need:
        program_path, wanted, classes = _check_program(base, what)
    if "params" in need:
        _check_params(base + ".pdiparams", program_path, wanted, what)
    if "infer_cfg" in need:
        _check_infer_cfg(os.path.join(model_dir, "infer_cfg.yml"), classes, what)
    return program_path


def _check_folder(model_dir, what):
    """The model folder exists (put back first if an export was killed mid-swap)."""
    if not os.path.lexists(model_dir):
        # an export killed between the two renames of the fallback swap: put it back
        from ppdet.utils.atomic import recover_dir
        recover_dir(model_dir)
    if not os.path.isdir(model_dir):
        raise ModelDirError(f"model folder {model_dir} not found: {what}" if not
                            os.path.exists(model_dir) else
                            f"--model_dir {model_dir} is a file: give the exported folder",
                            model_dir)


def _check_program(base, what):
    """``(program path, parameter shapes, classes)``: the PIR JSON program parses (shapes
    and classes then None), or the legacy one does and yields them."""
    program_path, wanted, classes = base + ".pdmodel", None, None
    if not os.path.exists(program_path) and os.path.exists(base + ".json"):
        program_path = base + ".json"
        text = _read(program_path, what)
        try:
            json.loads(text.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise ModelDirError(f"{program_path} is truncated or corrupt (not JSON): "
                                f"{what}", program_path) from e
    else:
        wanted, classes = _legacy_program(program_path, what)
    return program_path, wanted, classes


def _check_params(params, program_path, wanted, what):
    """The parameters file holds whole records matching the program's (when known)."""
    shapes = _param_records(params, what)
    # element counts, not shapes: a quantized program declares its scales as [1] / [C]
    # where the saved tensors are [] / [1, C] (paddle 3.3.1 PTQ)
    numel = lambda dims: int(np.prod(dims)) if len(dims) else 1      # noqa: E731
    if wanted is not None and sorted(map(numel, shapes)) != sorted(map(numel, wanted)):
        raise ModelDirError(f"{params} holds {len(shapes)} parameters that do not match "
                            f"the {len(wanted)} of {program_path} (from another export?): "
                            f"{what}", params)


def _check_infer_cfg(path, classes, what):
    """``infer_cfg.yml`` is whole YAML with a Preprocess list, and as many labels as the
    program detects classes (when both are known)."""
    data = _read(path, what)
    try:
        cfg = yaml.safe_load(data.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ModelDirError(f"{path} is truncated or corrupt (not YAML): {what}",
                            path) from e
    if not isinstance(cfg, dict) or not isinstance(cfg.get("Preprocess"), list):
        raise ModelDirError(f"{path} has no Preprocess list: {what}", path)
    if not data.endswith(b"\n"):
        raise ModelDirError(f"{path} is truncated (it does not end with a line break): "
                            f"{what}", path)
    labels = cfg.get("label_list")
    if labels is not None and not isinstance(labels, list):
        raise ModelDirError(f"{path}: label_list is not a list: {what}", path)
    if classes is not None and labels is not None and len(labels) != classes:
        raise ModelDirError(f"{path} lists {len(labels)} labels but the program detects "
                            f"{classes} classes (truncated, or from another export): "
                            f"{what}", path)


def paddle_error_line(exc):
    """The line of a Paddle C++ error that says what went wrong (not the C++ stack)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines:
        if re.match(r"^\(\w+\) ", ln):
            return ln
    lines = [ln for ln in lines if not set(ln) <= set("-=") and "Traceback" not in ln
             and not re.match(r"^\d+\s", ln)]
    return lines[0] if lines else type(exc).__name__


def preprocess_image(image_rgb, steps):
    """Apply an ``infer_cfg.yml`` Preprocess list to one RGB uint8 image."""
    import cv2
    h, w = image_rgb.shape[:2]
    img = image_rgb.astype("float32")
    scale = np.array([1., 1.], "float32")
    for step in steps:
        kind = step["type"]
        if kind == "Resize":
            th, tw = step["target_size"]
            img = cv2.resize(img, (int(tw), int(th)), interpolation=int(step.get("interp", 1)))
            scale = np.array([th / h, tw / w], "float32")
        elif kind == "NormalizeImage":
            if step.get("is_scale", True):
                img = img / 255.
            img = (img - np.array(step["mean"], "float32")) / np.array(step["std"], "float32")
        elif kind == "Permute":
            img = img.transpose(2, 0, 1)
    im_shape = np.array(img.shape[1:3] if img.shape[0] == 3 else img.shape[:2], "float32")
    return img.astype("float32"), im_shape, scale


class Predictor:
    """Paddle Inference predictor over an exported model directory.

    ``memory_optim`` (on by default, as in PaddleDetection's deploy/python/infer.py) lets
    intermediate tensors share buffers: fewer allocations and a smaller working set
    (measured 2-7% faster on the tiny YOLOv3, same outputs; bench/HISTORY.md, "Where the
    time goes in the exported tiny model").
    """

    def __init__(self, model_dir, use_mkldnn=True, cpu_threads=1, memory_optim=True,
                 simulate_int8=False):
        from paddle import inference
        program = check_model_dir(model_dir)   # a broken folder: one line naming the file
        path = os.path.join(model_dir, "infer_cfg.yml")
        try:
            with open(path) as f:
                self.infer_cfg = yaml.safe_load(f)
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"cannot read {path}: {str(e).splitlines()[0]}") from e
        if not isinstance(self.infer_cfg, dict) or \
                not isinstance(self.infer_cfg.get("Preprocess"), list):
            raise ConfigError(f"{path} has no Preprocess list: export the model again with "
                              f"tools/export_model.py")
        config = inference.Config(program, os.path.join(model_dir, "model.pdiparams"))
        config.disable_gpu()
        config.set_cpu_math_library_num_threads(cpu_threads)
        # infer_cfg.yml's precision (fp32 when absent); an INT8 model gets oneDNN INT8 or
        # is refused (ppdet.engine.legacy_ir; simulate_int8: its FP32 simulation)
        self.precision = str(self.infer_cfg.get("precision", "fp32")).lower()
        if self.precision != "fp32":
            from ppdet.engine.legacy_ir import configure_predictor
            configure_predictor(config, self.precision, use_mkldnn, simulate=simulate_int8)
        elif use_mkldnn:
            config.enable_mkldnn()
        else:
            config.disable_mkldnn()
        if memory_optim:
            config.enable_memory_optim()
        config.disable_glog_info()
        try:
            self.predictor = inference.create_predictor(config)
        except (RuntimeError, ValueError, OSError) as e:
            hint = _AGAIN
            if self.precision == "int8":
                from ppdet.engine.legacy_ir import int8_load_hint
                hint = int8_load_hint(str(e)) or hint
            raise ModelDirError(f"Paddle Inference cannot load {model_dir}: "
                                f"{paddle_error_line(e)} ({hint})", model_dir) from e

    def run(self, image, im_shape, scale_factor, raw=False):
        """Batched numpy inputs -> (bbox [K,6], bbox_num [N]); with ``raw`` also the list
        of raw head outputs the export holds (empty for exports without them)."""
        feeds = {"image": image, "im_shape": im_shape, "scale_factor": scale_factor}
        for name in self.predictor.get_input_names():
            handle = self.predictor.get_input_handle(name)
            handle.copy_from_cpu(np.ascontiguousarray(feeds[name], dtype="float32"))
        self.predictor.run()
        names = self.predictor.get_output_names()
        outs = [self.predictor.get_output_handle(n).copy_to_cpu()
                for n in (names if raw else names[:2])]
        return (outs[0], outs[1], outs[2:]) if raw else (outs[0], outs[1])

    def predict_image(self, image_rgb, raw=False):
        img, im_shape, scale = preprocess_image(image_rgb, self.infer_cfg["Preprocess"])
        return self.run(img[None], im_shape[None], scale[None], raw=raw)


class ExportedDetector:
    """An exported model directory behind the dygraph detector's interface (``eval()``,
    ``model(batch) -> {'bbox', 'bbox_num'}``), so ``ppdet.engine.evaluate.evaluate``
    scores the deployed program itself."""

    def __init__(self, model_dir, **predictor_kw):
        self.predictor = Predictor(model_dir, **predictor_kw)

    def eval(self):
        return self

    def __call__(self, inputs):
        bbox, num = self.predictor.run(*(np.asarray(inputs[k]) for k in
                                         ("image", "im_shape", "scale_factor")))
        return {"bbox": paddle.to_tensor(bbox), "bbox_num": paddle.to_tensor(num)}


def read_image(path):
    """An image file as RGB uint8; an unreadable one is a one-line error naming it."""
    import cv2
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image not found: {path}")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DataError(f"cannot decode image {path}: not an image, or corrupt")
    return bgr[:, :, ::-1]


def _flatten(outs):
    if isinstance(outs, (list, tuple)):
        return [t for o in outs for t in _flatten(o)]
    if isinstance(outs, dict):
        return [t for k in sorted(outs) for t in _flatten(outs[k])]
    return [outs]


class VerifyResult(tuple):
    """(images, boxes, box difference, score difference), plus ``values`` (raw head output
    values compared) and ``head_diff`` (their largest difference, relative to the scale)."""

    def __new__(cls, images, boxes, box_diff, score_diff, values, head_diff):
        self = super().__new__(cls, (images, boxes, box_diff, score_diff))
        self.images, self.boxes, self.box_diff, self.score_diff = images, boxes, box_diff, \
            score_diff
        self.values, self.head_diff = values, head_diff
        return self


def verify_export(model, model_dir, image_files, use_mkldnn=True, score_min=0.05, tol=1e-3):
    """Compare the exported model (Paddle Inference) with the dygraph model on the same images.

    Two checks of the exported file: its raw head outputs before decoding and NMS (every
    value), and its kept detections (class, box, score).
    Returns a ``VerifyResult``: (images compared, boxes compared, max |box diff| relative to
    the box scale, max |score diff|) with ``.values`` and ``.head_diff``. Raises
    AssertionError when anything differs by more than ``tol``, or when nothing at all was
    compared (no image, no output value): that is not a verification.
    """
    if not image_files:
        raise AssertionError("no image to compare on: nothing was verified")
    predictor = Predictor(model_dir, use_mkldnn=use_mkldnn)
    model.eval()
    worst_box, worst_score, worst_head, boxes, values = 0.0, 0.0, 0.0, 0, 0
    for path in image_files:
        rgb = read_image(path)
        got, _, got_heads = predictor.predict_image(rgb, raw=True)
        x, shape, scale = preprocess_image(rgb, predictor.infer_cfg["Preprocess"])
        image = paddle.to_tensor(x[None])
        with paddle.no_grad():
            ref_heads = [t.numpy() for t in _flatten(model.head_outputs(image))]
            ref = model({"image": image, "im_shape": paddle.to_tensor(shape[None]),
                         "scale_factor": paddle.to_tensor(scale[None])})["bbox"].numpy()
        if not got_heads:
            raise AssertionError(f"{model_dir} holds no raw head outputs to compare "
                                 f"(exported by an older version): export it again")
        if [a.shape for a in got_heads] != [a.shape for a in ref_heads]:
            raise AssertionError(f"{path}: exported head outputs have shapes "
                                 f"{[a.shape for a in got_heads]}, dygraph "
                                 f"{[a.shape for a in ref_heads]}")
        for a, b in zip(got_heads, ref_heads):
            values += a.size
            if a.size:
                diff = float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1.0))
                worst_head = max(worst_head, diff)
        if worst_head > tol:
            raise AssertionError(f"{path}: raw head outputs differ by {worst_head:.1e} "
                                 f"(relative)")
        got = got[(got[:, 0] >= 0) & (got[:, 1] >= score_min)]
        ref = ref[(ref[:, 0] >= 0) & (ref[:, 1] >= score_min)]
        if got.shape != ref.shape or not np.array_equal(got[:, 0], ref[:, 0]):
            raise AssertionError(f"{path}: exported model kept {len(got)} boxes, dygraph "
                                 f"{len(ref)}")
        if len(ref):
            scale_ref = np.maximum(np.abs(ref[:, 2:]).max(), 1.0)
            worst_box = max(worst_box,
                            float(np.abs(got[:, 2:] - ref[:, 2:]).max() / scale_ref))
            worst_score = max(worst_score, float(np.abs(got[:, 1] - ref[:, 1]).max()))
        boxes += len(ref)
        if worst_box > tol or worst_score > tol:
            raise AssertionError(f"{path}: boxes differ by {worst_box:.1e} (relative), "
                                 f"scores by {worst_score:.1e}")
    if values == 0:
        raise AssertionError("the head produced no output values: nothing was verified")
    return VerifyResult(len(image_files), boxes, worst_box, worst_score, values, worst_head)
