"""What a workflow is asked to do: one dataclass per pipeline, checked in one place.

A script parses its arguments and calls :func:`from_args` with the request class; every
field is read from the parsed arguments by name (or by the flag named in the field's
``metadata["arg"]``, inverted where ``metadata["invert"]``), then :meth:`check` validates
all of them before the config, the data or the model is touched: one ``error:`` line
naming the option and the fix. Library callers (tests, bench/) build requests directly;
their values are checked the same way when the pipeline starts.
"""
import os
from dataclasses import dataclass
from typing import Optional

from ppdet.core.errors import UserError
from ppdet.engine.distill import check_distill_args
from ppdet.utils.cli import ArgsRequest as _Request
from ppdet.utils.cli import arg_field as _arg
from ppdet.utils.cli import check_conflicts, check_range, check_writable_file, from_args

__all__ = ["from_args", "SensitivityRequest", "PruneRequest", "SlimRequest",
           "LatencyTableRequest", "DEFAULT_RATIOS"]

DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass
class SensitivityRequest(_Request):
    """``slim/sensitive/sensitive.py``: loss per (conv, ratio) into ``sensitivities_file``.
    ``mode``: ``fast`` (masked, one compiled program) or ``real``; ``bn_calib``: BN
    statistics re-estimated on that many training batches before every measurement;
    ``stop_loss``: per conv, no ratio measured past a loss above it; ``cpu_threads``:
    None runs one single-threaded predictor per core this process may use, a number one
    predictor with that many threads; ``device``: fast mode's predictor, cpu or gpu (None:
    the GPU when there is one); ``shards``/``shard_id`` None: from
    ``paddle.distributed.launch``'s environment."""
    sensitivities_file: str = "sensitivities.data"
    pruned_params: Optional[str] = None
    pruned_ratios: object = DEFAULT_RATIOS       # a sequence, or the flag's text
    criterion: str = "l1_norm"
    eval_samples: Optional[int] = None
    batch_size: int = 16
    mode: str = "fast"
    cpu_threads: Optional[int] = None
    device: Optional[str] = "cpu"
    bn_calib: int = 0
    stop_loss: Optional[float] = None
    shards: Optional[int] = None
    shard_id: Optional[int] = None
    adopt: bool = False
    progress: bool = True

    def check(self):
        from ppdet.slim.prune.params import parse_ratios
        from ppdet.slim.sensitivity.fast_eval import check_device
        from ppdet.slim.sensitivity.store import norm_ratio
        check_conflicts(self.flags(), needs=[("shard_id", "shards")])
        check_range("--batch_size", self.batch_size, 1)
        check_range("--eval_samples", self.eval_samples, 1)
        check_range("--cpu_threads", self.cpu_threads, 1)
        check_range("--bn_calib", self.bn_calib, 0)
        check_range("--stop_loss", self.stop_loss, 0, low_open=True)
        check_range("--shards", self.shards, 1)
        if self.shards is not None:
            check_range("--shard_id", self.shard_id, 0, self.shards - 1)
        check_writable_file("--sensitivities_file", self.sensitivities_file)
        if self.device == "gpu" and self.mode != "fast":
            raise UserError("--device gpu runs fast mode's predictor on the GPU: drop --mode "
                            "real")
        if self.device == "gpu" and self.cpu_threads is not None:
            raise UserError("--cpu_threads sets CPU predictor threads: drop it with --device "
                            "gpu")
        self.device = check_device(self.device if self.mode == "fast" else "cpu")
        if isinstance(self.pruned_ratios, str):
            self.pruned_ratios = parse_ratios(self.pruned_ratios)
        self.pruned_ratios = list(self.pruned_ratios)
        seen = {}
        for r in self.pruned_ratios:
            if norm_ratio(r) in seen:
                raise UserError(f"--pruned_ratios gives {seen[norm_ratio(r)]} and {r}, the "
                                f"same ratio: give each once")
            seen[norm_ratio(r)] = r
        if self.shards is None:       # under paddle.distributed.launch each worker its rank
            self.shards = int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))
            self.shard_id = int(os.environ.get("PADDLE_TRAINER_ID", "0"))
        self.shard_id = self.shard_id or 0
        return self


# the options that say how ratios are chosen (a resumed run takes none of them)
_HOW = ("pruned_params", "pruned_ratios", "sensitivities_file", "loss", "target_flops",
        "target_ratio", "target_latency", "target_speedup", "align", "no_finetune")


@dataclass
class PruneRequest(_Request):
    """``slim/prune/prune.py``: exactly one way of choosing ratios (given ratios for
    ``pruned_params``; a sensitivities file with ``loss``, ``target_flops`` or a latency
    target; ``target_ratio`` of FLOPs with one ratio for ``pruned_params``; or a latency
    target with one ratio snapped to the table's counts), then ``align``, fine-tuning
    (``finetune``, evaluating while it runs with ``validate``, under a teacher with
    ``distill`` (the unpruned model) or ``teacher_config`` + ``teacher_weights``, and
    ``distill_weight``), or ``resume_checkpoint`` (with the teacher its checkpoint
    records)."""
    pruned_params: Optional[str] = None
    pruned_ratios: Optional[str] = None
    sensitivities_file: Optional[str] = None
    loss: Optional[float] = None
    target_flops: Optional[float] = None
    target_ratio: Optional[float] = None
    target_latency: Optional[float] = None
    target_speedup: Optional[float] = None
    latency_table: Optional[str] = None
    threads: int = 1
    precision: str = "fp32"            # the latency table's (and deployment's) precision
    criterion: str = "l1_norm"
    idx_selector: str = "default"
    align: Optional[int] = None
    finetune: bool = _arg("no_finetune", invert=True, default=True)
    validate: bool = _arg("eval", default=False)
    resume_checkpoint: Optional[str] = None
    distill: bool = False
    teacher_config: Optional[str] = None
    teacher_weights: Optional[str] = None
    distill_weight: Optional[float] = None

    @property
    def wants_latency(self):
        return self.target_latency is not None or self.target_speedup is not None

    def check(self):
        flags = self.flags()
        check_conflicts(flags, ("pruned_ratios", "target_ratio", "sensitivities_file"),
                        ("loss", "target_flops", "target_latency", "target_speedup"),
                        ("pruned_ratios", "target_ratio", "target_latency", "target_speedup"),
                        ("eval", "no_finetune"),
                        *[("resume_checkpoint", k) for k in _HOW],
                        needs=[("loss", "sensitivities_file"),
                               ("target_flops", "sensitivities_file"),
                               ("target_ratio", "pruned_params"),
                               ("pruned_ratios", "pruned_params"),
                               ("target_latency", ("sensitivities_file", "pruned_params")),
                               ("target_speedup", ("sensitivities_file", "pruned_params"))])
        for name in ("target_ratio", "target_flops", "loss"):
            check_range(f"--{name}", getattr(self, name), 0, 1, low_open=True,
                        high_open=True)
        check_range("--align", self.align, 1, integer=True)
        check_range("--target_latency", self.target_latency, 0, low_open=True)
        check_range("--target_speedup", self.target_speedup, 1, low_open=True)
        if self.latency_table and not os.path.isfile(self.latency_table):
            raise UserError(f"latency table not found: {self.latency_table}: build it with "
                            f"slim/prune/latency_table.py -c CONFIG -o weights=W --output "
                            f"{self.latency_table}")
        if self.sensitivities_file and not os.path.isfile(self.sensitivities_file):
            raise UserError(f"sensitivities file not found: {self.sensitivities_file}")
        _check_precision(self.precision, self.wants_latency, self.latency_table)
        check_distill_args(flags, resume=self.resume_checkpoint, finetune=self.finetune,
                           finetune_hint="drop --no_finetune")
        return self


def _check_precision(precision, wants_latency, table_file):
    """``--precision``: a known one, only with a latency target, and the table's own."""
    from ppdet.slim.latency.table import PRECISIONS, table_precision
    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision} is not one of {', '.join(PRECISIONS)}")
    if precision != "fp32" and not wants_latency:
        raise UserError(f"--precision {precision} says which latency table to prune for: "
                        f"give it with --target_speedup or --target_latency")
    have = table_precision(table_file) if table_file else precision
    if have != precision:
        raise UserError(f"--latency_table {table_file} was measured in {have.upper()}, "
                        f"--precision {precision} asked: pass --precision {have}, or build "
                        f"a {precision} table with slim/prune/latency_table.py --precision "
                        f"{precision}")


@dataclass
class SlimRequest(_Request):
    """``slim/prune/slim_prune.py``: channels by a global BN-scale threshold (the
    ``global_percent`` share of all prunable scales under it; ``layer_keep``: every layer
    keeps at least that share), then ``shortcuts`` residual blocks; ``prune_mode`` 1 also
    prunes layers tied by shortcuts; ``dw_rule`` for depthwise convs; ``report``: the
    before/after table's file; ``distill``/``teacher_*``/``distill_weight``: fine-tune under
    a teacher (default: the model before slimming)."""
    global_percent: float = 0.2
    layer_keep: float = 0.0
    shortcuts: int = 0
    prune_mode: int = _arg("prune", default=1)
    dw_rule: str = "max"
    finetune: bool = False
    validate: bool = _arg("eval", default=False)
    report: Optional[str] = None
    verbose: bool = False
    distill: bool = False
    teacher_config: Optional[str] = None
    teacher_weights: Optional[str] = None
    distill_weight: Optional[float] = None

    def check(self):
        check_range("--global_percent", self.global_percent, 0, 1, low_open=True,
                    high_open=True)
        check_range("--layer_keep", self.layer_keep, 0, 1, high_open=True)
        check_range("--shortcuts", self.shortcuts, 0, integer=True)
        if self.validate and not self.finetune:
            raise UserError("--eval evaluates while fine-tuning: add --finetune (or drop "
                            "--eval)")
        if self.report and (os.path.isdir(self.report) or not os.path.isdir(
                os.path.dirname(os.path.abspath(self.report)))):
            raise UserError(f"--report {self.report}: give a file path in an existing folder")
        check_distill_args(self.flags(), finetune=self.finetune)
        return self


@dataclass
class LatencyTableRequest(_Request):
    """``slim/prune/latency_table.py``: every prunable group at every multiple of ``step``
    channels (at most ``max_counts`` per group), each timed ``passes`` times, ``repeats``
    runs a timing, with ``threads`` CPU threads; ``output``: the table file (default
    beside the weights)."""
    threads: int = 1
    step: int = 8
    max_counts: Optional[int] = None
    repeats: int = 30
    passes: Optional[int] = None
    output: Optional[str] = None
    precision: str = "fp32"            # int8: entries timed on the quantized program

    def check(self):
        from ppdet.slim.latency.table import PRECISIONS, table_precision
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision {self.precision} is not one of "
                            f"{', '.join(PRECISIONS)}")
        have = table_precision(self.output) if self.output and os.path.isfile(
            self.output) else self.precision
        if have != self.precision:
            raise UserError(f"--output {self.output} is a {have.upper()} latency table, "
                            f"--precision {self.precision} asked: pass --precision {have} "
                            f"to go on with it, or give another --output")
        check_range("--threads", self.threads, 1, integer=True)
        check_range("--step", self.step, 1, integer=True)
        check_range("--repeats", self.repeats, 1, integer=True)
        check_range("--passes", self.passes, 1, integer=True)
        check_range("--max_counts", self.max_counts, 2, integer=True)
        return self
