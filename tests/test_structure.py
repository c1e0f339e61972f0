"""The package's structure (issue 9): no import cycle, no module reaching into another module's
private names, and Qt only under ``_napari/_qt/``.

Every module of ``src/napari_kmeans`` is parsed with :mod:`ast` (nothing is imported), and every
import counts, at any depth: a function-local import is an import all the same.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "napari_kmeans"
ROOT = Path(__file__).resolve().parents[1] / "src" / PACKAGE

QT = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "superqt", "napari.qt")
QT_PREFIXES = (*(q + "." for q in QT), "matplotlib.backends.backend_qt")
QT_HOME = f"{PACKAGE}._napari._qt"

QT_ALLOWED: set[str] = set()  # every Qt import lives in _napari/_qt/
PRIVATE_ALLOWED: set[tuple[str, str, str]] = set()  # no module uses another's private names


def _modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the package (packages by their __init__)."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = (PACKAGE, *path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES.get(name, Path()).name == "__init__.py"


def _base(module: str, level: int) -> str:
    """The package a relative import of ``level`` dots starts from, inside ``module``."""
    parts = module.split(".")
    if not _is_package(module):
        parts = parts[:-1]
    return ".".join(parts[: len(parts) - (level - 1)] if level > 1 else parts)


def _is_type_checking(node) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _walk(tree: ast.AST):
    """Every node, at any depth, except under ``if TYPE_CHECKING:`` (never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if _is_type_checking(node):
            todo.extend(node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))


def _imports(module: str, tree: ast.AST):
    """``(target module, imported name or None, line)`` for every intra-package import that
    runs: at module level or inside a function, not under ``if TYPE_CHECKING:``."""
    for node in _walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _base(module, node.level)
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            if source != PACKAGE and not source.startswith(PACKAGE + "."):
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if sub in MODULES:  # from . import lazy: the module itself
                    yield sub, None, node.lineno
                else:
                    yield source, alias.name, node.lineno


def _trees():
    return {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in MODULES.items()}


TREES = _trees()


def _graph() -> dict[str, set[str]]:
    graph = {name: set() for name in MODULES}
    for name, tree in TREES.items():
        for target, _, _ in _imports(name, tree):
            if target in MODULES and target != name:
                graph[name].add(target)
    return graph


def _find_cycle(graph):
    """One cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_parser_sees_the_package():
    assert f"{PACKAGE}.segment" in MODULES and f"{PACKAGE}.lazy" in MODULES
    edges = _graph()
    assert f"{PACKAGE}.fitting" in edges[f"{PACKAGE}.segment"]
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    local = ast.parse("def f():\n    from .segment import segment\n")
    assert [t for t, _, _ in _imports(f"{PACKAGE}.lazy", local)] == [f"{PACKAGE}.segment"]
    typing_only = ast.parse("if TYPE_CHECKING:\n    from .segment import Segmentation\n")
    assert not list(_imports(f"{PACKAGE}.lazy", typing_only))


def test_no_import_cycle_counting_function_local_imports():
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_dask_module_imports_neither_segment_nor_model():
    """lazy.py composes the dask mechanics (blocks.py) with the fit (fitting.py)."""
    edges = _graph()[f"{PACKAGE}.lazy"]
    assert not edges & {f"{PACKAGE}.segment", f"{PACKAGE}.model"}, sorted(edges)


def _dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def _private(name: str) -> bool:
    return name.startswith("_") and not _dunder(name)


def _private_uses(module: str, tree: ast.AST):
    """``(source module, private name, line)``: imports of another module's underscore names,
    and ``alias._name`` on an imported package module (private submodules are allowed)."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom | ast.Import):
            for target, name, line in _imports(module, ast.Module([node], [])):
                if name is not None and _private(name) and target != module:
                    yield target, name, line
                if name is None and target in MODULES:
                    for alias in node.names:
                        bound = alias.asname or alias.name.split(".")[-1]
                        if isinstance(node, ast.Import) and alias.asname is None:
                            continue  # import napari_kmeans.x binds napari_kmeans: not used here
                        if target.endswith("." + alias.name.split(".")[-1]):
                            aliases[bound] = target
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and _private(node.attr)
            and f"{aliases[node.value.id]}.{node.attr}" not in MODULES
        ):
            yield aliases[node.value.id], node.attr, node.lineno


def test_no_module_uses_another_modules_private_names():
    found = []
    for name, tree in TREES.items():
        for source, private, line in _private_uses(name, tree):
            if (name, source, private) not in PRIVATE_ALLOWED:
                found.append(f"{MODULES[name].relative_to(ROOT.parent)}:{line}: {source}.{private}")
    assert not found, "private names used across modules:\n" + "\n".join(found)


def test_the_private_name_check_sees_both_forms():
    tree = ast.parse("from .segment import _fit_image\nfrom . import lazy\nlazy._stats(1)\n")
    uses = {(s, n) for s, n, _ in _private_uses(f"{PACKAGE}.cli", tree)}
    assert uses == {(f"{PACKAGE}.segment", "_fit_image"), (f"{PACKAGE}.lazy", "_stats")}
    tree = ast.parse("from ._version import __version__\nfrom . import _version\n")
    assert not list(_private_uses(f"{PACKAGE}.cli", tree))


def _qt_imports(tree: ast.AST):
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if (
                name.startswith(QT) and (name in QT or name.startswith(tuple(q + "." for q in QT)))
            ) or name.startswith("matplotlib.backends.backend_qt"):
                yield name, node.lineno


@pytest.mark.parametrize("name", sorted(MODULES))
def test_qt_is_imported_only_under_napari_qt(name):
    if name == QT_HOME or name.startswith(QT_HOME + ".") or name in QT_ALLOWED:
        return
    found = sorted({f"{imported} (line {line})" for imported, line in _qt_imports(TREES[name])})
    assert not found, f"{name} imports Qt outside _napari/_qt/: {', '.join(found)}"


def test_the_qt_check_sees_every_form():
    code = (
        "import qtpy\nfrom qtpy.QtWidgets import QWidget\nfrom magicgui import widgets\n"
        "from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg\n"
        "from napari.qt.threading import create_worker\nimport napari\nimport superqtx\n"
    )
    found = {name for name, _ in _qt_imports(ast.parse(code))}
    assert "qtpy" in found and "magicgui" in found and "napari.qt.threading" in found
    assert "matplotlib.backends.backend_qtagg" in found
    assert "napari" not in found and "superqtx" not in found
