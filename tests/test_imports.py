"""No module of ppdet imports a module that imports it back (directly or through others).

Imports are read from the source (module level and inside functions alike): a lazy import
hides a circle from Python, not from the design.
"""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _modules():
    out = {}
    for dirpath, _, files in os.walk(os.path.join(ROOT, "ppdet")):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                out[name[:-len(".__init__")] if name.endswith(".__init__") else name] = path
    return out


def import_graph():
    """``{module: {ppdet modules it imports}}``; ``from pkg import mod`` counts as ``pkg.mod``
    and ``pkg`` (a package's ``__init__`` runs), and a package's own imports are its own."""
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        with open(path) as f:
            tree = ast.parse(f.read())
        package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base
                                                                              else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                if t in mods and t != name:
                    deps.add(t)
        graph[name] = deps
    return graph


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _without_packages(graph):
    """Edges into a package's ``__init__`` from its own submodules are how packages work
    (``ppdet.modeling`` imports its parts to register them): drop child -> parent edges."""
    return {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}


def test_no_import_circles():
    found = cycles(_without_packages(import_graph()))
    assert found == [], "import circles: " + "; ".join(" <-> ".join(c) for c in found)


# ppdet/slim's rooms, bottom up: a room may import rooms of lower levels only (and its own
# modules); rooms of one level never import each other. Only pipelines runs the training loop.
SLIM_LEVELS = [("compat", "plots"), ("prune",), ("sensitivity", "latency", "slimming", "quant"),
               ("report",), ("pipelines",)]


def _room(module):
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["ppdet", "slim"] else None


def test_slim_rooms_import_only_downward():
    level = {room: i for i, rooms in enumerate(SLIM_LEVELS) for room in rooms}
    graph = import_graph()
    rooms = {_room(m) for m in graph if _room(m)}
    assert rooms <= set(level), f"rooms without a level: {sorted(rooms - set(level))}"
    wrong = []
    for mod, deps in graph.items():
        src = _room(mod)
        if src is None:
            continue
        for dep in deps:
            dst = _room(dep)
            if dst is not None and dst != src and level[dst] >= level[src]:
                wrong.append(f"{mod} -> {dep}")
            if dep == "ppdet.engine.trainer" and src != "pipelines":
                wrong.append(f"{mod} -> {dep} (only pipelines trains)")
            if src == "prune" and dep.startswith("ppdet.engine"):
                wrong.append(f"{mod} -> {dep} (the pruning core needs no engine)")
    assert wrong == [], "imports against the rooms' order: " + "; ".join(sorted(wrong))


def test_every_slim_room_imports_alone():
    """``python -c "import ppdet.slim.<room>"`` works for each room (a fresh process each,
    so no room leans on another having been imported first), and its docstring says what
    it owns."""
    import subprocess
    import sys
    names = sorted({_room(m) for m in import_graph() if _room(m)})
    code = "; ".join(f"import ppdet.slim.{n} as m{i}; assert len(m{i}.__doc__ or '') > 80"
                     for i, n in enumerate(names))
    for n in names:
        r = subprocess.run([sys.executable, "-c", f"import ppdet.slim.{n}"], cwd=ROOT,
                           capture_output=True, text=True)
        assert r.returncode == 0, f"import ppdet.slim.{n}: {r.stderr[-800:]}"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-800:]


def test_every_public_name_of_a_room_resolves():
    """A room's lazy API (``ppdet.slim.latency.build_table``) names only what its modules
    define, and every name its modules list in ``__all__`` is in it."""
    import importlib
    import pkgutil
    for room in sorted({_room(m) for m in import_graph() if _room(m)}):
        pkg = importlib.import_module(f"ppdet.slim.{room}")
        api = getattr(pkg, "_API", None)
        if api is None:
            continue
        for name in api:
            assert getattr(pkg, name) is not None, f"ppdet.slim.{room}.{name}"
        for info in pkgutil.iter_modules(pkg.__path__):
            mod = importlib.import_module(f"ppdet.slim.{room}.{info.name}")
            missing = [n for n in getattr(mod, "__all__", ()) if n not in api]
            assert not missing, f"ppdet.slim.{room}: {missing} not in its _API"


if __name__ == "__main__":
    for c in cycles(_without_packages(import_graph())):
        print(" <-> ".join(c))
