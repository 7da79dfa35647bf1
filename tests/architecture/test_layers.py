"""The import graph of ``agent/``, ``collectors/`` and ``rules/`` points down and has no cycle.

The layer list below is the one ``docs/architecture.md`` shows. A module may import
from its own layer or a lower one; within a layer the imports must still form no
cycle. Imports under ``if TYPE_CHECKING:`` count like any other (a type that needs an
upward import means the type lives in the wrong place). Imports inside functions are
allowed only for the heavy optional dependencies listed in :data:`LOCAL_IMPORTS_ALLOWED`.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from tests.paths import ROOT

PACKAGES = ("agent", "collectors", "rules")

#: Lowest first; each entry is a module or a package (covering everything below it).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "foundation",
        (
            "agent",
            "agent.logs",
            "agent.metrics",
            "agent.readings",
            "agent.schemas",
            "agent.periods",
            "agent.patterns",
        ),
    ),
    ("config", ("agent.settings", "agent.site")),
    ("durable", ("agent.journal", "agent.plugins", "agent.keys", "agent.realtime", "agent.probe")),
    ("energy", ("agent.energy", "agent.store")),
    ("kpi", ("agent.kpi", "agent.green", "agent.importer")),
    ("rules", ("rules",)),
    ("aggregator", ("agent.aggregator",)),
    ("edges", ("agent.sinks", "agent.fleet", "collectors")),
    ("outputs", ("agent.report", "agent.pipeline")),
    ("api", ("agent.api",)),
    ("service", ("agent.service",)),
    ("demo", ("agent.demo",)),
    ("cli", ("agent.cli", "agent.__main__")),
]

#: Third-party modules a function may import lazily, and why (a top-level import would
#: load them into every agent process, or every CLI call, that never uses them).
LOCAL_IMPORTS_ALLOWED: dict[str, str] = {
    "weasyprint": "PDF rendering, only when a report is written",
    "matplotlib": "report charts, only when a report is written",
    "pysnmp": "SNMPv3 only (v2c has its own codec)",
    "pyasn1": "SNMPv3 only, with pysnmp",
    "influxdb_client": "InfluxDB 2.x API only (1.x uses plain HTTP)",
    "urllib3": "errors of influxdb_client, with it",
    "amqtt": "the demo's in-process MQTT broker only",
}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_module(name: str) -> bool:
    """``name`` is one of ours: a Python module, a package or a compiled extension."""
    if name in MODULES:
        return True
    *parent, last = name.split(".")
    folder = ROOT.joinpath(*parent)
    return folder.is_dir() and any(folder.glob(f"{last}.*")) and ".".join(parent) in MODULES


def _owner(name: str) -> str | None:
    """The module of ours that ``name`` (a module or a name inside one) belongs to."""
    while name:
        if name in MODULES:
            return name
        if _is_module(name):  # a compiled extension (agent.energy._kernel): a leaf module
            return name
        name = name.rsplit(".", 1)[0] if "." in name else ""
    return None


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """What an import statement imports, as dotted names (modules or module.attribute)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".")
        if MODULES[module].name != "__init__.py":
            package = package[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, *([node.module] if node.module else [])])
    out = []
    for alias in node.names:
        candidate = f"{base}.{alias.name}"
        out.append(candidate if _is_module(candidate) else base)
    return out


class _Imports(ast.NodeVisitor):
    def __init__(self, module: str) -> None:
        self.module = module
        self.depth = 0
        self.graph: set[str] = set()
        self.local: list[tuple[int, str]] = []

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function

    def _import(self, node: ast.Import | ast.ImportFrom) -> None:
        for target in _targets(self.module, node):
            owner = _owner(target)
            if self.depth:
                self.local.append((node.lineno, target))
            if owner is not None and owner != self.module:
                self.graph.add(owner)

    visit_Import = _import
    visit_ImportFrom = _import


def _scan() -> tuple[dict[str, set[str]], dict[str, list[tuple[int, str]]]]:
    graph: dict[str, set[str]] = {}
    local: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for module, path in MODULES.items():
        visitor = _Imports(module)
        visitor.visit(ast.parse(path.read_text(encoding="utf-8")))
        graph[module] = visitor.graph
        local[module] = visitor.local
    return graph, local


def _layer(module: str) -> int:
    best, rank = -1, -1
    for index, (_, members) in enumerate(LAYERS):
        for member in members:
            if (module == member or module.startswith(member + ".")) and len(member) > best:
                best, rank = len(member), index
    assert rank >= 0, f"{module} is in no layer: add it to LAYERS and docs/architecture.md"
    return rank


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


GRAPH, LOCAL = _scan()


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        _layer(module)


def test_imports_point_down() -> None:
    upward = [
        f"{module} ({LAYERS[_layer(module)][0]}) imports {target} ({LAYERS[_layer(target)][0]})"
        for module, targets in sorted(GRAPH.items())
        for target in sorted(targets)
        if _layer(target) > _layer(module)
    ]
    assert upward == []


def test_no_import_cycle() -> None:
    assert _cycles(GRAPH) == []


def test_function_local_imports_only_for_heavy_optional_dependencies() -> None:
    offending = [
        f"{MODULES[module].relative_to(ROOT)}:{line} imports {target}"
        for module, imports in sorted(LOCAL.items())
        for line, target in imports
        if target.split(".")[0] not in LOCAL_IMPORTS_ALLOWED
    ]
    assert offending == []


def test_the_checker_sees_a_cycle_and_an_upward_import() -> None:
    # The checks above could pass by seeing nothing: show they catch what they forbid.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _layer("agent.store") < _layer("agent.aggregator.consumer") < _layer("agent.cli.kpi")
    assert "agent.store" in GRAPH["agent.aggregator.consumer"]
    assert "agent.energy._kernel" in GRAPH["agent.energy.kernel"]


def test_docs_show_the_same_layers() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    for name, members in LAYERS:
        assert name in text, f"layer {name} missing from docs/architecture.md"
        for member in members:
            assert member in text, f"{member} missing from docs/architecture.md"
