"""Build components named in a config.

``create(cfg, 'YOLOv3')`` looks ``YOLOv3`` up in the registries, takes its keyword
arguments from the config section of the same name, builds the sub-components the
class lists in ``__inject__`` (their names are given in that section, e.g.
``backbone: MobileNetV1``) and passes shared top-level keys such as ``num_classes``.
No global state: the config is always passed in.
"""
from ppdet.core import registry
from ppdet.core.config import ConfigError

__all__ = ["create", "lookup"]


def lookup(name):
    for reg_name in registry.__all__:
        reg = getattr(registry, reg_name)
        if isinstance(reg, registry.Registry) and name in reg:
            return reg
    known = sorted({n for r in registry.__all__
                    if isinstance(getattr(registry, r), registry.Registry)
                    for n in getattr(registry, r).names()})
    import difflib
    close = difflib.get_close_matches(str(name), known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"no component named '{name}'{hint}")


def create(cfg, name, **extra):
    """Instantiate component ``name`` from ``cfg`` (see module docstring)."""
    reg = lookup(name)
    cls = reg.get(name)
    kwargs = dict(cfg.get(name) or {})
    kwargs.pop("name", None)
    for key in getattr(cls, "__inject__", ()):
        value = kwargs.get(key)
        if isinstance(value, str):
            kwargs[key] = create(cfg, value)
        elif isinstance(value, dict) and "name" in value:
            sub = dict(value)
            kwargs[key] = create({**cfg, sub["name"]: {**(cfg.get(sub["name"]) or {}),
                                                        **sub}}, sub["name"])
    shared = {k: cfg[k] for k in registry.SHARED_KEYS if k in cfg}
    try:
        return reg.build(name, kwargs, shared=shared, **extra)
    except TypeError as e:
        raise ConfigError(str(e)) from e
