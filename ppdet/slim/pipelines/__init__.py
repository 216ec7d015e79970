"""What the slim/ scripts do, one call each: a request in, a result out.

Each workflow takes one request object (:mod:`.requests`: a dataclass built from the parsed
arguments by :func:`~.requests.from_args`, validated in one place before any slow step) and
returns a result object: :func:`~.sensitivity.analyse_sensitivity`,
:func:`~.prune.prune_and_finetune` (with :func:`~.prune.choose_ratios`, the one dispatch over
the ways of choosing ratios), :func:`~.slimming.slim_and_finetune`, and
:func:`~.latency.build_latency_table`. The top room of ``ppdet.slim``: it may import every
other room and ``ppdet.engine`` (trainer, checkpoints); nothing imports it but scripts,
bench/ and tests. Every step prints through ``log``; only rank 0 writes files.
"""
from ppdet.utils.lazy import lazy_getattr

# the room's public names, imported on first use (the CLI's start-up stays lean)
_API = {
    "DEFAULT_RATIOS": "requests",
    "LatencyTableRequest": "requests",
    "PruneRequest": "requests",
    "PruneResult": "prune",
    "SensitivityRequest": "requests",
    "SensitivityResult": "sensitivity",
    "SlimRequest": "requests",
    "SlimResult": "slimming",
    "analyse_sensitivity": "sensitivity",
    "build_latency_table": "latency",
    "check_exported_latency": "latency",
    "choose_ratios": "prune",
    "from_args": "requests",
    "print_params": "sensitivity",
    "prune_and_finetune": "prune",
    "resume_finetune": "prune",
    "resume_folder": "prune",
    "slim_and_finetune": "slimming",
}

__getattr__ = lazy_getattr(__name__, _API)
