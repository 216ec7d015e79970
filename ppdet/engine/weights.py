"""Weights in the formats PaddleDetection and PaddleClas users already have.

Every tool loads weights through :mod:`ppdet.engine.checkpoint`, which hands anything that is
not this toolkit's own ``.pdparams`` to this module. Formats recognised:

``ppdet``    this toolkit's ``.pdparams`` (structured keys + ``__ppdet_meta__``).
``static``   a static-era PaddleDetection / PaddleSlim folder written by
             ``save_persistables``: one dense-tensor file per variable, file name =
             variable name (``conv1_weights``, ``yolo_block.0.0.0.conv.weights``, ...), or a
             released ``.tar`` of such a folder (unpacked once, atomically, into a cache).
``names``    a ``.pdparams`` dict keyed by those static-era variable names (``fluid.save``).
``det2x``    a PaddleDetection 2.x dygraph ``.pdparams`` (``backbone.conv1._conv.weight``,
             ``neck.yolo_block.0.conv_module.conv0.conv.weight``, ``ssd_head.boxes0.weight``).
``clas2x``   a PaddleClas 2.x ImageNet backbone (``conv.conv.weight``,
             ``blocks.0.depthwise_conv.bn._mean`` for MobileNetV1; ``conv2._first_block.
             _expand_conv._conv.weight`` for MobileNetV2).

URLs (``https://.../yolov3_mobilenet_v1_voc.tar``) are resolved offline from where
PaddleDetection keeps its downloads, ``~/.cache/paddle/weights/``: the file itself or its
unpacked folder (same base name).

Every foreign key is first translated to the static-era variable name (the names this
toolkit's YOLOv3 / MobileNet parameters already have), then to the model's structured key.
The SSD model keeps the fluid demo's automatic names, so the static-era / 2.x SSD names are
mapped onto its layers by structure (the static-era head's automatic ``conv2d_{n}`` names by
creation order, see ``_paddledet_ssd_head``), and PaddleDetection SSD head channels are
reordered (both eras put the max-size prior last, 2.x also the background class last; this
toolkit puts both first). PaddleDetection's SSD also has 1x1 head convs and relu6 in the
extra blocks: a config that loads its weights sets ``SSDHead.kernel_size: 1`` and
``MobileNetV1SSD.extra_act: relu6``.
"""
import hashlib
import os
import re
import shutil
import struct
import tarfile
import tempfile
from dataclasses import dataclass, field

import numpy as np

__all__ = ["CheckpointError", "META_KEY", "Source", "Match", "locate", "read_weights",
           "read_dense_tensor", "match_weights", "load_strict", "load_lenient",
           "format_table", "digest_path", "paddle_weights_home",
           "unpack_cache_root"]

META_KEY = "__ppdet_meta__"
URL_PREFIXES = ("http://", "https://", "ftp://")
ARCHIVES = (".tar", ".tar.gz", ".tgz")
KIND_LABEL = {"ppdet": "this toolkit's checkpoint",
              "static": "static-era PaddleDetection variable folder",
              "names": "static-era variable names",
              "det2x": "PaddleDetection 2.x",
              "clas2x": "PaddleClas 2.x backbone"}


class CheckpointError(ValueError):
    """Weights that cannot be used; the message names the file or parameter and the fix."""


# --- locating ---------------------------------------------------------------------------

def paddle_weights_home():
    """Where PaddleDetection keeps downloaded weights (``~/.cache/paddle/weights``)."""
    return os.path.join(os.path.expanduser("~"), ".cache", "paddle", "weights")


def unpack_cache_root():
    """Where archives are unpacked (``$PPDET_WEIGHTS_CACHE`` or ``~/.cache/ppdet/unpacked``)."""
    return os.environ.get("PPDET_WEIGHTS_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "ppdet", "unpacked")


def _archive_stem(name):
    for ext in ARCHIVES + (".pdparams",):
        if name.endswith(ext):
            return name[:-len(ext)]
    return name


def _from_url(url):
    name = os.path.basename(url.split("?", 1)[0].rstrip("/"))
    home = paddle_weights_home()
    stem = _archive_stem(name)
    for candidate in (os.path.join(home, name), os.path.join(home, stem),
                      os.path.join(home, stem + ".pdparams")):
        if os.path.exists(candidate):
            return candidate
    raise CheckpointError(
        f"weights {url} are not downloaded and this tool works offline: download {name} "
        f"and put it at {os.path.join(home, name)} (or its unpacked folder at "
        f"{os.path.join(home, stem)})")


def locate(spec):
    """The local file or folder behind ``weights=``: a URL (offline cache), a path, a path
    without ``.pdparams``, or one relative to the repository root."""
    if spec is None or str(spec) == "":
        raise CheckpointError("no weights given: pass -o weights=PATH (a .pdparams file, a "
                              "static-era weights folder or .tar, or a released URL)")
    spec = str(spec)
    if spec.startswith(URL_PREFIXES):
        return _from_url(spec)
    from ppdet.engine.builder import resolve_path
    for candidate in (spec, spec + ".pdparams"):
        for path in (candidate, resolve_path(candidate)):
            if os.path.isfile(path) or (os.path.isdir(path) and candidate == spec):
                return path
    raise CheckpointError(f"weights not found: {spec} (neither {spec}.pdparams nor a "
                          f"folder or archive of that name exists)")


def digest_path(path):
    """sha256 of a weights file's bytes, or of a folder's file names and contents."""
    h = hashlib.sha256()
    single = os.path.isfile(path)
    files = [path] if single else [
        os.path.join(path, n) for n in sorted(os.listdir(path))
        if os.path.isfile(os.path.join(path, n))]
    for f in files:
        if not single:
            h.update(os.path.basename(f).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


# --- static-era dense-tensor files ------------------------------------------------------

_DTYPES = {0: np.bool_, 1: np.int16, 2: np.int32, 3: np.int64, 4: np.float16,
           5: np.float32, 6: np.float64, 20: np.uint8, 21: np.int8}


def _varint(buf, pos):
    value, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise ValueError("tensor description ends inside a number")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _tensor_desc(buf):
    """(dtype code, dims) from the TensorDesc protobuf (field 1 data_type, 2 dims)."""
    pos, dtype, dims = 0, None, []
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        fieldno, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            if fieldno == 1:
                dtype = value
            elif fieldno == 2:
                dims.append(value - (1 << 64) if value >= 1 << 63 else value)
        elif wire == 2:
            size, pos = _varint(buf, pos)
            chunk, pos = buf[pos:pos + size], pos + size
            if fieldno == 2:           # packed dims
                p = 0
                while p < len(chunk):
                    value, p = _varint(chunk, p)
                    dims.append(value - (1 << 64) if value >= 1 << 63 else value)
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
    if dtype is None:
        raise ValueError("tensor description has no data type")
    return dtype, dims


def read_dense_tensor(path):
    """One variable file as ``save_persistables`` / ``core.save_dense_tensor`` wrote it:
    uint32 version, uint64 LoD level (+ LoD data), uint32 tensor version, int32 size of a
    TensorDesc protobuf, the protobuf, the raw data. Truncation or trailing bytes are errors."""
    with open(path, "rb") as f:
        data = f.read()
    name = os.path.basename(path)
    try:
        pos = 0

        def take(n):
            nonlocal pos
            if pos + n > len(data):
                raise ValueError(f"file ends at byte {len(data)}, {pos + n} needed (truncated?)")
            chunk, pos = data[pos:pos + n], pos + n
            return chunk

        version, = struct.unpack("<I", take(4))
        if version != 0:
            raise ValueError(f"unknown format version {version}")
        lod_levels, = struct.unpack("<Q", take(8))
        if lod_levels > 16:
            raise ValueError(f"implausible LoD level {lod_levels}")
        for _ in range(lod_levels):
            size, = struct.unpack("<Q", take(8))
            take(size)
        tensor_version, = struct.unpack("<I", take(4))
        if tensor_version != 0:
            raise ValueError(f"unknown tensor version {tensor_version}")
        desc_size, = struct.unpack("<i", take(4))
        if not 0 < desc_size < 4096:
            raise ValueError(f"implausible tensor description size {desc_size}")
        dtype_code, dims = _tensor_desc(take(desc_size))
        if dtype_code not in _DTYPES:
            raise ValueError(f"unsupported data type code {dtype_code}")
        if any(d < 0 for d in dims):
            raise ValueError(f"negative dimension in {dims}")
        dtype = np.dtype(_DTYPES[dtype_code])
        count = int(np.prod(dims)) if dims else 1
        raw = take(count * dtype.itemsize)
        if pos != len(data):
            raise ValueError(f"{len(data) - pos} bytes after the tensor data "
                             f"(not a single-variable file)")
    except (ValueError, struct.error) as e:
        raise CheckpointError(f"cannot read weights file {path}: {e}; replace the file "
                              f"'{name}' (or the whole folder/archive) with a complete copy") \
            from None
    return np.frombuffer(raw, dtype=dtype).reshape(dims).copy()


# optimizer / LR-schedule variables that static-era folders hold next to the parameters
_OPTIMIZER_STATE = re.compile(r"(_velocity_\d+|_moment\d_\d+|_beta\d_pow_acc_\d+|"
                              r"_mean_square_\d+|_mean_grad_\d+|_momentum_\d+)$|"
                              r"^(learning_rate|@LR_DECAY_COUNTER@|global_step)")


def _read_folder(folder):
    entries = sorted(os.listdir(folder))
    if "__params__" in entries:
        raise CheckpointError(f"{folder} holds one combined __params__ file (an exported "
                              f"inference model), not per-variable weights: pass the training "
                              f"output folder or the released weights .tar instead")
    pdparams = [e for e in entries if e.endswith(".pdparams")]
    files = [e for e in entries if not e.startswith(".") and not e.endswith(
        (".pdparams", ".pdopt", ".pdmodel", ".yml", ".yaml", ".txt", ".json", ".md"))
        and e != "__model__" and os.path.isfile(os.path.join(folder, e))]
    if not files and len(pdparams) == 1:
        return None, os.path.join(folder, pdparams[0])
    if not files:
        raise CheckpointError(f"{folder} has no weight files: pass a folder of static-era "
                              f"variable files or a .pdparams file")
    return {name: read_dense_tensor(os.path.join(folder, name)) for name in files}, None


# --- archives ---------------------------------------------------------------------------

def _safe_members(tar, path):
    members = []
    for m in tar.getmembers():
        parts = m.name.replace("\\", "/").split("/")
        if m.name.startswith("/") or ".." in parts or m.issym() or m.islnk() or \
                not (m.isfile() or m.isdir()):
            raise CheckpointError(f"archive {path} contains an unsafe entry '{m.name}' "
                                  f"(absolute path, '..' or link): refusing to unpack it")
        members.append(m)
    return members


def _unpack(path):
    """Unpack ``path`` once into the cache. Extraction goes to a temporary folder renamed
    into place only when complete, so a killed unpack never leaves a folder a later run
    trusts (stale temporaries are ignored and replaced)."""
    st = os.stat(path)
    key = hashlib.sha1(f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}"
                       .encode()).hexdigest()[:12]
    root = unpack_cache_root()
    final = os.path.join(root, f"{_archive_stem(os.path.basename(path))}-{key}")
    if os.path.isdir(final):
        return final
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".unpack-", dir=root)
    try:
        try:
            with tarfile.open(path) as tar:
                members = _safe_members(tar, path)
                if not any(m.isfile() for m in members):
                    raise CheckpointError(f"archive {path} holds no files: download it again")
                tar.extractall(tmp, members=members, filter="data")
        except (tarfile.TarError, EOFError, OSError, zlib_error()) as e:
            raise CheckpointError(f"cannot unpack weights archive {path}: "
                                  f"{str(e) or type(e).__name__} (truncated or corrupt "
                                  f"download?): download it again") from None
        try:
            os.rename(tmp, final)
        except OSError:                      # another process finished first
            if not os.path.isdir(final):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def zlib_error():
    import zlib
    return zlib.error


def _unpacked_root(folder):
    """Descend through single sub-folders (a tar usually holds ``name/...``)."""
    while True:
        entries = [e for e in os.listdir(folder) if not e.startswith(".")]
        if len(entries) == 1 and os.path.isdir(os.path.join(folder, entries[0])):
            folder = os.path.join(folder, entries[0])
        else:
            return folder


# --- reading ----------------------------------------------------------------------------

@dataclass
class Source:
    path: str                       # the file or folder read (after URL / tar resolution)
    kind: str                       # see KIND_LABEL
    tensors: dict                   # source key -> tensor or ndarray
    meta: dict = None               # this toolkit's meta (kind 'ppdet')
    given: str = ""                 # what the user passed

    @property
    def label(self):
        return KIND_LABEL[self.kind]


def _detect_kind(keys):
    keys = [k for k in keys if isinstance(k, str)]
    if not keys:
        return "ppdet"
    hits = lambda pat: sum(bool(re.search(pat, k)) for k in keys)
    if hits(r"^backbone\.\w+\._(conv|batch_norm)\.|^backbone\.\w+\._(depthwise|pointwise)_conv"
            r"|^neck\.yolo_(block|transition)|^yolo_head\.yolo_output|^ssd_head\.(boxes|scores)"
            r"\d|^backbone\.(conv0|downsample0|stage\.\d+|conv1\.conv1|res\d)\."):
        return "det2x"
    if hits(r"^(conv|blocks\.\d+\.(depthwise|pointwise)_conv)\.(conv|bn)\.") or \
            hits(r"^conv\d+\.(_first_block|conv\d+_\d+)\._\w+_conv\.|^conv1\._conv\.") or \
            hits(r"^(_conv[12]|_basic_block_\d+\.|_downsample_\d)|^(stem\.\d+|blocks\.\d+\."
                 r"(conv\d|short))\.(conv|bn)\."):
        return "clas2x"
    if hits(r"_weights$|\.conv\.weights$|_bn_(scale|offset|mean|variance)$|\.[wb]_\d+$|"
            r"\.bn\.(scale|offset|mean|var)$|^bn\w*_(scale|offset|mean|variance)$") \
            > len(keys) // 2:
        return "names"
    return "ppdet"


def _load_pdparams(path):
    import paddle
    try:
        state = paddle.load(path)
    except Exception as e:  # corrupt or foreign file
        raise CheckpointError(f"cannot read weights {path}: {type(e).__name__}: {e}"
                              .splitlines()[0]) from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a model state dict")
    return state


def read_weights(spec):
    """Resolve ``spec`` and read it: a :class:`Source`."""
    path = locate(spec)
    given = str(spec)
    if os.path.isfile(path) and path.endswith(ARCHIVES):
        path = _unpacked_root(_unpack(path))
    elif os.path.isfile(path) and not path.endswith(".pdparams") and tarfile.is_tarfile(path):
        path = _unpacked_root(_unpack(path))
    if os.path.isdir(path):
        tensors, pdparams = _read_folder(path)
        if tensors is not None:
            return Source(path, "static", tensors, given=given)
        path = pdparams
    state = _load_pdparams(path)
    if META_KEY in state:
        meta = state.pop(META_KEY) or {}
        return Source(path, "ppdet", state, meta=meta, given=given)
    return Source(path, _detect_kind(list(state)), state, given=given)


# --- key translation --------------------------------------------------------------------

_MBV1_BLOCKS = ["conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv4_1", "conv4_2", "conv5_1",
                "conv5_2", "conv5_3", "conv5_4", "conv5_5", "conv5_6", "conv6"]
_BN_UNDERSCORE = {"weight": "_bn_scale", "bias": "_bn_offset", "_mean": "_bn_mean",
                  "_variance": "_bn_variance"}
_BN_DOTTED = {"weight": ".bn.scale", "bias": ".bn.offset", "_mean": ".bn.mean",
              "_variance": ".bn.var"}
_YOLO_CONVS = {"conv0": "0.0", "conv1": "0.1", "conv2": "1.0", "conv3": "1.1", "route": "2"}
_CONVBN = re.compile(r"^(?P<layer>.+)\.(?P<sub>_?conv|_?batch_norm|_?bn|norm)\.(?P<p>weight|"
                     r"bias|_mean|_variance)$")
_RESNET_BRANCH = {"branch2a": "branch2a", "branch2b": "branch2b", "short": "branch1",
                  "conv0": "branch2a", "conv1": "branch2b"}


def _underscore(layer, sub, p):
    return f"{layer}_weights" if "conv" in sub else f"{layer}{_BN_UNDERSCORE[p]}"


def _dotted(layer, sub, p):
    return f"{layer}.conv.weights" if "conv" in sub else layer + _BN_DOTTED[p]


def _resnet(layer, sub, p):
    """Static-era ResNet names: ``res2a_branch2a_weights``, ``bn2a_branch2a_scale``."""
    if "conv" in sub:
        return f"{layer}_weights"
    bn = "bn_conv1" if layer == "conv1" else "bn" + layer[3:]
    return bn + {"weight": "_scale", "bias": "_offset", "_mean": "_mean",
                 "_variance": "_variance"}[p]


def _det2x_backbone(layer, sub, p):
    """PaddleDetection 2.x DarkNet / ResNet backbone layers -> static-era names, or None.
    DarkNet: ``conv0``, ``downsample0.conv_bn_layer``, ``stage.{s}.basicblock0.conv{1,2}``,
    later blocks ``stage.{s}.stage.{s}.{j}.conv{1,2}``, ``stage.{s}.downsample.
    conv_bn_layer``; ResNet: ``conv1.conv1``, ``res{s}.res{s}{x}.{branch2a,branch2b,short}``."""
    if layer == "backbone.conv0":
        return _dotted("yolo_input", sub, p)
    if layer == "backbone.downsample0.conv_bn_layer":
        return _dotted("yolo_input.downsample", sub, p)
    m = re.match(r"^backbone\.stage\.(\d+)\.(?:basicblock0|stage\.\1\.(\d+))\.conv([12])$",
                 layer)
    if m:
        return _dotted(f"stage.{m[1]}.{m[2] or 0}.{int(m[3]) - 1}", sub, p)
    m = re.match(r"^backbone\.stage\.(\d+)\.downsample\.conv_bn_layer$", layer)
    if m:
        return _dotted(f"stage.{m[1]}.downsample", sub, p)
    if layer == "backbone.conv1.conv1":
        return _resnet("conv1", sub, p)
    m = re.match(r"^backbone\.res(\d)\.(res\1[a-z]\d*)\.(branch2a|branch2b|short)$", layer)
    if m:
        return _resnet(f"{m[2]}_{_RESNET_BRANCH[m[3]]}", sub, p)
    return None


def _det2x_name(key):
    """PaddleDetection 2.x key -> static-era variable name (None: not a model tensor)."""
    m = re.match(r"^yolo_head\.yolo_output\.(\d+)\.(weight|bias)$", key)
    if m:
        return f"yolo_output.{m[1]}.conv.{'weights' if m[2] == 'weight' else 'bias'}"
    m = re.match(r"^ssd_head\.(boxes|scores)(\d+)\.(weight|bias)$", key)
    if m:
        return f"ssd_head.{'loc' if m[1] == 'boxes' else 'conf'}.{m[2]}.{m[3]}"
    m = _CONVBN.match(key)
    if not m:
        return None
    layer, sub, p = m["layer"], m["sub"], m["p"]
    y = re.match(r"^neck\.yolo_block\.(\d+)\.(?:conv_module\.(\w+)|(tip))$", layer)
    if y:
        tag = _YOLO_CONVS.get(y[2]) if y[2] else "tip"
        if tag is None:
            return None
        base = f"yolo_block.{y[1]}.{tag}"
        return f"{base}.conv.weights" if "conv" in sub else base + _BN_DOTTED[p]
    y = re.match(r"^neck\.yolo_transition\.(\d+)$", layer)
    if y:
        base = f"yolo_transition.{y[1]}"
        return f"{base}.conv.weights" if "conv" in sub else base + _BN_DOTTED[p]
    named = _det2x_backbone(layer, sub, p)
    if named is not None:
        return named
    b = re.match(r"^backbone\.(conv\d+(?:_\d+)?)(?:\.(_depthwise_conv|_pointwise_conv|"
                 r"pointwise_conv|normal_conv))?$", layer)
    if b:
        suffix = {None: "", "_depthwise_conv": "_dw", "_pointwise_conv": "_sep",
                  "pointwise_conv": "_extra1", "normal_conv": "_extra2"}[b[2]]
        return _underscore(b[1] + suffix, sub, p)
    return None


_CLAS_RESNET_STAGES = {8: [2, 2, 2, 2], 16: [3, 4, 6, 3]}     # blocks -> ResNet-18 / 34


def clas_resnet_blocks(keys):
    """Static-era block names (``res2a`` ..) of a PaddleClas ResNet-18/34 key set, whose
    blocks are numbered flat (``blocks.7.conv0``), or None."""
    blocks = {int(m[1]) for k in keys for m in [re.match(r"^blocks\.(\d+)\.conv0\.", str(k))]
              if m}
    counts = _CLAS_RESNET_STAGES.get(len(blocks)) if blocks == set(range(len(blocks))) \
        else None
    if counts is None:
        return None
    return [f"res{s + 2}{chr(ord('a') + j)}" for s, n in enumerate(counts) for j in range(n)]


def _clas2x_backbone(layer, sub, p, resnet_blocks):
    """PaddleClas DarkNet53 (``_conv1``, ``_conv2``, ``_basic_block_{s}{j+1}._conv{1,2}``,
    ``_downsample_{s}``) and ResNet-18/34 (``stem.0``, ``blocks.{k}.{conv0,conv1,short}``)."""
    if layer in ("_conv1", "_conv2"):
        return _dotted("yolo_input" if layer == "_conv1" else "yolo_input.downsample", sub, p)
    m = re.match(r"^_basic_block_(\d)(\d)\._conv([12])$", layer)
    if m:
        return _dotted(f"stage.{m[1]}.{int(m[2]) - 1}.{int(m[3]) - 1}", sub, p)
    m = re.match(r"^_downsample_(\d)$", layer)
    if m:
        return _dotted(f"stage.{m[1]}.downsample", sub, p)
    if layer == "stem.0" and resnet_blocks:
        return _resnet("conv1", sub, p)
    m = re.match(r"^blocks\.(\d+)\.(conv0|conv1|short)$", layer)
    if m and resnet_blocks and int(m[1]) < len(resnet_blocks):
        return _resnet(f"{resnet_blocks[int(m[1])]}_{_RESNET_BRANCH[m[2]]}", sub, p)
    return None


def _clas2x_name(key, resnet_blocks=None):
    """PaddleClas 2.x MobileNetV1 / MobileNetV2 / DarkNet53 / ResNet-18/34 key -> static-era
    variable name (``resnet_blocks``: see :func:`clas_resnet_blocks`)."""
    m = _CONVBN.match(key)
    if not m:
        return None
    layer, sub, p = m["layer"], m["sub"], m["p"]
    named = _clas2x_backbone(layer, sub, p, resnet_blocks)
    if named is not None:
        return named
    if layer == "conv":                                       # V1 stem
        return _underscore("conv1", sub, p)
    v1 = re.match(r"^blocks\.(\d+)\.(depthwise|pointwise)_conv$", layer)
    if v1 and int(v1[1]) < len(_MBV1_BLOCKS):
        return _underscore(_MBV1_BLOCKS[int(v1[1])] + ("_dw" if v1[2] == "depthwise"
                                                      else "_sep"), sub, p)
    if layer == "conv1":                                      # V2 stem
        return _underscore("conv1_1", sub, p)
    if layer == "conv9":
        return _underscore("conv9", sub, p)
    v2 = re.match(r"^conv(\d+)\.(?:_first_block|conv\d+_(\d+))\._(expand|bottleneck|linear)"
                  r"_conv$", layer)
    if v2:
        part = {"expand": "expand", "bottleneck": "dwise", "linear": "linear"}[v2[3]]
        return _underscore(f"conv{v2[1]}_{v2[2] or 1}_{part}", sub, p)
    return None


def _ssd_aliases(model):
    """Static-era / 2.x names -> structured keys of this toolkit's SSD (fluid auto names)."""
    sd = model.state_dict()
    out = {}
    layer_names = {"backbone.conv1": "conv1"}
    for i, block in enumerate(_MBV1_BLOCKS):
        layer_names[f"backbone.blocks.{i}.dw"] = f"{block}_dw"
        layer_names[f"backbone.blocks.{i}.pw"] = f"{block}_sep"
    for j in range(len(getattr(model.backbone, "extras", []))):
        layer_names[f"backbone.extras.{j}.squeeze"] = f"conv7_{j + 1}_extra1"
        layer_names[f"backbone.extras.{j}.down"] = f"conv7_{j + 1}_extra2"
    suffixes = {"conv.weight": "_weights", "bn.weight": "_bn_scale", "bn.bias": "_bn_offset",
                "bn._mean": "_bn_mean", "bn._variance": "_bn_variance"}
    for prefix, static in layer_names.items():
        for tail, s in suffixes.items():
            if f"{prefix}.{tail}" in sd:
                out[static + s] = f"{prefix}.{tail}"
    for part, convs in (("loc", "loc_convs"), ("conf", "conf_convs")):
        for i in range(len(getattr(model.ssd_head, convs))):
            for p in ("weight", "bias"):
                out[f"ssd_head.{part}.{i}.{p}"] = f"ssd_head.{convs}.{i}.{p}"
    return out


def _paddledet_ssd_head(model, source):
    """PaddleDetection's static-era SSD head names -> our head keys, or {}.

    Its MobileNet names every backbone variable (``conv1_weights``, ``conv2_1_dw_weights``,
    ``conv7_1_extra1_weights``), but ``MultiBoxHead`` calls ``fluid.layers.multi_box_head``,
    which creates one loc conv then one conf conv per level with no names: Paddle numbers
    them ``conv2d_{n}.w_0`` / ``.b_0`` by creation order, continuing the count of the
    backbone's regular convs (depthwise ones count as ``depthwise_conv2d``), so the head is
    the only ``conv2d_*`` in such weights: loc of level i = the (2i)-th, conf = the (2i+1)-th
    (``conv2d_22`` .. ``conv2d_33`` for ssd_mobilenet_v1_voc)."""
    if source.kind not in ("static", "names"):
        return {}
    keys = source.tensors.keys()
    if not any(k == "conv1_weights" or k.endswith(("_dw_weights", "_extra1_weights"))
               for k in keys):
        return {}              # this toolkit's own fluid-demo names: they load by name
    numbers = sorted(int(m[1]) for k in keys for m in [re.match(r"^conv2d_(\d+)\.w_0$", k)]
                     if m)
    head = model.ssd_head
    if len(numbers) != 2 * len(head.loc_convs):
        return {}              # not that layout: the head stays missing (reported)
    out = {}
    for i in range(len(head.loc_convs)):
        for convs, n in (("loc_convs", numbers[2 * i]), ("conf_convs", numbers[2 * i + 1])):
            out[f"conv2d_{n}.w_0"] = f"ssd_head.{convs}.{i}.weight"
            out[f"conv2d_{n}.b_0"] = f"ssd_head.{convs}.{i}.bias"
    return out


def _ssd_reorder(model, key, arr, background_last=True):
    """PaddleDetection SSD head -> ours: priors (min, ratios.., max) -> (min, max, ratios..)
    (its ``min_max_aspect_ratios_order: false``, static era and 2.x) and, for 2.x scores,
    classes (c.., background) -> (background, c..); the static era put background first."""
    m = re.match(r"^ssd_head\.(loc|conf)_convs\.(\d+)\.", key)
    head = model.ssd_head
    shapes = head.prior_shapes[int(m[2])]
    n = len(shapes)
    has_max = n > 1 and abs(shapes[1][0] - shapes[1][1]) < 1e-6
    prior_order = [0, n - 1] + list(range(1, n - 1)) if has_max else list(range(n))
    per = 4 if m[1] == "loc" else head.num_classes + 1
    if arr.shape[0] != n * per:
        return arr                       # wrong shape: reported as a mismatch later
    class_order = [per - 1] + list(range(per - 1)) if m[1] == "conf" and background_last \
        else list(range(per))
    index = [p * per + c for p in prior_order for c in class_order]
    return arr[index]


# --- matching ---------------------------------------------------------------------------

@dataclass
class Match:
    source: Source
    state: dict = field(default_factory=dict)        # model key -> ndarray (right shape)
    loaded: list = field(default_factory=list)       # model keys
    missing: list = field(default_factory=list)      # model keys absent from the weights
    mismatched: list = field(default_factory=list)   # (model key, source key, theirs, ours)
    unused: list = field(default_factory=list)       # (source key, reason)
    names: dict = field(default_factory=dict)        # model key -> source key


def _as_array(value):
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "numpy"):
        return value.numpy()
    return np.asarray(value)


def _unused_reason(kind, key, canonical):
    if _OPTIMIZER_STATE.search(key):
        return "optimizer state"
    if kind == "clas2x" and re.match(r"^(fc|_?out)\.", key):
        return "ImageNet classifier"
    if kind in ("det2x", "clas2x") and canonical is None:
        return "no counterpart in this toolkit's models"
    return "not in this model"


def match_weights(model, source):
    """Pair every tensor of ``source`` with the model's state-dict key it belongs to."""
    own = model.state_dict()
    is_ssd = hasattr(model, "ssd_head")
    by_name = {v.name: k for k, v in own.items()}
    aliases = dict(by_name)
    static_head = _paddledet_ssd_head(model, source) if is_ssd else {}
    if is_ssd:
        aliases.update(_ssd_aliases(model))
        aliases.update(static_head)
    resnet_blocks = clas_resnet_blocks(source.tensors) if source.kind == "clas2x" else None
    translate = {"det2x": _det2x_name,
                 "clas2x": lambda k: _clas2x_name(k, resnet_blocks)}.get(source.kind)
    result = Match(source)
    claimed = {}
    for skey, value in source.tensors.items():
        if source.kind == "ppdet":
            canonical, mkey = skey, (skey if skey in own else None)
        else:
            canonical = translate(skey) if translate else skey
            mkey = aliases.get(canonical) if canonical is not None else None
        if mkey is None or mkey in claimed:
            if not (source.kind == "ppdet" and skey.endswith("_backup")):
                result.unused.append((skey, _unused_reason(source.kind, skey, canonical)))
            continue
        claimed[mkey] = skey
        arr = _as_array(value)
        if is_ssd and source.kind == "det2x" and mkey.startswith("ssd_head."):
            arr = _ssd_reorder(model, mkey, arr)
        elif canonical in static_head:
            arr = _ssd_reorder(model, mkey, arr, background_last=False)
        ours = list(own[mkey].shape)
        if list(arr.shape) != ours:
            result.mismatched.append((mkey, skey, list(arr.shape), ours))
            continue
        result.state[mkey] = arr.astype(np.float32) if arr.dtype == np.float64 else arr
        result.loaded.append(mkey)
    order = {k: i for i, k in enumerate(own)}            # report in the model's order
    result.mismatched.sort(key=lambda t: order[t[0]])
    result.loaded.sort(key=order.get)
    result.names = {k: claimed[k] for k in claimed}
    result.missing = [k for k in own if k not in claimed]
    return result


def _pname(model_key, own):
    """The parameter's own name (what the seeds print), falling back to the key."""
    value = own.get(model_key)
    return getattr(value, "name", None) or model_key


def _class_layers(model):
    """Model keys of the layers whose shape depends on the number of classes."""
    own = model.state_dict()
    return {k for k in own if k.startswith(("yolo_head.outputs.", "ssd_head.conf_convs."))}


def _classes_in(model, key, shape):
    """Number of classes a class-dependent layer of ``shape`` was built for."""
    head = getattr(model, "yolo_head", None)
    m = re.match(r"^yolo_head\.outputs\.(\d+)\.", key)
    if m and head is not None:
        return shape[0] // len(head.anchor_masks[int(m[1])]) - 5
    m = re.match(r"^ssd_head\.conf_convs\.(\d+)\.", key)
    if m:
        return shape[0] // model.ssd_head.num_priors[int(m[1])] - 1
    return None


def _describe(source):
    return f"{source.given or source.path} ({source.label})"


_PADDLEDET_TAPS = ["conv3_2", "conv4_2", "conv6"]


def _taps_problem(model, source):
    """PaddleDetection's YOLOv3-MobileNetV1 reads the backbone after conv3_2, conv4_2 and
    conv6; conv4_1 / conv5_5 have the same shapes, so other taps load silently and compute
    something else. The message, or None."""
    backbone = getattr(model, "backbone", None)
    # static-era folders and name-keyed files come from the same PaddleDetection model
    if source.kind not in ("det2x", "static", "names") or not hasattr(model, "yolo_head") or \
            type(backbone).__name__ != "MobileNetV1" or \
            not any(str(k).startswith(("neck.yolo_block", "yolo_block."))
                    for k in source.tensors):
        return None
    if list(backbone.feature_maps) == _PADDLEDET_TAPS:
        return None
    return (f"{_describe(source)} is a PaddleDetection YOLOv3-MobileNetV1, which reads the "
            f"backbone after {', '.join(_PADDLEDET_TAPS)}; this config reads "
            f"{', '.join(backbone.feature_maps)}: add 'MobileNetV1: {{feature_maps: "
            f"[{', '.join(_PADDLEDET_TAPS)}]}}' to the config (as "
            f"configs/yolov3_mobilenet_v1_voc.yml has)")


def load_strict(model, source):
    """Load every model tensor from ``source`` or fail naming the first problem; nothing is
    set unless everything fits. Tensors the model does not use are ignored (listed by
    :func:`format_table`)."""
    problem = _taps_problem(model, source)
    if problem:
        raise CheckpointError(problem)
    m = match_weights(model, source)
    own = model.state_dict()
    if m.mismatched:
        key, skey, theirs, ours = m.mismatched[0]
        hint = ""
        if key in _class_layers(model):
            hint = (f" (the weights have {_classes_in(model, key, theirs)} classes, this config "
                    f"{_classes_in(model, key, ours)}: use them as pretrain_weights to "
                    f"fine-tune)")
        raise CheckpointError(
            f"shape mismatch for '{_pname(key, own)}' ({skey} in {_describe(source)}): weights "
            f"have {theirs}, model has {ours}{hint}; {len(m.mismatched)} tensor(s) differ")
    if m.missing:
        key = m.missing[0]
        raise CheckpointError(
            f"'{_pname(key, own)}' is missing from {_describe(source)} ({len(m.missing)} of "
            f"{len(own)} model tensors missing): the weights do not belong to this config")
    model.set_state_dict(m.state)
    return m


def _groups(keys, own):
    """Compact group names for a summary: ``backbone``, ``yolo_head.outputs`` ..."""
    out = []
    for k in keys:
        parts = k.split(".")
        g = ".".join(parts[:2]) if parts[0] != "backbone" else "backbone"
        if g not in out:
            out.append(g)
    return out


def _source_groups(items):
    out = {}
    for key, reason in items:
        g = re.split(r"[._]", key)[0] if reason != "optimizer state" else "optimizer"
        out.setdefault(reason, [])
        if g not in out[reason]:
            out[reason].append(g)
    return out


def load_lenient(model, source, what="pretrain weights"):
    """Load what matches by name and shape; print ONE summary line, plus one line when the
    class-dependent layers are skipped because of another class count. Returns the Match."""
    m = match_weights(model, source)
    own = model.state_dict()
    model.set_state_dict(m.state)
    class_keys = _class_layers(model)
    class_skip = [t for t in m.mismatched if t[0] in class_keys]
    other_skip = [t for t in m.mismatched if t[0] not in class_keys]
    fresh = [k for k in own if k not in m.state]
    parts = [f"{what} {_describe(source)}: loaded {len(m.loaded)} of {len(own)} tensors"]
    if m.missing:
        parts.append(f"{len(m.missing)} not in the weights start fresh "
                     f"({', '.join(_groups(m.missing, own))})")
    if other_skip:
        parts.append(f"{len(other_skip)} of another shape start fresh "
                     f"({', '.join(_groups([t[0] for t in other_skip], own))})")
    if class_skip:
        parts.append(f"{len(class_skip)} class-dependent start fresh")
    if m.unused:
        for reason, groups in _source_groups(m.unused).items():
            n = sum(1 for _, r in m.unused if r == reason)
            parts.append(f"{n} ignored: {reason} ({', '.join(groups[:6])}"
                         f"{', ...' if len(groups) > 6 else ''})")
    print("; ".join(parts))
    problem = _taps_problem(model, source)
    if problem:
        print(f"note: {problem}")
    if class_skip:
        key, _, theirs, ours = class_skip[0]
        layers = sorted({_pname(t[0], own).rsplit(".", 1)[0] for t in class_skip})
        print(f"class-dependent layers {', '.join(layers)} start fresh: the weights have "
              f"{_classes_in(model, key, theirs)} classes, this config "
              f"{_classes_in(model, key, ours)}")
    m.fresh = fresh
    return m


def format_table(model, m):
    """The match table: one row per model tensor (loaded / missing / shape) and per unused
    source tensor (skipped), then totals."""
    own = model.state_dict()
    rows = []
    mismatch = {t[0]: t for t in m.mismatched}
    for key in own:
        name = _pname(key, own)
        if key in m.state:
            rows.append(("loaded", name, m.names.get(key, key), str(list(own[key].shape))))
        elif key in mismatch:
            _, skey, theirs, ours = mismatch[key]
            rows.append(("shape", name, skey, f"weights {theirs} vs model {ours}"))
        else:
            rows.append(("missing", name, "-", str(list(own[key].shape))))
    for skey, reason in m.unused:
        rows.append(("skipped", "-", skey, reason))
    w1 = max(len(r[1]) for r in rows)
    w2 = max(len(r[2]) for r in rows)
    lines = [f"{'status':8} {'parameter':{w1}} {'source key':{w2}} detail"]
    lines += [f"{a:8} {b:{w1}} {c:{w2}} {d}" for a, b, c, d in rows]
    lines.append(f"loaded {len(m.loaded)}, shape mismatch {len(m.mismatched)}, missing "
                 f"{len(m.missing) - len(m.mismatched)}, skipped {len(m.unused)} "
                 f"(source: {_describe(m.source)})")
    return "\n".join(lines)
