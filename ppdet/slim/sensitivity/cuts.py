"""Cut points for fast sensitivity: where a detector's forward can stop and resume.

Pruning a group changes nothing computed before its first mask unit runs. A *cut* splits
``head_outputs`` into a prefix (image -> a few named tensors, the *state*) and a suffix
(state -> head outputs). The state is computed once, unpruned, over the cached eval set;
a pair whose mask units all run in the suffix and none in the prefix is then measured by
the suffix alone. Which units run where is not inferred from names or layer order: it is
recorded by running both halves eagerly with hooks on every unit (:func:`trace_cut`), so a
unit used before a cut (even one also used after it) is never counted as cut-safe.

Supported: architectures whose ``head_outputs`` is ``head(backbone(image))`` (YOLOv3,
SSD): a cut at the backbone output; and, for backbones that run
:class:`~ppdet.modeling.backbones.mobilenet_v1.TappedBackbone`'s forward (MobileNetV1,
MobileNetV2), a cut before every block. Anything else has no cuts (the whole program).
"""
import numpy as np
import paddle

from ppdet.modeling.architectures.one_stage import OneStageDetector
from ppdet.modeling.backbones.mobilenet_v1 import TappedBackbone
from ppdet.modeling.heads.yolo_head import YoloDetBlock, YOLOv3Head

__all__ = ["Cut", "cuts_of", "trace_cut", "prefix_states"]



def _backbone_then_head(model):
    """A detector whose raw outputs are ``head(backbone(image))`` and nothing else: the
    forward the cuts split."""
    return isinstance(model, OneStageDetector) and \
        type(model).head_outputs is OneStageDetector.head_outputs


def _tapped(bb):
    return type(bb).forward is TappedBackbone.forward


def _tap_index(bb):
    """``{block index: position in the backbone's output}`` for the tapped blocks."""
    taps = [k for k, n in enumerate(bb.block_names) if n in bb.feature_maps]
    return {k: i for i, k in enumerate(taps)}


class Cut:
    """Where ``head_outputs`` resumes. ``kind`` "backbone": after the backbone (state: its
    feature maps ``feat_i``); "block" k: before backbone block k (the taps so far and the
    running tensor ``in_k``); "level" (i, j): in YOLOv3 head level i, before its conv j
    (the raw outputs ``out_m`` of the levels before, the feature maps still to come, and
    for j = 0 the upsampled route ``route_i``, else the running tensor ``x_i_j``; j = 5 is
    before the tip)."""

    def __init__(self, model, kind="backbone", at=None):
        self.model, self.kind, self.at = model, kind, at
        self.head = model.head
        bb = model.backbone
        n = len(bb.out_channels)
        self.name = kind if at is None else f"{kind}{at}" if kind == "block" else \
            f"level{at[0]}" + (f".{at[1]}" if at[1] else "")
        if kind == "backbone":
            self.keys = [f"feat_{i}" for i in range(n)]
        elif kind == "block":
            taps = _tap_index(bb)
            self.keys = [f"feat_{taps[k]}" for k in range(at) if k in taps]
            self._running = self.keys[-1] if at - 1 in taps else f"in_{at}"
            if at - 1 not in taps:
                self.keys.append(self._running)
        else:
            i, j = at
            self.keys = ([f"out_{m}" for m in range(i)]
                         + ([f"route_{i}"] if j == 0 else [f"x_{i}_{j}"])
                         + [f"feat_{n - 1 - m}" for m in range(i if j == 0 else i + 1, n)])

    def suffix(self, state):
        """Head outputs from ``state`` (``{key: tensor}``)."""
        bb, n = self.model.backbone, len(self.model.backbone.out_channels)
        if self.kind == "backbone":
            return self.head([state[f"feat_{i}"] for i in range(n)])
        if self.kind == "level":
            i, j = self.at
            return _head_walk(self.head, [state.get(f"feat_{m}") for m in range(n)],
                              [state[f"out_{m}"] for m in range(i)],
                              state.get(f"route_{i}"), self.at, state.get(f"x_{i}_{j}"))
        x = state[self._running]
        feats = [state[k] for k in self.keys if k.startswith("feat_")]
        for name, block in zip(bb.block_names[self.at:], bb.blocks[self.at:]):
            x = block(x)
            if name in bb.feature_maps:
                feats.append(x)
        return self.head(feats)


def _head_walk(head, feats, outs, route, start=(0, 0), x=None, stop=None, record=None):
    """YOLOv3Head.forward conv by conv from ``start`` (level, conv) to ``stop``, the states
    of every point passed into ``record``."""
    n = len(feats)
    for i in range(start[0], n):
        blk = head.blocks[i]
        j = start[1] if i == start[0] else 0
        if j == 0:
            if record is not None:
                record[f"route_{i}"] = route
                record.update({f"out_{m}": o for m, o in enumerate(outs)})
            if stop == (i, 0):
                return outs
            feat = feats[n - 1 - i]
            x = feat if route is None else paddle.concat([route, feat], axis=1)
            x = blk.convs[0](x)
            j = 1
        for k in range(j, len(blk.convs) + 1):
            if record is not None:
                record[f"x_{i}_{k}"] = x
                record.update({f"out_{m}": o for m, o in enumerate(outs)})
            if stop == (i, k):
                return outs
            if k < len(blk.convs):
                x = blk.convs[k](x)
        outs.append(head.outputs[i](blk.tip(x)))
        if i < len(head.transitions):
            route = head.upsample(head.transitions[i](x))
    return outs


def cuts_of(model):
    """Every cut of ``model``, or [] when its forward is not one we know."""
    if not _backbone_then_head(model):
        return []
    cuts = [Cut(model)]
    head = cuts[0].head
    if type(head).forward is YOLOv3Head.forward and all(
            type(b).forward is YoloDetBlock.forward for b in head.blocks):
        cuts += [Cut(model, "level", (i, j)) for i in range(len(head.blocks))
                 for j in range(len(head.blocks[i].convs) + 1) if (i, j) != (0, 0)]
    if _tapped(model.backbone):
        cuts += [Cut(model, "block", k) for k in range(len(model.backbone.blocks))]
    return cuts


def prefix_states(model, image, cuts):
    """``{key: tensor}``: every state of ``cuts`` (and a few more) from one unpruned pass."""
    bb = model.backbone
    out = {}
    if _tapped(bb):
        want = {c.at for c in cuts if c.kind == "block"}
        # stop where the states end: what runs here is what the trace calls unsafe
        last = max(want) if all(c.kind == "block" for c in cuts) else len(bb.blocks)
        taps = _tap_index(bb)
        x = bb.conv1(image)
        feats = []
        for k, block in enumerate(bb.blocks[:last]):
            if k in want:
                out[f"in_{k}"] = x
            x = block(x)
            if k in taps:
                feats.append(x)
        if last in want:
            out[f"in_{last}"] = x
    else:
        feats = bb(image)
    out.update({f"feat_{i}": f for i, f in enumerate(feats)})
    levels = [c.at for c in cuts if c.kind == "level"]
    if levels:
        _head_walk(cuts[0].head, feats, [], None, stop=max(levels), record=out)
    return out


def trace_cut(model, cut, units, image_size):
    """Run ``cut``'s prefix and suffix eagerly on one blank image: ``(safe units, (prefix,
    suffix) conv FLOPs, state shapes {key: per-image shape})``. Safe: ran in the suffix,
    never in the prefix."""
    ran, flops, hooks = [set(), set()], [0, 0], []
    phase = [0]
    layers = dict(model.named_sublayers())
    for u in units:
        hooks.append(layers[u].register_forward_post_hook(
            lambda lyr, i, o, _u=u: ran[phase[0]].add(_u)))
    for m in model.sublayers():
        if isinstance(m, paddle.nn.Conv2D):
            def count(lyr, inputs, out):
                w = lyr.weight.shape
                flops[phase[0]] += int(np.prod(out.shape[1:])) * int(np.prod(w[1:]))
            hooks.append(m.register_forward_post_hook(count))
    was_training = model.training
    model.eval()
    try:
        with paddle.no_grad():
            states = prefix_states(model, paddle.zeros([1, 3, *image_size]), [cut])
            state = {k: states[k] for k in cut.keys}
            phase[0] = 1
            cut.suffix(state)
    finally:
        for h in hooks:
            h.remove()
        if was_training:
            model.train()
    shapes = {k: list(v.shape[1:]) for k, v in state.items()}
    return ran[1] - ran[0], tuple(flops), shapes
