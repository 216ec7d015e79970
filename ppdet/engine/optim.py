"""Optimizer and LR schedule from ``LearningRate`` / ``OptimizerBuilder`` sections.

PaddleDetection 2.x syntax: milestones are in epochs, warm-up in steps; the schedule
is stepped once per iteration.
"""
import paddle
from paddle.optimizer import lr as lr_sched

from ppdet.core.config import ConfigError
from ppdet.core.registry import LR_SCHEDULES, OPTIMIZERS

__all__ = ["build_lr", "build_optimizer"]


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
