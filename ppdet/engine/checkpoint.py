"""One checkpoint format for every tool.

``<path>.pdparams``: the model's ``state_dict`` (structured keys, as PaddleDetection
2.x), plus a reserved entry ``__ppdet_meta__`` with the replayable pruning plan
(``prune_plan``: ``{"version": 1, "layers": {layer path: {"out": kept, "in": kept}}}``, the
channels each pruned layer keeps, relative to the config's model; a pruning group's kept
channels are its master conv's ``out``), the residual blocks removed by layer pruning, the
shapes the config builds before any pruning (weights of another config are refused by
them), and bookkeeping. Loading removes the blocks, then replays the plan through
:mod:`ppdet.modeling.surgery`: a pruned checkpoint rebuilds its own shapes and structure.
Checkpoints written before the plan existed carry ``channel_plan`` (``{param.name: shape}``)
instead; they still load. ``<path>.pdopt``: optimizer + LR schedule state and the epoch,
for exact resume. Writes are atomic.
"""
import contextlib
import io
import os

import numpy as np
import paddle

from ppdet.engine import weights as weights_lib
from ppdet.engine.weights import META_KEY, CheckpointError
from ppdet.modeling import surgery
from ppdet.utils.atomic import atomic_write_bytes

__all__ = ["CheckpointError", "resolve_weights", "save_checkpoint", "load_weights",
           "apply_channel_plan", "channel_plan", "load_optimizer_state",
           "check_same_config", "is_reshaped", "ensure_outside", "convert_weights",
           "prune_plan_of", "META_KEY"]


def resolve_weights(path):
    """Where the weights live: for this toolkit's checkpoints the path without
    ``.pdparams`` (``.pdopt`` sits next to it); otherwise the file or folder itself. URLs
    resolve offline from ``~/.cache/paddle/weights`` (see :mod:`ppdet.engine.weights`)."""
    found = weights_lib.locate(path)
    return found[:-len(".pdparams")] if found.endswith(".pdparams") else found


def _to_bytes(obj):
    buf = io.BytesIO()
    paddle.save(obj, buf)
    return buf.getvalue()


def channel_plan(model, reference_shapes=None):
    """``{param.name: shape}`` for parameters whose shape differs from ``reference_shapes``
    (all parameters when no reference is given)."""
    plan = {}
    for p in model.parameters():
        shape = list(p.shape)
        if reference_shapes is None or reference_shapes.get(p.name) != shape:
            plan[p.name] = shape
    return plan


def prune_plan_of(model):
    """The replayable plan of ``model`` (None when its cuts are unknown: it was loaded from
    a checkpoint that only had shapes)."""
    if getattr(model, "_cuts_unknown", False):
        return None
    return {"version": 1, "layers": surgery.live_cuts(model)}


def save_checkpoint(model, path, optimizer=None, epoch=None, plan=None, extra=None):
    """Write ``path.pdparams`` (+ ``path.pdopt`` with the optimizer) atomically.

    Only rank 0 writes: under ``paddle.distributed.launch`` every rank holds the same
    weights, and the tools that prune then fine-tune run their saves on every rank.
    """
    if paddle.distributed.get_rank() != 0:
        return
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("_backup")}
    cuts = prune_plan_of(model)
    if cuts is None:                 # cuts unknown: the shapes let it load all the same
        plan = plan or channel_plan(model)
    state[META_KEY] = {"channel_plan": plan or {}, "prune_plan": cuts, "epoch": epoch,
                       "removed_layers": list(getattr(model, "removed_layers", [])),
                       "removed_shifts": dict(getattr(model, "removed_shifts", {})),
                       "config_shapes": getattr(model, "config_shapes", None),
                       "backbone_taps": _backbone_taps(model),
                       **(extra or {})}
    atomic_write_bytes(path + ".pdparams", _to_bytes(state))
    if optimizer is not None:
        opt_state = {"optimizer": optimizer.state_dict(), "epoch": epoch}
        atomic_write_bytes(path + ".pdopt", _to_bytes(opt_state))


def _load(path):
    try:
        return paddle.load(path)
    except Exception as e:  # corrupt or foreign file
        raise CheckpointError(f"cannot read weights {path}: {type(e).__name__}: {e}"
                              .splitlines()[0]) from e


def apply_channel_plan(model, plan):
    """Resize parameters to the shapes in ``plan`` (values are reset; load weights after).

    Depthwise convs keep ``groups == channels`` so a pruned MobileNet still runs.
    """
    if not plan:
        return model
    by_name = {p.name: p for p in model.parameters()}
    unknown = [n for n in plan if n not in by_name]
    if unknown:
        raise CheckpointError(f"checkpoint's channel plan names parameter '{unknown[0]}' "
                              f"that this model does not have: wrong config for these weights?")
    for name, shape in plan.items():
        p = by_name[name]
        if list(p.shape) != list(shape):
            # set_value refuses a new shape; the tensor underneath takes any (as pruning does)
            tensor = p.value().get_tensor()
            where = tensor._place()
            place = paddle.CPUPlace() if where.is_cpu_place() else \
                paddle.CUDAPlace(where.gpu_device_id())
            tensor.set(np.zeros(shape, dtype="float32"), place)
    for layer in model.sublayers():
        if isinstance(layer, paddle.nn.Conv2D):
            out_c, in_per_group = layer.weight.shape[:2]
            if layer._groups > 1 and in_per_group == 1:   # depthwise: groups follow channels
                layer._groups = out_c
                layer._in_channels = out_c
            else:
                layer._in_channels = in_per_group * layer._groups
            layer._out_channels = out_c
    return model


def _backbone_taps(model):
    """The backbone layers the neck reads: same shapes, other features, so shapes alone
    cannot tell two configs apart (conv4_1 vs conv3_2 in MobileNetV1)."""
    taps = getattr(getattr(model, "backbone", None), "feature_maps", None)
    return [str(t) for t in taps] if taps is not None else None


def check_same_config(model, meta, path):
    """Weights saved from another config (other classes, width, backbone) are refused even
    when a channel plan would make them fit: the plan only replays pruning."""
    theirs_taps, our_taps = meta.get("backbone_taps"), _backbone_taps(model)
    if theirs_taps is not None and our_taps is not None and theirs_taps != our_taps:
        raise CheckpointError(
            f"{path} was trained with the backbone read at {', '.join(theirs_taps)}, this "
            f"config reads {', '.join(our_taps)}: pass the config the weights were trained "
            f"with (or set its backbone feature_maps to match)")
    theirs, ours = meta.get("config_shapes"), getattr(model, "config_shapes", None)
    if not theirs or not ours:
        return
    for name in sorted(set(theirs) | set(ours)):
        if theirs.get(name) != ours.get(name):
            raise CheckpointError(
                f"{path} was trained with another config: parameter '{name}' is "
                f"{theirs.get(name, 'absent')} there and {ours.get(name, 'absent')} in this "
                f"config's model; pass the config the weights were trained with")


def load_weights(model, weights, strict=True):
    """Load weights into ``model``: rebuild pruned shapes, then load strictly.

    This toolkit's checkpoints, static-era folders / ``.tar`` archives, released URLs (from
    the offline cache), PaddleDetection 2.x and PaddleClas 2.x ``.pdparams`` are accepted
    (:mod:`ppdet.engine.weights`). Every missing or shape-mismatched parameter is an error
    naming it, and nothing is loaded then. Returns the checkpoint's meta dict (for foreign
    formats ``{"source_format": kind}``).
    """
    source = weights_lib.read_weights(weights)
    if source.kind != "ppdet":
        if strict:
            weights_lib.load_strict(model, source)
        else:
            weights_lib.load_lenient(model, source, what="weights")
        return {"source_format": source.kind}
    base = source.path[:-len(".pdparams")]
    state = source.tensors
    meta = source.meta or {}
    check_same_config(model, meta, base + ".pdparams")
    removed = [p for p in meta.get("removed_layers") or []
               if p not in getattr(model, "removed_layers", [])]
    try:
        if removed:                     # layer-pruned: drop the same blocks first
            surgery.remove_layers(model, removed, meta.get("removed_shifts"))
        cuts = (meta.get("prune_plan") or {}).get("layers")
        if cuts:                        # replay the channels kept, layer by layer
            surgery.replay(model, cuts)
        elif meta.get("prune_plan") is None and meta.get("channel_plan"):   # older files
            before = {p.name: list(p.shape) for p in model.parameters()}
            apply_channel_plan(model, meta["channel_plan"])
            if any(list(p.shape) != before[p.name] for p in model.parameters()):
                model._cuts_unknown = True
    except ValueError as e:
        raise CheckpointError(f"{base}.pdparams: {e}") from e
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own and not k.endswith("_backup")]
    if strict and (missing or unexpected):
        what = (f"parameter '{missing[0]}' is missing from {base}.pdparams" if missing else
                f"{base}.pdparams has parameter '{unexpected[0]}' this model lacks")
        raise CheckpointError(f"{what} ({len(missing)} missing, {len(unexpected)} unexpected):"
                              f" the weights do not belong to this config")
    for key, value in own.items():
        if key in state:
            got = list(np.shape(state[key]))
            if got != list(value.shape):
                pruned = " (pruned weights need the checkpoint's channel plan: were they " \
                         "saved by this toolkit?)" if meta.get("channel_plan") is None else ""
                raise CheckpointError(
                    f"shape mismatch for '{key}': weights have {got}, model has "
                    f"{list(value.shape)}{pruned}")
    model.set_state_dict({k: v for k, v in state.items() if k in own})
    return meta


def load_optimizer_state(optimizer, checkpoint, meta=None):
    """The optimizer and LR state of ``checkpoint`` (its ``.pdopt``) into ``optimizer``;
    returns the next epoch. Load the weights first: they may add parameters (a removed
    block's ``Shift``) that the optimizer must be built over."""
    base = resolve_weights(checkpoint)
    if not os.path.isfile(base + ".pdopt"):
        raise CheckpointError(f"cannot resume: {base}.pdopt (optimizer state) is missing")
    opt_state = _load(base + ".pdopt")
    optimizer.set_state_dict(opt_state["optimizer"])
    epoch = opt_state.get("epoch", (meta or {}).get("epoch"))
    return (epoch + 1) if epoch is not None else 0


def is_reshaped(meta):
    """Whether a checkpoint's meta describes a pruned or layer-pruned model."""
    if ((meta.get("prune_plan") or {}).get("layers")):
        return True
    plan, base = meta.get("channel_plan") or {}, meta.get("config_shapes") or {}
    return bool(meta.get("removed_layers")) or any(
        name in base and list(shape) != list(base[name]) for name, shape in plan.items())


def ensure_outside(weights, out_dir):
    """Refuse to write a run into the folder its input weights come from: a later save
    (``pruned``, ``channels``, snapshots) would overwrite them."""
    base = os.path.abspath(resolve_weights(weights))
    out = os.path.abspath(out_dir)
    if os.path.dirname(base) == out or base.startswith(out + os.sep):
        raise CheckpointError(f"the weights {base}.pdparams lie in the output folder {out}, "
                              f"where this run saves its checkpoints: copy them elsewhere or "
                              f"pass -o save_dir=ANOTHER_DIR")


def convert_weights(src, cfg, output, allow_partial=False):
    """Read ``src`` in any recognised format, map it onto the model ``cfg`` builds, write it
    as this toolkit's ``output`` (.pdparams). Strict unless ``allow_partial``: every model
    tensor must come from ``src``. Returns (model, Match)."""
    from ppdet.engine.builder import build_model
    if not str(output).endswith(".pdparams"):
        raise CheckpointError(f"--output must end in .pdparams (got {output})")
    source = weights_lib.read_weights(src)
    model = build_model(cfg)
    if source.kind == "ppdet":
        load_weights(model, source.path)
        m = weights_lib.match_weights(model, source)
    elif allow_partial:
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            m = weights_lib.load_lenient(model, source)
    else:
        m = weights_lib.load_strict(model, source)
    in_path = os.path.abspath(source.path)
    out_path = os.path.abspath(output)
    if in_path == out_path:
        raise CheckpointError(f"--output {output} is the input file: pass another path")
    save_checkpoint(model, out_path[:-len(".pdparams")], plan=channel_plan(model),
                    extra={"converted_from": source.given, "source_format": source.kind})
    return model, m
