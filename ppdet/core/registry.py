"""Registries: one per kind of component, built from config sections by name.

A config section names a class (``backbone: MobileNetV1``) and a mapping of the same
name holds its keyword arguments (``MobileNetV1: {scale: 0.25}``). Shared keys such
as ``num_classes`` are passed to every component whose ``__init__`` accepts them, so
they are written once in a config.
"""
import difflib
import inspect

__all__ = ["Registry", "BACKBONES", "NECKS", "HEADS", "LOSSES", "POST_PROCESS",
           "ARCHITECTURES", "DATASETS", "TRANSFORMS", "OPTIMIZERS", "LR_SCHEDULES",
           "METRICS", "SHARED_KEYS"]

# Top-level config keys injected into any component that declares them.
SHARED_KEYS = ("num_classes",)


class Registry:
    """Maps a name to a class or factory of one kind (backbone, head, ...)."""

    def __init__(self, kind):
        self.kind = kind
        self._items = {}

    def register(self, obj=None, *, name=None):
        def _add(o):
            key = name or o.__name__
            if key in self._items and self._items[key] is not o:
                raise KeyError(f"{self.kind} '{key}' is registered twice")
            self._items[key] = o
            return o
        return _add(obj) if obj is not None else _add

    def get(self, name):
        if name not in self._items:
            close = difflib.get_close_matches(str(name), list(self._items), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else \
                f"; known: {', '.join(sorted(self._items))}"
            raise KeyError(f"unknown {self.kind} '{name}'{hint}")
        return self._items[name]

    def __contains__(self, name):
        return name in self._items

    def names(self):
        return sorted(self._items)

    def build(self, name, kwargs=None, shared=None, **extra):
        """Instantiate ``name`` with ``kwargs``; unknown kwargs are an error naming them."""
        cls = self.get(name)
        kwargs = dict(kwargs or {})
        kwargs.update(extra)
        params = _accepted_params(cls)
        if params is not None:
            for key, value in (shared or {}).items():
                if key in params and key not in kwargs:
                    kwargs[key] = value
            unknown = [k for k in kwargs if k not in params]
            if unknown:
                k = unknown[0]
                close = difflib.get_close_matches(k, sorted(params), n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else \
                    f"; valid: {', '.join(sorted(params))}"
                raise TypeError(f"{self.kind} {name} has no option '{k}'{hint}")
        return cls(**kwargs)


def _accepted_params(cls):
    """Names ``cls`` accepts as keywords, or None when it takes **kwargs."""
    target = cls.__init__ if inspect.isclass(cls) else cls
    sig = inspect.signature(target)
    names = set()
    for p in sig.parameters.values():
        if p.kind == p.VAR_KEYWORD:
            return None
        if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            names.add(p.name)
    return names


ARCHITECTURES = Registry("architecture")
BACKBONES = Registry("backbone")
NECKS = Registry("neck")
HEADS = Registry("head")
LOSSES = Registry("loss")
POST_PROCESS = Registry("post-process")
DATASETS = Registry("dataset")
TRANSFORMS = Registry("transform")
OPTIMIZERS = Registry("optimizer")
LR_SCHEDULES = Registry("lr schedule")
METRICS = Registry("metric")
