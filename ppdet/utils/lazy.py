"""A package's public names, imported on first use (PEP 562), so that importing one room
of ``ppdet.slim`` for a command-line tool does not import all of it."""
import importlib

__all__ = ["lazy_getattr"]


def lazy_getattr(package, api):
    """A module ``__getattr__`` for ``package``: ``api`` maps a public name to the submodule
    that defines it; any other name is tried as a submodule (``room.store``)."""
    def __getattr__(name):
        if name in api:
            return getattr(importlib.import_module(f"{package}.{api[name]}"), name)
        try:
            return importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
    return __getattr__
