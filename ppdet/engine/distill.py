"""Knowledge distillation: fine-tune a student under a frozen teacher, as a Trainer hook.

The teacher is a detector of this toolkit with the student's classes and output layout:
the unpruned model the run started from (``--distill``: "self"), or any other config and
weights (``--teacher_config CFG --teacher_weights W``, e.g. a wider model). It is built and
checked against the student before any slow step, is kept in eval mode, and runs without
gradients on every training batch. The loss is the one the student's head names
(``head.distill_loss``, :mod:`ppdet.modeling.losses.distill_loss`), times
``--distill_weight`` (default: that loss's ``default_weight``), added to the detection loss
inside the student's forward (so a data-parallel student carries it). The epoch lines log
``loss`` (the total), ``loss_det`` and ``loss_distill``. Every checkpoint records the
teacher in its meta (``distill``), so ``-r`` goes on with the same teacher, and the weights
it was checked to be are compared again by their digest.
"""
import os
from dataclasses import asdict, dataclass
from typing import Optional

from ppdet.core.errors import UserError
from ppdet.utils.cli import check_conflicts, check_range

__all__ = ["TeacherSpec", "Distillation", "add_distill_args", "check_distill_args",
           "spec_from_args", "spec_from_checkpoint", "build_teacher", "distillation_hooks"]

OPTIONS = ("distill", "teacher_config", "teacher_weights", "distill_weight")


@dataclass
class TeacherSpec:
    """Who teaches: ``weights`` (absolute), ``config`` None for the student's own config
    (self-distillation from the unpruned model), ``weight`` None for the loss's default."""
    weights: str
    config: Optional[str] = None
    weight: Optional[float] = None
    digest: Optional[str] = None        # of the weights when the run started

    def describe(self):
        who = "self" if self.config is None else os.path.basename(self.config)
        return f"{who} ({os.path.basename(self.weights)})"

    @classmethod
    def from_meta(cls, meta):
        return cls(**{k: meta.get(k) for k in ("weights", "config", "weight", "digest")})


def add_distill_args(parser):
    """The distillation flags every fine-tuning script takes."""
    parser.add_argument("--distill", action="store_true",
                        help="distill from the unpruned model the run starts from")
    parser.add_argument("--teacher_config", default=None,
                        help="distill from this config's model (with --teacher_weights)")
    parser.add_argument("--teacher_weights", default=None, help="the teacher's weights")
    parser.add_argument("--distill_weight", type=float, default=None,
                        help="weight of the distillation loss (default: the loss's own, "
                             "1000 for YOLOv3, 1 for SSD)")


def check_distill_args(args, resume=None, finetune=True, finetune_hint="add --finetune"):
    """The flags alone (no file is read but for existence): one line for a bad set."""
    check_conflicts(args, ("distill", "teacher_config"),
                    needs=[("teacher_config", "teacher_weights"),
                                 ("teacher_weights", "teacher_config"),
                                 ("distill_weight", ("distill", "teacher_config"))])
    check_range("--distill_weight", getattr(args, "distill_weight", None), 0, low_open=True)
    wanted = [f"--{o}" for o in OPTIONS if getattr(args, o, None) not in (None, False)]
    if wanted and resume:
        raise UserError(f"-r {resume} goes on with the teacher its checkpoint records: drop "
                        f"{' '.join(wanted)}")
    if wanted and not finetune:
        raise UserError(f"{wanted[0]} sets the teacher of the fine-tuning: {finetune_hint} "
                        f"(or drop {' '.join(wanted)})")
    config = getattr(args, "teacher_config", None)
    if config and not os.path.isfile(config):
        raise UserError(f"--teacher_config {config}: no such file")
    if getattr(args, "teacher_weights", None):
        from ppdet.engine.weights import locate
        locate(args.teacher_weights)


def spec_from_args(args, start_weights, what="weights", save_dir=None):
    """The teacher the flags ask for (None: no distillation). ``start_weights``: the model
    the run starts from, the teacher of ``--distill`` alone (``what`` names its option).
    With ``save_dir`` (the run's checkpoint folder), teacher weights inside it are refused:
    the run's snapshots would overwrite them and a later ``-r`` would find them changed."""
    from ppdet.engine.checkpoint import ensure_outside
    from ppdet.engine.weights import digest_path, locate
    if getattr(args, "teacher_config", None):
        path = locate(args.teacher_weights)
        spec = TeacherSpec(os.path.abspath(path), os.path.abspath(args.teacher_config),
                           args.distill_weight, digest_path(path))
    elif not getattr(args, "distill", False):
        return None
    elif not start_weights:
        raise UserError(f"--distill teaches with the model the run starts from, and there is "
                        f"none: give -o {what}=W, or a teacher with --teacher_config CFG "
                        f"--teacher_weights W")
    else:
        path = locate(start_weights)
        spec = TeacherSpec(os.path.abspath(path), None, args.distill_weight, digest_path(path))
    if save_dir is not None:
        ensure_outside(spec.weights, save_dir)
    return spec


def spec_from_checkpoint(path):
    """The teacher recorded in a checkpoint's meta (None: not a distilled run)."""
    from ppdet.engine.weights import read_weights
    meta = (read_weights(path).meta or {}).get("distill")
    return TeacherSpec.from_meta(meta) if meta else None


def build_teacher(spec, cfg):
    """The teacher model, loaded, frozen and in eval mode."""
    from ppdet.core.config import load_config
    from ppdet.engine.builder import build_model
    from ppdet.engine.checkpoint import CheckpointError, load_weights
    from ppdet.engine.weights import digest_path, locate
    if spec.digest is not None and digest_path(locate(spec.weights)) != spec.digest:
        raise UserError(f"the teacher's weights {spec.weights} changed since this run "
                        f"started: restore them, or start a new run")
    teacher = build_model(cfg if spec.config is None else load_config(spec.config))
    try:
        load_weights(teacher, spec.weights)
    except CheckpointError as e:      # e.g. --distill from an ImageNet backbone
        raise UserError(f"teacher {spec.describe()}: {e}") from None
    teacher.eval()
    for p in teacher.parameters():
        p.stop_gradient = True
    return teacher


def check_pair(student, teacher, spec, options=None):
    """The teacher's raw outputs must mean what the student's mean: one line if not."""
    who = f"teacher {spec.describe()}"
    s_head, t_head = student.head, teacher.head
    if type(s_head) is not type(t_head):
        raise UserError(f"{who} has a {type(t_head).__name__}, the student a "
                        f"{type(s_head).__name__}: a teacher needs the student's kind of head")
    loss_cls = getattr(type(s_head), "distill_loss", None)
    if loss_cls is None:
        raise UserError(f"{type(s_head).__name__} has no distillation loss")
    problem = loss_cls.check_pair(s_head, t_head)
    if problem:
        raise UserError(f"{who} cannot teach this model: {problem}")
    return loss_cls(**((options or {}).get(loss_cls.__name__) or {}))


class Distillation:
    """Trainer hook: before training it hangs itself on the student as its ``distill``
    term, names the loss terms to log and records the teacher in the checkpoints' meta;
    after training it takes itself off again."""

    def __init__(self, teacher, student, spec, options=None):
        """``options``: the student's config, for the loss's own section."""
        self.loss = check_pair(student, teacher, spec, options)
        self.teacher = teacher
        self.spec = spec
        self.head = student.head          # the student's layout, for the loss
        self.weight = float(spec.weight if spec.weight is not None
                            else self.loss.default_weight)

    def before_train(self, trainer):
        trainer.model.distill = self
        self.head = trainer.model.head
        trainer.log_terms = ["loss", "loss_det", "loss_distill"]
        trainer.meta["distill"] = asdict(self.spec)
        self.teacher.eval()
        if trainer.rank == 0:
            print(f"distillation: teacher {self.spec.describe()}, "
                  f"{type(self.loss).__name__} x {self.weight:g}", flush=True)

    def after_train(self, trainer):
        trainer.model.distill = None      # the trained student goes on alone (eval, export)

    def __call__(self, outs, inputs, losses):
        import paddle
        with paddle.no_grad():
            teacher_outs = self.teacher.head_outputs(inputs["image"])
        distill = self.weight * self.loss(outs, teacher_outs, self.head, inputs)
        return {**losses, "loss_det": losses["loss"], "loss_distill": distill,
                "loss": losses["loss"] + distill}


def distillation_hooks(spec, cfg, student):
    """``[hook]`` for a teacher spec (built and checked now), ``[]`` for None."""
    if spec is None:
        return []
    return [Distillation(build_teacher(spec, cfg), student, spec, cfg)]
