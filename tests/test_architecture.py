"""The shape of the code (ARCHITECTURE.md), checked on the source of every module of the three
rooms by an AST walk: every import counts, those inside functions included.

- `catalog/` imports neither `transforms` nor `flows`.
- `transforms/` imports no `flows`, no orchestration (Prefect, Dask), no terminal (typer, rich)
  and no I/O client (httpx, smtplib, requests).
- Plain `flows` modules — the stages (`flows/stages/`) and the notification senders
  (`flows/notify/`) — import no Prefect, Dask, typer or rich, and no orchestration module.
- Arrows run one way, CLI → orchestration → stages → transforms → catalog: no module outside
  `flows/cli/` imports the CLI, and no two modules import each other, directly or around a circle.
- A source file has at most 400 lines (catalog/schemas.py, the table declarations, excepted); a
  function at most 60.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROOMS = ("catalog", "transforms", "flows")
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60
FILE_EXEMPT = {
    "catalog/schemas.py",  # declarations of every table: one schema per table, no logic
    "catalog/config.py",   # the declarative catalogue models (pydantic), no loader
}

ORCHESTRATION_LIBS = {"prefect", "prefect_dask", "dask", "distributed"}
TERMINAL_LIBS = {"typer", "rich", "click"}
IO_CLIENTS = {"httpx", "smtplib", "requests"}
PLAIN_FLOWS = ("flows.stages", "flows.notify")  # besides the package itself (environment settings only)

# Offenders outside flows/, each with who shrinks it; the lead removes entries as branches merge.
FILE_ALLOWED = {
    "transforms/pricing/invoice.py": "being rewritten as a pipeline of steps (the invoice engine engineer)",
}
FUNCTION_ALLOWED = {
    "transforms/pricing/invoice.py": "being rewritten (the invoice engine engineer)",
}

CYCLES_ALLOWED: dict[tuple[str, ...], str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for room in ROOMS for p in sorted((ROOT / room).rglob("*.py"))}


SOURCES = _sources()
TREES = {name: ast.parse(path.read_text(encoding="utf-8"), str(path)) for name, path in SOURCES.items()}


def _imports(name: str) -> set[str]:
    """Every module `name` imports, anywhere in its source: a project module where the import
    names one (`from flows.stages import bill` is flows.stages.bill), else the dotted name."""
    is_pkg = SOURCES[name].name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(TREES[name]):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[:len(pkg) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            if base == "__future__":
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.add(sub if sub in SOURCES else base)
    return out


IMPORTS = {name: _imports(name) for name in SOURCES}


def _top(module: str) -> str:
    return module.split(".")[0]


def _within(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _violations(modules, forbidden) -> list[str]:
    return sorted(f"{m} imports {i}" for m in modules for i in IMPORTS[m] if forbidden(i))


def test_catalog_imports_neither_transforms_nor_flows():
    assert _violations([m for m in SOURCES if _top(m) == "catalog"],
                       lambda i: _top(i) in ("transforms", "flows")) == []


def test_transforms_import_no_flows_orchestration_terminal_or_io_client():
    banned = {"flows"} | ORCHESTRATION_LIBS | TERMINAL_LIBS | IO_CLIENTS
    assert _violations([m for m in SOURCES if _top(m) == "transforms"], lambda i: _top(i) in banned) == []


def test_stages_import_no_prefect_dask_terminal_or_orchestration_module():
    plain = [m for m in SOURCES if _within(m, PLAIN_FLOWS)]
    assert "flows.stages.ingest" in plain and "flows.stages.bill" in plain

    def orchestration(i: str) -> bool:
        return (_top(i) in ORCHESTRATION_LIBS | TERMINAL_LIBS
                or (_top(i) == "flows" and i != "flows" and not _within(i, PLAIN_FLOWS)))

    assert _violations(plain, orchestration) == []


def test_only_the_cli_imports_the_cli():
    outside = [m for m in SOURCES if not _within(m, ("flows.cli",))]
    assert _violations(outside, lambda i: _within(i, ("flows.cli",))) == []


def _cycles() -> list[list[str]]:
    """The import circles among the project's modules: each strongly connected component of more
    than one module (or a module importing itself), as a sorted list (Tarjan's algorithm)."""
    graph = {m: sorted(i for i in IMPORTS[m] if i in SOURCES) for m in SOURCES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                found.append(sorted(comp))

    for m in sorted(graph):
        if m not in index:
            visit(m)
    return sorted(found)


def test_no_import_circles():
    cycles = _cycles()
    assert [c for c in cycles if tuple(c) not in CYCLES_ALLOWED] == []
    assert [c for c in CYCLES_ALLOWED if list(c) not in cycles] == []  # an untangled circle leaves the list


def test_the_cycle_finder_reports_a_circle():
    """The check above can fail: two modules importing each other (inside a function) are found."""
    saved = dict(IMPORTS)
    try:
        IMPORTS["flows.stages.bill"] = saved["flows.stages.bill"] | {"flows.stages.meter"}
        IMPORTS["flows.stages.meter"] = saved["flows.stages.meter"] | {"flows.stages.bill"}
        assert ["flows.stages.bill", "flows.stages.meter"] in _cycles()
    finally:
        IMPORTS.clear()
        IMPORTS.update(saved)


def _rel(name: str) -> str:
    return SOURCES[name].relative_to(ROOT).as_posix()


def test_no_source_file_over_400_lines():
    long = {_rel(m): n for m in SOURCES
            if (n := len(SOURCES[m].read_text(encoding="utf-8").splitlines())) > MAX_FILE_LINES}
    offenders = sorted(f"{p}: {n} lines" for p, n in long.items() if p not in FILE_EXEMPT | set(FILE_ALLOWED))
    assert offenders == []
    assert sorted(p for p in FILE_ALLOWED if p not in long) == []  # a file that shrank leaves the list


def _long_functions() -> dict[str, int]:
    out = {}
    for m, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    out[f"{_rel(m)}:{node.name}"] = n
    return out


def test_no_function_over_60_lines():
    long = _long_functions()
    offenders = sorted(f"{k}: {n} lines" for k, n in long.items()
                       if k not in FUNCTION_ALLOWED and k.split(":")[0] not in FUNCTION_ALLOWED)
    assert offenders == []
    stale = [k for k in FUNCTION_ALLOWED
             if not any(f == k or f.split(":")[0] == k for f in long)]
    assert stale == []  # a function that shrank leaves the list


def test_the_entry_point_is_flows_cli_main():
    import tomllib

    from flows.cli import main

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert scripts == {"meterbill": "flows.cli:main"} and callable(main)
