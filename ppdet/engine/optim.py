"""Optimizer and LR schedule from ``LearningRate`` / ``OptimizerBuilder`` sections.

PaddleDetection 2.x syntax: milestones are in epochs, warm-up in steps; the schedule
is stepped once per iteration.
"""
import math

import paddle
from paddle.optimizer import lr as lr_sched

from ppdet.core.config import ConfigError
from ppdet.core.registry import LR_SCHEDULES, OPTIMIZERS

__all__ = ["build_lr", "build_optimizer", "check_schedule"]


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _whole(key, value, low, option=True):
    """``value`` of config key ``key`` is an integer >= ``low`` (the message says what
    to give instead: the nearest value that works)."""
    if not _number(value) or int(value) != value or value < low:
        shown = value if not isinstance(value, str) else repr(value)
        fix = max(low, math.ceil(value)) if _number(value) else max(low, 1)
        raise ConfigError(f"{key} is {shown}: it must be a whole number >= {low} "
                          f"(e.g. {f'-o {key}=' if option else ''}{fix})")
    return int(value)


def check_schedule(cfg):
    """The training length and LR schedule mean something, before any slow step.

    ``epoch`` and ``snapshot_epoch`` are whole numbers >= 1; ``LearningRate.base_lr`` > 0;
    a PiecewiseDecay's milestones are positive and never decrease (a schedule that would
    end before it starts; two equal ones decay twice at once), with one more value than
    milestones when values are given;
    CosineDecay's ``max_epochs`` >= 1 and ``min_lr`` in [0, base_lr); LinearWarmup's
    ``steps``/``epochs`` >= 0 and ``start_factor`` in [0, 1]. Each refusal is one
    ConfigError naming the key and the smallest change that works."""
    _whole("epoch", cfg.get("epoch", 1), 1)
    _whole("snapshot_epoch", cfg.get("snapshot_epoch", 1), 1)
    section = cfg.get("LearningRate") or {}
    if not isinstance(section, dict):
        raise ConfigError("LearningRate must be a mapping (base_lr, schedulers)")
    base_lr = section.get("base_lr", 0.001)
    if not _number(base_lr) or base_lr <= 0:
        raise ConfigError(f"LearningRate.base_lr is {base_lr}: it must be a number > 0 "
                          f"(e.g. -o LearningRate.base_lr=0.001)")
    schedulers = section.get("schedulers") or []
    if not isinstance(schedulers, list):
        raise ConfigError("LearningRate.schedulers must be a list, e.g. "
                          "'[{name: PiecewiseDecay, milestones: [8, 11]}]'")
    for item in schedulers:
        if not isinstance(item, dict):
            raise ConfigError(f"LearningRate.schedulers entry {item!r} is not a mapping: "
                              f"e.g. '- !PiecewiseDecay {{milestones: [8, 11]}}'")
        name = item.get("name") or item.get("type")
        check = _SCHEDULE_CHECKS.get(name)
        if check is not None:
            check(item, f"LearningRate {name}", base_lr)
    return cfg


def _check_piecewise(item, key, base_lr):
    """PiecewiseDecay: milestones (when given) positive, not decreasing, with one value more
    than milestones when values are given; ``gamma`` > 0."""
    milestones = item.get("milestones")
    if milestones is not None:
        _check_milestones(milestones, key)
        values = item.get("values")
        if values is not None and (not isinstance(values, list)
                                   or len(values) != len(milestones) + 1):
            raise ConfigError(f"{key} has {len(milestones)} milestones, so it needs "
                              f"{len(milestones) + 1} values (one before each "
                              f"milestone and one after), not {values!r}")
    gamma = item.get("gamma", 0.1)
    if not _number(gamma) or gamma <= 0:
        raise ConfigError(f"{key} gamma is {gamma}: it must be > 0 (e.g. 0.1)")


def _check_milestones(milestones, key):
    """A non-empty list of epochs > 0 that never decreases."""
    if not isinstance(milestones, list) or not milestones or \
            not all(_number(m) for m in milestones):
        raise ConfigError(f"{key} milestones {milestones!r} must be a list of "
                          f"epochs, e.g. [8, 11]")
    if min(milestones) <= 0:
        raise ConfigError(f"{key} milestones {milestones} must be epochs > 0: "
                          f"drop {min(milestones):g}")
    if any(b < a for a, b in zip(milestones, milestones[1:])):
        fix = sorted(milestones)
        raise ConfigError(f"{key} milestones {milestones} are not increasing "
                          f"(the schedule would end before it starts): give "
                          f"{fix}")


def _check_cosine(item, key, base_lr):
    """CosineDecay: ``max_epochs`` >= 1 when given, ``min_lr`` in [0, base_lr)."""
    if item.get("max_epochs") is not None:
        _whole(f"{key} max_epochs", item["max_epochs"], 1, option=False)
    min_lr = item.get("min_lr", 0.0)
    if not _number(min_lr) or not 0 <= min_lr < base_lr:
        raise ConfigError(f"{key} min_lr is {min_lr}: it must be in [0, base_lr "
                          f"{base_lr:g}), e.g. 0")


def _check_warmup(item, key, base_lr):
    """LinearWarmup: ``steps``/``epochs`` >= 0 when given, ``start_factor`` in [0, 1]."""
    for k in ("steps", "epochs"):
        if item.get(k) is not None:
            _whole(f"{key} {k}", item[k], 0, option=False)
    factor = item.get("start_factor", 1. / 3)
    if not _number(factor) or not 0 <= factor <= 1:
        raise ConfigError(f"{key} start_factor is {factor}: it must be in [0, 1] "
                          f"(e.g. 0.1: start at a tenth of base_lr)")


_SCHEDULE_CHECKS = {"PiecewiseDecay": _check_piecewise, "CosineDecay": _check_cosine,
                    "LinearWarmup": _check_warmup}


@LR_SCHEDULES.register
def PiecewiseDecay(base_lr, steps_per_epoch, epochs, gamma=0.1, milestones=None, values=None):
    milestones = milestones or [int(epochs * 0.8), int(epochs * 0.9)]
    boundaries = [max(int(m * steps_per_epoch), 1) for m in milestones]
    if values is None:
        values = [base_lr * gamma ** i for i in range(len(boundaries) + 1)]
    return lr_sched.PiecewiseDecay(boundaries, values)


@LR_SCHEDULES.register
def CosineDecay(base_lr, steps_per_epoch, epochs, max_epochs=None, min_lr=0.0):
    total = max(int((max_epochs or epochs) * steps_per_epoch), 1)
    return lr_sched.CosineAnnealingDecay(base_lr, T_max=total, eta_min=min_lr)


@LR_SCHEDULES.register
def LinearWarmup(scheduler, base_lr, steps=500, start_factor=1. / 3, epochs=None):
    steps = int(steps if epochs is None else epochs)
    if steps <= 0:
        return scheduler
    return lr_sched.LinearWarmup(scheduler, steps, base_lr * start_factor, base_lr)


def build_lr(cfg, steps_per_epoch):
    """``LearningRate: {base_lr, schedulers: [decay, warm-up]}`` -> LRScheduler."""
    section = cfg.get("LearningRate") or {}
    base_lr = float(section.get("base_lr", 0.001))
    epochs = int(cfg.get("epoch", 1))
    decay, warmup = None, None
    for item in section.get("schedulers") or []:
        item = dict(item)
        name = item.pop("name", None) or item.pop("type", None)
        if name == "LinearWarmup":
            warmup = item
        elif name is not None:
            fn = LR_SCHEDULES.get(name)
            try:
                decay = fn(base_lr, steps_per_epoch, epochs, **item)
            except TypeError as e:
                raise ConfigError(f"LearningRate scheduler {name}: {e}") from e
        else:
            raise ConfigError("each LearningRate.schedulers entry needs a type, "
                              "e.g. '- !PiecewiseDecay {milestones: [8, 11]}'")
    if decay is None:
        decay = lr_sched.PiecewiseDecay([10 ** 9], [base_lr, base_lr])
    if warmup is not None:
        decay = LinearWarmup(decay, base_lr, **warmup)
    return decay


@OPTIMIZERS.register
def Momentum(learning_rate, parameters, weight_decay=None, momentum=0.9, grad_clip=None):
    return paddle.optimizer.Momentum(learning_rate, momentum=momentum, parameters=parameters,
                                     weight_decay=weight_decay, grad_clip=grad_clip)


@OPTIMIZERS.register
def RMSProp(learning_rate, parameters, weight_decay=None, rho=0.95, epsilon=1e-6,
            momentum=0.0, grad_clip=None):
    return paddle.optimizer.RMSProp(learning_rate, rho=rho, epsilon=epsilon, momentum=momentum,
                                    parameters=parameters, weight_decay=weight_decay,
                                    grad_clip=grad_clip)


@OPTIMIZERS.register
def Adam(learning_rate, parameters, weight_decay=None, beta1=0.9, beta2=0.999, grad_clip=None):
    return paddle.optimizer.Adam(learning_rate, beta1=beta1, beta2=beta2, parameters=parameters,
                                 weight_decay=weight_decay, grad_clip=grad_clip)


def build_optimizer(cfg, lr, parameters):
    """``OptimizerBuilder: {optimizer: {type, ...}, regularizer: {type: L2, factor}}``."""
    section = cfg.get("OptimizerBuilder") or {}
    opt_cfg = dict(section.get("optimizer") or {"type": "Momentum", "momentum": 0.9})
    name = opt_cfg.pop("type", "Momentum")
    reg = section.get("regularizer")
    decay = None
    if reg:
        kind = str(reg.get("type", "L2")).upper()
        factor = float(reg.get("factor", 0.0))
        decay = paddle.regularizer.L2Decay(factor) if kind == "L2" else \
            paddle.regularizer.L1Decay(factor)
    clip = section.get("clip_grad_by_norm")
    grad_clip = paddle.nn.ClipGradByGlobalNorm(clip) if clip else None
    try:
        return OPTIMIZERS.get(name)(lr, parameters, weight_decay=decay, grad_clip=grad_clip,
                                    **opt_cfg)
    except TypeError as e:
        raise ConfigError(f"OptimizerBuilder.optimizer {name}: {e}") from e
