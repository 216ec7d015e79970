"""Which parameters a user may prune, and turning user input into parameter names.

Names are ``param.name`` (the static-era names the seeds print). Which convs can be named is
read from the pruning graph (:class:`ppdet.slim.graph.PruneGraph`): a conv is prunable when
its filters lead a group of their own; depthwise convs follow the conv feeding them, convs
tied by a shortcut add follow their group's first conv, prediction convs are the detector's
outputs.
"""
import difflib
import fnmatch
import re
from dataclasses import dataclass

from ppdet.core.errors import UserError
from ppdet.slim.prune.graph import PruneGraph

__all__ = ["ConvInfo", "conv_table", "select_params", "select_groups", "format_params",
           "paddledet_aliases",
           "parse_ratios"]


@dataclass
class ConvInfo:
    name: str
    shape: list
    prunable: bool
    reason: str = ""          # why not, when not prunable
    follows: str = ""         # the conv to name instead (depthwise, shortcut-tied convs)
    tied: tuple = ()          # for a shortcut group's first conv: the convs pruned with it
    alias: str = ""           # PaddleDetection 2.x's automatic name (``conv2d_52.w_0``)


def conv_table(model):
    """Every conv weight in network (definition) order, with whether it can be pruned."""
    graph = PruneGraph.of(model)
    aliases = paddledet_aliases(model)
    table = []
    for e in graph.convs:
        prunable = e.role == "master" and not e.reason
        follows = graph.group(e.group).name if e.group and e.role != "master" else ""
        tied = tuple(graph.group(e.group).names[1:]) if e.role == "master" else ()
        table.append(ConvInfo(e.name, list(e.shape), prunable, e.reason, follows, tied,
                              aliases.get(e.name, "")))
    return table


def paddledet_aliases(model):
    """``{conv weight name: PaddleDetection 2.x automatic name}`` for YOLOv3 models whose
    backbone knows PaddleDetection's creation order (``paddledet_conv_order``): 2.x names
    its convs ``conv2d_{n}.w_0`` in creation order, backbone first, then the neck's detection
    blocks and transitions level by level, then the three output convs (its prune configs
    name them so: ``conv2d_52.w_0`` .. ``conv2d_71.w_0`` are YOLOv3-DarkNet53's head)."""
    backbone, head = getattr(model, "backbone", None), getattr(model, "yolo_head", None)
    order_of = getattr(backbone, "paddledet_conv_order", None)
    if order_of is None or head is None:
        return {}
    order = list(order_of())
    for i, block in enumerate(head.blocks):
        order += [c.conv.weight.name for c in list(block.convs) + [block.tip]]
        if i < len(head.transitions):
            order.append(head.transitions[i].conv.weight.name)
    order += [o.weight.name for o in head.outputs]
    return {name: f"conv2d_{n}.w_0" for n, name in enumerate(order)}


def format_params(model):
    """Every parameter in network order with its shape; convs marked prunable or why not."""
    info = {c.name: c for c in conv_table(model)}
    width = max(len(p.name) for p in model.parameters())
    awidth = max([len(c.alias) for c in info.values()] + [0])
    lines = []
    for p in model.parameters():
        c = info.get(p.name)
        mark = "" if c is None else _mark(c)
        alias = f"{c.alias if c is not None else '':<{awidth}}  " if awidth else ""
        lines.append(f"{p.name:<{width}}  {alias}{str(list(p.shape)):<22} {mark}".rstrip())
    n = sum(c.prunable for c in info.values())
    lines.append(f"# {len(lines)} parameters, {len(info)} convs, {n} prunable")
    return "\n".join(lines)


def _mark(c):
    if not c.prunable:
        return f"not prunable: {c.reason}"
    if c.tied:
        return (f"prunable, shortcut group: pruned together with {', '.join(c.tied)} "
                f"(they add into one tensor)")
    return "prunable"


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
    by_alias = {c.alias: c.name for c in table if c.alias}
    for token in tokens:
        if token in info or (token in all_params and not _is_pattern(token)):
            matched = [token]
        elif token in by_alias:
            matched = [by_alias[token]]
        elif _is_pattern(token):
            if any(ch in token for ch in "|()^$+\\") or ".w_" in token:
                try:
                    rx = re.compile(token)
                except re.error as e:
                    raise UserError(f"--pruned_params: bad regex '{token}': {e}") from e
                matched = [c.name for c in table
                           if rx.fullmatch(c.name) or (c.alias and rx.fullmatch(c.alias))]
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
