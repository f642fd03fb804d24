"""The import rules of ARCHITECTURE.md, checked against every import in ``bot/`` and
``handlers/`` (read with ``ast``; imports inside functions count, ``if TYPE_CHECKING:``
blocks do not): no cycles, no import of a higher layer, and the "imported only by" rules."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bot", "handlers")


def module_files() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else ""
            if name == "TYPE_CHECKING":
                for child in node.body:
                    skipped.update(id(n) for n in ast.walk(child))
    return skipped


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``module`` imports (a name imported from a package counts as the
    submodule when there is one, else as the package)."""

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    tree = ast.parse(path.read_text(), filename=str(path))
    skipped = _type_checking_nodes(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(r for a in node.names if (r := resolve(a.name)))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                target = f"{base}.{alias.name}"
                r = target if target in known else resolve(base)
                if r:
                    found.add(r)
    found.discard(module)
    return found


@cache
def graph() -> dict[str, frozenset[str]]:
    files = module_files()
    known = set(files)
    return {m: frozenset(imports_of(m, p, known)) for m, p in files.items()}


def _rows(marker: str) -> list[list[str]]:
    text = (ROOT / "ARCHITECTURE.md").read_text()
    block = re.search(rf"<!-- {marker}:.*?-->(.*?)<!-- /{marker} -->", text, re.S)
    assert block, f"ARCHITECTURE.md has no {marker} table"
    rows = []
    for line in block.group(1).strip().splitlines()[2:]:  # past the header and its rule
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows.append(cells)
    return rows


def _names(cell: str) -> list[str]:
    return re.findall(r"`([\w.]+)`", cell)


@cache
def layers() -> list[tuple[str, list[str]]]:
    return [(row[0], _names(row[1])) for row in _rows("layers")]


def _matches(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_of(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (prefix length, layer index): the longest prefix wins
    for index, (_, prefixes) in enumerate(layers()):
        for prefix in prefixes:
            if _matches(module, prefix) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    return None if best is None else best[1]


def test_the_table_names_layers_top_to_bottom_and_real_modules() -> None:
    assert [name.split(".")[0] for name, _ in layers()] == [str(i) for i in range(1, len(layers()) + 1)]
    modules = set(graph())
    for _, prefixes in layers():
        for prefix in prefixes:
            assert any(_matches(m, prefix) for m in modules), f"ARCHITECTURE.md names {prefix}, which does not exist"


def test_every_module_has_a_layer() -> None:
    missing = sorted(m for m in graph() if m not in PACKAGES and layer_of(m) is None)
    assert not missing, f"modules without a row in ARCHITECTURE.md's layer table: {missing}"


def test_no_module_imports_a_higher_layer() -> None:
    upward = []
    for module, imported in graph().items():
        mine = layer_of(module)
        if mine is None:
            continue
        for target in imported:
            theirs = layer_of(target)
            if theirs is not None and theirs < mine:
                upward.append(f"{module} ({layers()[mine][0]}) imports {target} ({layers()[theirs][0]})")
    assert not upward, "\n".join(sorted(upward))


def test_only_imported_by() -> None:
    wrong = []
    for row in _rows("only-imported-by"):
        (target,), allowed = _names(row[0]), _names(row[1])
        for module, imported in graph().items():
            if any(_matches(t, target) for t in imported) and not any(_matches(module, a) for a in allowed):
                wrong.append(f"{module} imports {target}")
    assert not wrong, "\n".join(sorted(wrong))


def strongly_connected(edges: dict[str, frozenset[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the components with more than one module (the cycles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycles() -> None:
    assert strongly_connected(graph()) == []


def test_the_checker_sees_cycles_lazy_imports_and_skips_type_checking(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("def f():\n    import b\n")
    (tmp_path / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import c\nimport a\n")
    (tmp_path / "c.py").write_text("import b\n")
    known = {"a", "b", "c"}
    edges = {m: frozenset(imports_of(m, tmp_path / f"{m}.py", known)) for m in known}
    assert edges == {"a": {"b"}, "b": {"a"}, "c": {"b"}}
    assert strongly_connected(edges) == [["a", "b"]]
