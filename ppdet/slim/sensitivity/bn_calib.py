"""BN recalibration ("adaptive BN", EagleEye): re-estimate a pruned model's BN statistics.

Pruning changes what every BN after the cut sees, so its stored mean and variance no
longer fit; scored with them, pruned candidates rank poorly against their accuracy after
fine-tuning. :func:`calibrated_stats` runs N training batches (eval transforms, no
gradients) through the model with every BN normalising by its batch statistics, and returns
per BN the pooled mean and variance of its inputs over all N batches. The model is left as
it was: weights are never touched and the BN statistics are put back.

In fast mode the compiled program cannot take new parameters, so the new statistics reach it
as a per-channel affine correction of each BN's output (:func:`affine_correction`), fed as
two more inputs next to the channel masks.
"""
import contextlib

import numpy as np
import paddle

__all__ = ["bn_layers", "CalibSet", "calibrated_stats", "stats_of", "set_stats", "using_stats",
           "affine_correction"]


def bn_layers(model):
    """``[(path, layer)]`` of every BatchNorm in ``model``, in a fixed order."""
    kinds = (paddle.nn.BatchNorm, paddle.nn.BatchNorm1D, paddle.nn.BatchNorm2D)
    return [(p, m) for p, m in model.named_sublayers() if isinstance(m, kinds)]


class CalibSet:
    """``batches`` training batches of ``batch_size`` images after the EvalReader's
    transforms, decoded once (an :class:`~ppdet.slim.eval_cache.EvalCache` of the train
    set)."""

    def __init__(self, dataset, sample_transforms, batches, batch_size, progress=True):
        from ppdet.slim.sensitivity.cache import EvalCache
        self.n_batches, self.batch_size = int(batches), int(batch_size)
        self.cache = EvalCache(dataset, sample_transforms,
                               max_samples=self.n_batches * self.batch_size, progress=progress)

    def __iter__(self):
        for img, *_ in self.cache.batches(self.batch_size):
            yield img

    def describe(self):
        """What the sidecar records: numbers measured with other settings never mix."""
        return {"batches": self.n_batches, "batch_size": self.batch_size,
                "images": len(self.cache), "train set": self.cache.digest()[:16]}


def stats_of(layers):
    return [(m._mean.numpy().copy(), m._variance.numpy().copy()) for _, m in layers]


def set_stats(layers, stats):
    for (_, m), (mean, var) in zip(layers, stats):
        m._mean.set_value(np.asarray(mean, "float32"))
        m._variance.set_value(np.asarray(var, "float32"))


@contextlib.contextmanager
def using_stats(model, stats):
    """Run ``model`` with ``stats`` (from :func:`calibrated_stats`); restored on exit."""
    layers = bn_layers(model)
    saved = stats_of(layers)
    set_stats(layers, stats)
    try:
        yield
    finally:
        set_stats(layers, saved)


def calibrated_stats(model, batches, forward=None):
    """Per BN of ``model`` (``bn_layers`` order), ``(mean, var)`` of its input pooled over
    ``batches`` (numpy images NCHW), each BN normalising by batch statistics as in
    training. ``forward(tensor)`` runs the model (default ``model.head_outputs``). Nothing
    of ``model`` changes: its statistics and modes are restored."""
    layers = bn_layers(model)
    forward = forward or model.head_outputs
    saved, modes = stats_of(layers), [(m, m.training) for m in model.sublayers(True)]
    sums = [[0.0, 0.0, 0] for _ in layers]

    def hook(i):
        def pre(layer, inputs):
            x = inputs[0]
            n = x.shape[0] * int(np.prod(x.shape[2:]))
            axes = [0] + list(range(2, len(x.shape)))
            s = sums[i]
            s[0] = s[0] + x.sum(axes).numpy().astype("float64")
            s[1] = s[1] + (x * x).sum(axes).numpy().astype("float64")
            s[2] += n
        return pre

    hooks = [m.register_forward_pre_hook(hook(i)) for i, (_, m) in enumerate(layers)]
    try:
        model.eval()
        for _, m in layers:
            m.train()
        with paddle.no_grad():
            for img in batches:
                forward(paddle.to_tensor(np.ascontiguousarray(img)))
    finally:
        for h in hooks:
            h.remove()
        for m, training in modes:
            m.training = training
        set_stats(layers, saved)
    out = []
    for (s1, s2, n), (mean0, var0) in zip(sums, saved):
        if not n:          # a BN the forward never reached keeps its statistics
            out.append((mean0, var0))
            continue
        mean = s1 / n
        out.append((mean.astype("float32"), np.maximum(s2 / n - mean * mean, 0)
                    .astype("float32")))
    return out


def affine_correction(model, stats):
    """Flat ``(scale, shift)`` over the channels of every BN, such that
    ``bn_out * scale + shift`` is what the BN outputs with ``stats`` instead of its own."""
    scales, shifts = [], []
    for (_, m), (mean1, var1) in zip(bn_layers(model), stats):
        mean0, var0 = m._mean.numpy(), m._variance.numpy()
        w = m.weight.numpy() if m.weight is not None else np.ones_like(mean0)
        b = m.bias.numpy() if m.bias is not None else np.zeros_like(mean0)
        s0, s1 = np.sqrt(var0 + m._epsilon), np.sqrt(np.asarray(var1) + m._epsilon)
        scale = s0 / s1
        scales.append(scale)
        shifts.append(b * (1 - scale) + (mean0 - mean1) * w / s1)
    return (np.concatenate(scales).astype("float32"),
            np.concatenate(shifts).astype("float32"))
