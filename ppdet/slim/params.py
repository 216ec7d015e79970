"""Which parameters a user may prune, and turning user input into parameter names.

Names are ``param.name`` (the static-era names the seeds print). A conv is prunable
(its output filters can be removed) unless it is depthwise (its channels follow the
conv feeding it) or a prediction conv (its channels are the detector's outputs).
"""
import difflib
import fnmatch
import re
from dataclasses import dataclass

import paddle

from ppdet.utils.cli import UserError

__all__ = ["ConvInfo", "conv_table", "select_params", "select_groups", "format_params",
           "parse_ratios"]


@dataclass
class ConvInfo:
    name: str
    shape: list
    prunable: bool
    reason: str = ""          # why not, when not prunable
    follows: str = ""         # for depthwise convs: the conv whose channels they follow


def _prediction_convs(model):
    """Convs whose outputs are predictions: the head's output layers."""
    head = getattr(model, "yolo_head", None) or getattr(model, "ssd_head", None)
    names = set()
    for attr in ("outputs", "loc_convs", "conf_convs"):
        for layer in getattr(head, attr, []) if head is not None else []:
            names.add(layer.weight.name)
    return names


def conv_table(model):
    """Every conv weight in network (definition) order, with whether it can be pruned."""
    outputs = _prediction_convs(model)
    table, last_regular = [], ""
    for layer in model.sublayers():
        if not isinstance(layer, paddle.nn.Conv2D):
            continue
        w = layer.weight
        depthwise = layer._groups > 1 and w.shape[1] == 1
        if depthwise:
            table.append(ConvInfo(w.name, list(w.shape), False,
                                  f"depthwise: pruned with {last_regular or 'its input'}",
                                  follows=last_regular))
            continue
        if w.name in outputs:
            table.append(ConvInfo(w.name, list(w.shape), False,
                                  "prediction conv: its channels are the detector's outputs"))
        else:
            table.append(ConvInfo(w.name, list(w.shape), True))
        last_regular = w.name
    return table



def format_params(model):
    """Every parameter in network order with its shape; convs marked prunable or why not."""
    info = {c.name: c for c in conv_table(model)}
    width = max(len(p.name) for p in model.parameters())
    lines = []
    for p in model.parameters():
        c = info.get(p.name)
        mark = "" if c is None else ("prunable" if c.prunable else f"not prunable: {c.reason}")
        lines.append(f"{p.name:<{width}}  {str(list(p.shape)):<22} {mark}".rstrip())
    n = sum(c.prunable for c in info.values())
    lines.append(f"# {len(lines)} parameters, {len(info)} convs, {n} prunable")
    return "\n".join(lines)


def _is_pattern(token):
    return any(ch in token for ch in "*?[]|()^$+\\")


def select_groups(model, spec, allow_unprunable=False):
    """Comma-separated names, shell globs or regexes -> ``[(token, [conv names])]`` in the
    order typed, each token's convs in network order. Bad input raises UserError naming
    the problem and the fix."""
    table = conv_table(model)
    info = {c.name: c for c in table}
    order = {c.name: i for i, c in enumerate(table)}
    all_params = [p.name for p in model.parameters()]
    tokens = [t.strip() for t in str(spec).split(",") if t.strip()] if spec else []
    if not tokens:
        raise UserError("no parameters named: pass --pruned_params NAME[,NAME...] or a regex "
                        "(see --print_params)")
    groups = []
    for token in tokens:
        if token in info or (token in all_params and not _is_pattern(token)):
            matched = [token]
        elif _is_pattern(token):
            if any(ch in token for ch in "|()^$+\\") or ".w_" in token:
                try:
                    rx = re.compile(token)
                except re.error as e:
                    raise UserError(f"--pruned_params: bad regex '{token}': {e}") from e
                matched = [c.name for c in table if rx.fullmatch(c.name)]
            else:
                matched = [c.name for c in table if fnmatch.fnmatchcase(c.name, token)]
            if not allow_unprunable:
                matched = [m for m in matched if info[m].prunable] or matched
            if not matched:
                raise UserError(f"--pruned_params: '{token}' matches no conv weight; "
                                f"list them with --print_params")
        else:
            close = difflib.get_close_matches(token, all_params, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else \
                "; list the names with --print_params"
            raise UserError(f"unknown parameter '{token}'{hint}")
        for name in matched:
            c = info.get(name)
            if c is None:
                raise UserError(f"'{name}' is not a conv weight; prunable convs are listed "
                                f"by --print_params")
            if not c.prunable and not allow_unprunable:
                fix = f": name {c.follows} instead" if c.follows else ""
                raise UserError(f"'{name}' cannot be pruned ({c.reason.split(':')[0]}){fix}")
        groups.append((token, sorted(set(matched), key=order.__getitem__)))
    return groups


def select_params(model, spec, allow_unprunable=False):
    """Comma-separated names, shell globs or regexes -> prunable conv names, in network
    order, each once. Bad input raises UserError naming the problem and the fix."""
    order = {c.name: i for i, c in enumerate(conv_table(model))}
    chosen = {n for _, names in select_groups(model, spec, allow_unprunable) for n in names}
    return sorted(chosen, key=order.__getitem__)


def parse_ratios(text, sep=None):
    """"0.1 0.2" or "0.1,0.2" -> [0.1, 0.2]; each must lie in (0, 1)."""
    parts = [t for t in re.split(r"[,\s]+" if sep is None else sep, str(text).strip()) if t]
    try:
        ratios = [float(t) for t in parts]
    except ValueError as e:
        raise UserError(f"pruned ratios must be numbers, got '{text}'") from e
    if not ratios:
        raise UserError("no pruned ratios given, e.g. --pruned_ratios \"0.1 0.2 0.3\"")
    bad = [r for r in ratios if not 0.0 < r < 1.0]
    if bad:
        raise UserError(f"pruned ratio {bad[0]} is outside (0, 1): a ratio is the share of "
                        f"filters removed, e.g. 0.3")
    return ratios
