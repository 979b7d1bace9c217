"""The layout, read from the source's AST: no import cycle, no private name across modules.

Every import counts, the ones inside functions too (a lazy import hides a cycle, it does not
remove it). Importing ``jaxmlp.a.b`` from outside the package ``jaxmlp.a`` also runs
``jaxmlp/a/__init__.py``, so that edge is drawn as well. ``jaxmlp/__init__.py``, the face
that re-exports what users call, is left out: every module sits below it.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "jaxmlp"
#: The subpackages and the ones each may import (docs/architecture.md draws the same).
ALLOWED = {
    "nn": set(),
    "quantities": {"nn"},
    "privacy": {"nn", "quantities"},
    "oracle": {"nn", "quantities"},
    "parallel": {"nn"},
    "train": {"nn", "quantities", "privacy", "parallel", "laplace"},
    "data": {"nn", "train", "laplace"},
    "forward_reverse_modes": set(),
    "sklearn": {"nn", "train", "privacy", "laplace"},
    "laplace": {"nn", "quantities"},
}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in PKG.rglob("*.py")}


def is_package(name: str) -> bool:
    return (ROOT / Path(*name.split(".")) / "__init__.py").exists()


def imports(name: str) -> list[tuple[str, list[str], int]]:
    """(imported jaxmlp module, names taken from it, line) for every import in ``name``."""
    tree = ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "jaxmlp":
                    out.append((a.name, [], node.lineno))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "jaxmlp":
                continue
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                if sub in MODULES:  # `from jaxmlp.nn import recurrences`: a submodule
                    out.append((sub, [], node.lineno))
                else:
                    out.append((node.module, [a.name], node.lineno))
    return out


def edges(name: str) -> set[str]:
    targets = set()
    own_package = name if is_package(name) else name.rpartition(".")[0]
    for target, _, _ in imports(name):
        if target not in MODULES or target == "jaxmlp":
            continue
        targets.add(target)
        # the packages on the way down run their __init__ unless we are inside them already
        parts = target.split(".")
        for k in range(2, len(parts)):
            pkg = ".".join(parts[:k])
            if not (own_package == pkg or own_package.startswith(pkg + ".")):
                targets.add(pkg)
    targets.discard(name)
    return targets


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
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

    for v in graph:
        if v not in index:
            visit(v)
    return out


GRAPH = {m: edges(m) for m in MODULES if m != "jaxmlp"}


def test_the_graph_is_read():
    # the reader sees real arrows (a test that found no import would pass vacuously)
    assert "jaxmlp.nn.recurrences" in GRAPH["jaxmlp.nn.propagation"]
    assert "jaxmlp.quantities" in GRAPH["jaxmlp.train.step"]  # via the package's __init__
    assert len(GRAPH) >= 30


def test_no_import_cycle_among_modules():
    found = cycles(GRAPH)
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def common_graph() -> dict[str, set[str]]:
    """The imports among the scripts' shared modules, experiments/_common/ (``from _common
    import x``, ``from _common.x import y``, ``import _common.x``), lazy ones included."""
    folder = ROOT / "experiments" / "_common"
    names = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"}
    graph = {}
    for name in names:
        out = set()
        for node in ast.walk(ast.parse((folder / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "_common":
                out |= {a.name for a in node.names if a.name in names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("_common."):
                out.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                out |= {a.name.split(".")[1] for a in node.names
                        if a.name.startswith("_common.")}
        graph[name] = out - {name}
    return graph


def test_no_import_cycle_among_the_scripts_shared_modules():
    graph = common_graph()
    assert "errors" in graph["cli"] and "errors" in graph["output"]  # the reader sees arrows
    found = cycles(graph)
    assert not found, "import cycles in experiments/_common: " + "; ".join(
        " <-> ".join(c) for c in found)


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def subpackage(module: str) -> str:
    return module.split(".")[1]


def test_subpackages_import_only_the_ones_below_them():
    wrong = []
    for m, targets in GRAPH.items():
        for t in targets:
            a, b = subpackage(m), subpackage(t)
            if a != b and b not in ALLOWED[a]:
                wrong.append(f"{m} -> {t}")
    assert not wrong, "imports across the layout's floors: " + ", ".join(sorted(wrong))
    assert set(ALLOWED) == {subpackage(m) for m in GRAPH}, "a subpackage missing from ALLOWED"


def private_uses(modules: dict) -> list[str]:
    """Every ``from jaxmlp.x import _name`` and ``x._name`` (x a jaxmlp module) in ``modules``."""
    bad = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                    and node.module.split(".")[0] == "jaxmlp":
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        bad.append(f"{name}:{node.lineno} imports {node.module}.{a.name}")
                    if f"{node.module}.{a.name}" in MODULES:
                        aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == "jaxmlp" and a.asname:
                        aliases[a.asname] = a.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                bad.append(f"{name}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    return bad


def test_no_module_uses_another_modules_private_name():
    bad = private_uses(MODULES)
    assert not bad, "private names used across modules: " + "; ".join(bad)


@pytest.mark.parametrize("code, expected", [
    ("from jaxmlp.nn.checks import _is_typed_key\n", "probe:1 imports jaxmlp.nn.checks._is_typed_key"),
    ("from jaxmlp.nn import checks\nchecks._is_typed_key(1)\n",
     "probe:2 uses jaxmlp.nn.checks._is_typed_key"),
    ("from jaxmlp.nn import checks\nchecks.prng_key(1)\n", None),
])
def test_the_private_name_check_catches_both_forms(tmp_path, code, expected):
    f = tmp_path / "probe.py"
    f.write_text(code)
    assert private_uses({"probe": f}) == ([] if expected is None else [expected])


@pytest.mark.parametrize("path, limit", [("experiments/train.py", 400), ("README.md", 300)])
def test_the_cli_script_and_the_readme_stay_short(path, limit):
    """train.py is parse -> config -> fit -> report; the README is a page, the rest is docs/."""
    lines = (ROOT / path).read_text().count("\n")
    assert lines <= limit, f"{path}: {lines} lines, more than {limit}; move code or text out"


def test_the_top_level_is_the_public_surface_on_one_screen():
    import jaxmlp

    doc = jaxmlp.__doc__
    assert doc.count("\n") <= 40
    for name in jaxmlp.__all__:
        assert name in doc, f"jaxmlp.{name} is public but the package docstring does not list it"
    assert callable(jaxmlp.fit) and jaxmlp.fit.__module__ == "jaxmlp.train.loop"
    with pytest.raises(AttributeError, match="jaxmlp.train.make_train_epoch"):
        jaxmlp.make_train_epoch
